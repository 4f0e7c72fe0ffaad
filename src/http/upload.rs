//! Ingest: `PUT|POST /ldash/upload/{path}` appends the body to the store as it arrives, and
//! `DELETE /ldash/upload/{path}` removes a path. Both need the upload token, or a loopback peer when
//! no token is configured.

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::budget::Client;
use super::{App, ConnInfo, HttpError, ResponseBody};
use crate::media::kind::FileKind;
use crate::pace::{Paced, TooSlow};
use crate::store::{Landed, Replace, StorePath, UploadOptions};

pub(super) async fn put<B>(
    app: &App,
    path: &StorePath,
    req: Request<B>,
    conn: &ConnInfo,
) -> Result<Response<ResponseBody>, HttpError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    authorize(app, req.headers(), conn)?;
    // The uploader's share of the upload slots, held until the upload ends (a CMAF ingest track's
    // whole POST): one client cannot take every slot.
    let _share = app.uploads.take(Client::of(conn)).map_err(|over| {
        app.metrics.upload_over_share();
        tracing::debug!(%path, %over, "upload refused");
        over
    })?;
    // A link under the root, or a file or folder on disk where this path needs the other: refused
    // before a byte is taken (the store checks what it holds in memory in `begin_upload`).
    app.store.check_root(path).await?;
    // A track's limit is per fragment (it is one long POST): checked as it is read.
    // The channel is the track's folder (`track_path` finds one only in a folder).
    if let Some(((_, track), channel)) = crate::media::package::track_path(path).zip(path.parent()) {
        return ingest(app, &channel, track, req).await;
    }
    if let Some(declared) = content_length(req.headers())? {
        if declared > app.store.limits().max_upload_bytes {
            return Err(HttpError::PayloadTooLarge(app.store.limits().max_upload_bytes));
        }
    }
    let received = app.metrics.received(req.version());
    // A media segment re-uploaded over a complete one comes from a restarted encoder reusing its
    // names: the new segment streams at once. Anything else is replaced when its upload completes.
    let replace = if FileKind::of(path) == FileKind::Media {
        Replace::AtOnce
    } else {
        Replace::OnComplete
    };
    let mut upload = app.store.begin_upload(
        path,
        UploadOptions {
            arrival: Some(conn.arrival),
            replace,
        },
    )?;
    let mut body = Paced::new(req.into_body(), app.settings.upload_min_rate);
    loop {
        // Dropping `upload` on any early return aborts it: readers see an error, a previous complete
        // version stays.
        let frame = match tokio::time::timeout(app.settings.upload_idle_timeout, body.frame()).await {
            Err(_) => return Err(HttpError::UploadTimeout(app.settings.upload_idle_timeout.as_secs())),
            Ok(None) => break,
            Ok(Some(Err(err))) => return Err(body_failed(app, path, err)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            received.inc_by(data.len() as u64);
            upload.append(data)?;
        }
    }
    let bytes = upload.entry().len();
    let landed = upload.finish()?;
    tracing::debug!(%path, bytes, ?landed, "upload complete");
    Ok(match landed {
        Landed::Created => {
            let mut response = Response::new(ResponseBody::full("created\n"));
            *response.status_mut() = StatusCode::CREATED;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Landed::Replaced => no_content(),
    })
}

/// A CMAF ingest track (`{channel}/Streams({track})`): packaged as it arrives, answered when it
/// ends.
async fn ingest<B>(
    app: &App,
    channel: &StorePath,
    track: &str,
    req: Request<B>,
) -> Result<Response<ResponseBody>, HttpError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let version = req.version();
    let received = app.metrics.received(version);
    let body = req.into_body().map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            received.inc_by(data.len() as u64);
        }
        frame
    });
    let body = Paced::new(body, app.settings.upload_min_rate);
    let _receiving = app.metrics.ingest_track();
    let result = app
        .packager
        .ingest(channel, track, body, app.settings.upload_idle_timeout)
        .await;
    let delivered = match result {
        Ok(delivered) => delivered,
        Err((err, chunks)) => {
            if matches!(err, crate::packager::TrackError::TooSlow(_)) {
                app.metrics.upload_too_slow();
            }
            app.metrics
                .ingest_ended(chunks, matches!(err, crate::packager::TrackError::Ingest(_)));
            tracing::warn!(%channel, track, %err, "CMAF ingest track refused");
            let mut response = HttpError::from(err).into_response();
            // The rest of a refused track is not read, so the connection cannot carry another
            // request: an HTTP/1.1 client that reused it would find it closed under its next
            // request's body (HTTP/2 and HTTP/3 end just the stream).
            if version < http::Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            }
            return Ok(response);
        }
    };
    app.metrics.ingest_ended(delivered.chunks, false);
    tracing::debug!(%channel, track, chunks = delivered.chunks, "CMAF ingest track ended");
    let mut response = Response::new(ResponseBody::full(format!("received {} chunks\n", delivered.chunks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

pub(super) async fn delete<B>(
    app: &App,
    path: &StorePath,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Result<Response<ResponseBody>, HttpError> {
    // ffmpeg sends DELETE with `Transfer-Encoding: chunked` and an empty body; the body is not read,
    // which is harmless for an empty one.
    authorize(app, req.headers(), conn)?;
    // What a delete removes is never reached through a link: refused, and the stored path stays.
    app.store.check_links(path).await?;
    // A DELETE of a packaged channel ends it (its final, static manifest).
    if app.packager.end(path).await {
        return Ok(no_content());
    }
    // A segment the DVR window still keeps: the encoder is told its DELETE is accepted, and the
    // segment goes once it ages out of the window (the live index deletes it then).
    if FileKind::of(path) == FileKind::Media && app.live.dvr_keeps(path) {
        app.metrics.dvr_delete_deferred();
        tracing::debug!(%path, "DELETE deferred: the DVR window keeps the segment");
        return Ok(deferred());
    }
    if app.store.delete(path, Some(conn.arrival)) {
        Ok(no_content())
    } else {
        Err(HttpError::NotFound)
    }
}

/// The error of an upload whose body failed: cut for its rate ([`crate::pace`]), or broken.
fn body_failed(app: &App, path: &str, err: Box<dyn std::error::Error + Send + Sync>) -> HttpError {
    match err.downcast::<TooSlow>() {
        Ok(slow) => {
            app.metrics.upload_too_slow();
            // Dropping the upload aborts it, as for any upload that fails midway.
            tracing::warn!(%path, reason = %slow, "upload cut for its rate; its slot is free");
            HttpError::UploadTooSlow(*slow)
        }
        Err(err) => HttpError::UploadBody(err.to_string()),
    }
}

/// `202 Accepted`: the DELETE of a segment the DVR window keeps is accepted, and carried out when
/// the segment leaves the window (ffmpeg takes any 2xx as done).
fn deferred() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(
        "accepted: kept for the DVR window, removed once older\n",
    ));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn no_content() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, HttpError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| HttpError::BadRequest("Content-Length is not a number".into()))
}

/// Uploads need the token (Bearer, or the password or user name of Basic credentials, which is how
/// `ffmpeg -headers` or a URL's user:password carry it), or a loopback peer when there is no token.
fn authorize(app: &App, headers: &HeaderMap, conn: &ConnInfo) -> Result<(), HttpError> {
    let Some(token) = &app.settings.upload_token else {
        if conn.peer.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        return Err(HttpError::Forbidden(
            "uploads are accepted only from loopback peers unless the server has an --upload-token",
        ));
    };
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(HttpError::Unauthorized(
            "this upload needs the server's token (Authorization: Bearer TOKEN)",
        ));
    };
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    let accepted = if scheme.eq_ignore_ascii_case("bearer") {
        same(credentials.as_bytes(), token.as_bytes())
    } else if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|decoded| String::from_utf8(decoded).ok())
            .is_some_and(|pair| {
                let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
                same(password.as_bytes(), token.as_bytes()) || same(user.as_bytes(), token.as_bytes())
            })
    } else {
        false
    };
    if accepted {
        Ok(())
    } else {
        Err(HttpError::Forbidden("the upload token is wrong"))
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
