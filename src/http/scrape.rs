//! `GET|HEAD /metrics` on the metrics listener: the server's metrics in the Prometheus text format.
//! Only the metrics listener routes here; the public listeners do not know this path.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use super::{App, HttpError, ResponseBody};
use crate::metrics::CONTENT_TYPE;

pub(super) fn metrics<B>(app: &App, req: &Request<B>) -> Result<Response<ResponseBody>, HttpError> {
    if req.uri().path() != "/metrics" {
        return Err(HttpError::NotFound);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(HttpError::MethodNotAllowed("GET, HEAD"));
    }
    let text = app
        .metrics
        .encode()
        .map_err(|_| HttpError::Internal("the metrics could not be encoded"))?;
    let len = text.len();
    let body = if req.method() == Method::HEAD {
        ResponseBody::empty()
    } else {
        ResponseBody::full(text)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(response)
}
