//! The one place where errors become an HTTP status and a plain-text reason.

use http::{header, Response, StatusCode};

use super::body::ResponseBody;
use crate::store::path::PathError;
use crate::store::StoreError;

/// Everything a route can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request path is not acceptable.
    #[error("bad path: {0}")]
    BadPath(#[from] PathError),
    /// The store refused the operation.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Nothing is stored under the path, or no route matches.
    #[error("not found")]
    NotFound,
    /// The method is not allowed on the route.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// Credentials are missing.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Credentials are wrong, or the peer may not upload.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The declared body is larger than accepted.
    #[error("the upload is larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    /// The range cannot be served.
    #[error("the requested range is outside the file of {0} bytes")]
    RangeNotSatisfiable(u64),
    /// The client sent no body data for too long.
    #[error("the upload sent no data for {0} seconds and was aborted")]
    UploadTimeout(u64),
    /// The upload delivered less than the minimum rate (`--upload-min-bytes`) and was cut.
    #[error("{0}")]
    UploadTooSlow(#[from] crate::pace::TooSlow),
    /// The uploader holds its share of the upload slots (`--max-uploads-per-peer`).
    #[error("{0}")]
    OverBudget(#[from] super::budget::OverBudget),
    /// The request body failed while it was read.
    #[error("the upload body failed: {0}")]
    UploadBody(String),
    /// A malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A byte range of a growing file did not complete in time.
    #[error("the requested bytes of this growing file did not arrive in time")]
    PartTimeout,
    /// The server failed at something that should not fail.
    #[error("{0}")]
    Internal(&'static str),
    /// An LL-HLS playlist could not be served.
    #[error("{0}")]
    Hls(#[from] crate::live::HlsError),
    /// A CMAF ingest track was refused.
    #[error("{0}")]
    Track(#[from] crate::packager::TrackError),
}

impl HttpError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadPath(_) | HttpError::UploadBody(_) | HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Store(StoreError::Busy { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Store(StoreError::TooManyPaths { .. } | StoreError::MemoryFull { .. }) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            HttpError::Store(StoreError::TooLarge { .. }) | HttpError::PayloadTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            HttpError::Store(
                StoreError::Superseded
                | StoreError::Stale
                | StoreError::FileInTheWay { .. }
                | StoreError::FolderInTheWay { .. }
                | StoreError::NotRegular { .. },
            ) => StatusCode::CONFLICT,
            // A link in the root is the operator's (or an intruder's) doing, not a state the client
            // can resolve by deleting: forbidden, with the link named.
            HttpError::Store(StoreError::Link { .. }) => StatusCode::FORBIDDEN,
            HttpError::Store(StoreError::Disk(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            HttpError::UploadTimeout(_) | HttpError::UploadTooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            HttpError::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::PartTimeout => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::Hls(crate::live::HlsError::NotFound | crate::live::HlsError::OutsideWindow) => {
                StatusCode::NOT_FOUND
            }
            HttpError::Hls(crate::live::HlsError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            HttpError::Hls(crate::live::HlsError::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Track(err) => track_status(err),
        }
    }
}

fn track_status(err: &crate::packager::TrackError) -> StatusCode {
    use crate::media::package::IngestError;
    use crate::packager::TrackError;
    match err {
        TrackError::Ingest(IngestError::FragmentTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        TrackError::Ingest(IngestError::NotCmaf(_)) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        TrackError::Ingest(_) | TrackError::Body(_) | TrackError::Path(_) => StatusCode::BAD_REQUEST,
        TrackError::Superseded => StatusCode::CONFLICT,
        TrackError::Idle(_) | TrackError::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
        TrackError::Store(store) => HttpError::Store(store.clone()).status(),
    }
}

impl HttpError {
    /// The response: the status, the reason as plain text, and the headers the status calls for.
    pub fn into_response(self) -> Response<ResponseBody> {
        let status = self.status();
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store");
        match &self {
            HttpError::MethodNotAllowed(allow) => builder = builder.header(header::ALLOW, *allow),
            HttpError::Unauthorized(_) => {
                builder = builder.header(
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"ldash\", Basic realm=\"ldash\"",
                )
            }
            HttpError::RangeNotSatisfiable(len) => {
                builder = builder.header(header::CONTENT_RANGE, format!("bytes */{len}"))
            }
            HttpError::Store(StoreError::Busy { .. }) | HttpError::OverBudget(_) => {
                builder = builder.header(header::RETRY_AFTER, "1")
            }
            _ => {}
        }
        let body = ResponseBody::full(format!("{self}\n"));
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(ResponseBody::empty()))
    }
}
