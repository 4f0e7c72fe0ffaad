//! `GET|HEAD /ldash/download/{path}`: a complete entry with length, validators, ranges and
//! conditional requests; a growing entry streamed chunk by chunk as the upload appends; a DASH
//! manifest rewritten for low latency (`?raw=1`: as uploaded); and, for the next segment or two of a
//! live stream, a bounded wait for an upload that has not started yet instead of a 404.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::release::{released, PART_WAIT};
use super::timeview::TimeView;
use super::{headers, App, ConnInfo, HttpError, ResponseBody, Transport};
use crate::live::{HlsError, ReleasePoint};
use crate::media::mpd;
use crate::store::{Entry, EntryState, StorePath};

pub(super) async fn get<B>(
    app: &App,
    path: &StorePath,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Result<Response<ResponseBody>, HttpError> {
    let entry = match app.store.get(path) {
        Some(entry) => entry,
        None => {
            // With clocks slightly apart, players ask for the live edge a little early: a 404 would
            // cost them a retry and latency, so the next segment or two are waited for, bounded.
            let bound = app.live.upcoming(path).ok_or(HttpError::NotFound)?;
            let _slot = app.hold(conn)?;
            let _held = app.metrics.early_request();
            app.store
                .wait_for_upload(path, bound)
                .await
                .ok_or(HttpError::NotFound)?
        }
    };
    let head = req.method() == Method::HEAD;
    match entry.state() {
        EntryState::Growing => match growing_range_of(req.headers()) {
            Some(GrowingRange::Closed(range)) => {
                growing_range(app, path, &entry, range, req.headers(), (head, conn)).await
            }
            Some(GrowingRange::Open { first, last }) => {
                open_range(app, path, &entry, (first, last), req.headers(), (head, conn)).await
            }
            None => Ok(growing(app, path, &entry, head)),
        },
        EntryState::Complete if wants_rewrite(path, req) => {
            if let Some(view) = TimeView::parse(req.uri().query(), SystemTime::now())? {
                return manifest_view(app, path, req, conn, &view).await;
            }
            match rewritten_manifest(app, path, req, conn).await {
                Some(response) => Ok(response),
                None => complete(app, path, &entry, req.headers(), head).await,
            }
        }
        EntryState::Complete => complete(app, path, &entry, req.headers(), head).await,
        EntryState::Aborted => Err(HttpError::NotFound),
    }
}

/// A response with `body`, the path's Content-Type and its Cache-Control (growing or complete).
fn typed(app: &App, path: &str, growing: bool, body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(headers::content_type(path)),
    );
    headers.insert(
        header::CACHE_CONTROL,
        headers::cache_control(path, growing, app.settings.media_max_age),
    );
    response
}

/// The last-byte-pos a client sends to ask for a growing resource to its end (RFC 8673: 2^53 - 1,
/// which the HLS draft recommends for a preload hint without BYTERANGE-LENGTH). Anything from here
/// up means "to the end, however long it gets".
const OPEN_ENDED: u64 = (1 << 53) - 1;

/// A Range request into a growing entry.
#[derive(Debug, PartialEq, Eq)]
enum GrowingRange {
    /// `bytes=first-last`: `first..end`, end exclusive (what LL-HLS players ask for parts).
    Closed((u64, u64)),
    /// `bytes=first-`, or a last-byte-pos of 2^53 - 1 or more (a preload hint): from `first` to
    /// the end of the upload; `last` is what the Content-Range names.
    Open { first: u64, last: u64 },
}

/// The single range of a Range request into a growing entry; None (the whole entry, as it grows)
/// for several ranges, a suffix range (its end is not known yet) or a header that does not parse.
fn growing_range_of(request: &HeaderMap) -> Option<GrowingRange> {
    let value = request.get(header::RANGE)?.to_str().ok()?;
    let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last = last.trim();
    if last.is_empty() {
        return Some(GrowingRange::Open {
            first,
            last: OPEN_ENDED,
        });
    }
    let last: u64 = last.parse().ok()?;
    if last < first {
        return None;
    }
    if last >= OPEN_ENDED {
        return Some(GrowingRange::Open { first, last });
    }
    Some(GrowingRange::Closed((first, last.checked_add(1)?)))
}

/// An open range of a growing entry (a preload hint, or `bytes=N-`): 206 from `first` to the end
/// of the upload, its length unknown (`Content-Range: bytes first-last/*`, RFC 8673), released
/// part by part as the draft asks (section 6.2.6). The headers go with the first whole part, so a
/// range that turns out to start past the end of the finished file still gets its 416.
async fn open_range(
    app: &App,
    path: &StorePath,
    entry: &std::sync::Arc<Entry>,
    (first, last): (u64, u64),
    request: &HeaderMap,
    (head, conn): (bool, &ConnInfo),
) -> Result<Response<ResponseBody>, HttpError> {
    let mut release = app.live.release_of(path);
    if let (Some(release), false) = (&mut release, head) {
        // Held (counted) while it waits for a whole part past `first`.
        let slot = app.hold(conn)?;
        let point = release.next_after(first, entry, PART_WAIT).await;
        drop(slot);
        match point {
            ReleasePoint::Until(_) => {}
            // The upload ended before a part past `first` was made: answer as for the whole file.
            ReleasePoint::Rest if entry.state() != EntryState::Growing => {
                return complete(app, path, entry, request, head).await
            }
            ReleasePoint::Rest => {}
            ReleasePoint::Stalled => return Err(HttpError::PartTimeout),
        }
    }
    // Cacheable as the complete segment is (the draft's profile: hinted parts for six target
    // durations): what it sends is the segment's immutable bytes from `first` to its end.
    let mut response = typed(app, path, false, ResponseBody::empty());
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {first}-{last}/*")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    if !head {
        let limit = app.settings.reader_lag_limit;
        let body = match release {
            Some(release) => ResponseBody::chunks(
                released(std::sync::Arc::clone(entry), release, (first, None), limit),
                None,
            ),
            None => ResponseBody::reader(lagged(entry.reader(first, None), limit), None),
        };
        *response.body_mut() = body.attached(app.metrics.growing_reader());
    }
    Ok(response)
}

fn lagged(reader: crate::store::Reader, limit: Option<u64>) -> crate::store::Reader {
    match limit {
        Some(limit) => reader.with_lag_limit(limit),
        None => reader,
    }
}

/// A byte range of a growing entry (an LL-HLS part): held until its last byte exists, then sent at
/// full speed, so no byte of an incomplete part is ever sent.
async fn growing_range(
    app: &App,
    path: &StorePath,
    entry: &std::sync::Arc<Entry>,
    (start, end): (u64, u64),
    request: &HeaderMap,
    (head, conn): (bool, &ConnInfo),
) -> Result<Response<ResponseBody>, HttpError> {
    // A part not yet complete is held (counted) until it is.
    let slot = if entry.len() < end { Some(app.hold(conn)?) } else { None };
    let whole = entry.wait_for_len(end, PART_WAIT).await;
    drop(slot);
    if !whole {
        return match entry.state() {
            EntryState::Complete => complete(app, path, entry, request, head).await,
            EntryState::Aborted => Err(HttpError::NotFound),
            EntryState::Growing => Err(HttpError::PartTimeout),
        };
    }
    let mut response = typed(app, path, false, ResponseBody::empty());
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    // The complete length is not known yet ("*"), which HTTP allows.
    if let Ok(value) = HeaderValue::from_str(&format!("bytes {}-{}/*", start, end - 1)) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    if !head {
        *response.body_mut() = ResponseBody::reader(entry.reader(start, Some(end)), Some(end - start));
    }
    Ok(response)
}

/// DASH manifests are rewritten unless the query says `raw=1`.
fn wants_rewrite<B>(path: &str, req: &Request<B>) -> bool {
    let raw = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "raw=1" || kv == "raw=true"));
    !raw && path.to_ascii_lowercase().ends_with(".mpd")
}

/// A time view of the manifest (`?start=`, `?end=`; docs/dvr.md): the low-latency MPD cut to the
/// interval, static once the interval is past.
async fn manifest_view<B>(
    app: &App,
    path: &StorePath,
    req: &Request<B>,
    conn: &ConnInfo,
    view: &TimeView,
) -> Result<Response<ResponseBody>, HttpError> {
    app.live.restored(std::time::Duration::from_secs(5)).await;
    let (mpd, bytes) = app.live.manifest(path).await.ok_or(HttpError::NotFound)?;
    let served = app
        .live
        .rewrite(path, &mpd, &bytes, &clock_url(req, conn))
        .unwrap_or(bytes);
    let kept = app.live.oldest_kept(path, &mpd);
    let cut = match mpd::view(&served, &mpd, &view.clip, kept, SystemTime::now()) {
        Ok(cut) => cut,
        Err(mpd::ViewError::Empty) => return Err(HttpError::Hls(HlsError::OutsideWindow)),
        Err(err) => return Err(HttpError::BadRequest(format!("no time view of this MPD: {err}"))),
    };
    let mut response = typed(app, path, false, ResponseBody::empty());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(cut.len()));
    if req.method() != Method::HEAD {
        *response.body_mut() = ResponseBody::full(cut);
    }
    Ok(response)
}

/// The manifest rewritten for low latency, or None to serve it as uploaded.
async fn rewritten_manifest<B>(
    app: &App,
    path: &StorePath,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Option<Response<ResponseBody>> {
    // Right after a restart, what the index observed of the stream on disk (chunk durations,
    // bandwidth, whether it ended) is ready first.
    app.live.restored(std::time::Duration::from_secs(5)).await;
    let (mpd, bytes) = app.live.manifest(path).await?;
    let rewritten = app.live.rewrite(path, &mpd, &bytes, &clock_url(req, conn))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &rewritten);
    let etag: String = digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"r{etag}\"");
    let mut response = typed(app, path, false, ResponseBody::empty());
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if not_modified(req.headers(), &etag, SystemTime::UNIX_EPOCH) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Some(response);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    if req.method() != Method::HEAD {
        *response.body_mut() = ResponseBody::full(rewritten);
    }
    Some(response)
}

/// The absolute URL of the server clock as this client reaches the server, for UTCTiming; a
/// relative one when the request names no usable host.
fn clock_url<B>(req: &Request<B>, conn: &ConnInfo) -> String {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)));
    let scheme = if conn.transport == Transport::Cleartext {
        "http"
    } else {
        "https"
    };
    match host {
        Some(host) => format!("{scheme}://{host}/ldash/time"),
        None => "/ldash/time".to_owned(),
    }
}

/// A growing entry: everything so far, then the rest as it arrives: a media segment the live index
/// follows CMAF chunk by whole CMAF chunk (see [`super::release`]), anything else byte by byte.
/// Validators are ignored (the length is not known yet), as HTTP allows.
fn growing(app: &App, path: &StorePath, entry: &std::sync::Arc<Entry>, head: bool) -> Response<ResponseBody> {
    let body = if head {
        ResponseBody::empty()
    } else {
        let limit = app.settings.reader_lag_limit;
        let body = match app.live.release_of(path) {
            Some(release) => {
                let release = release.per_chunk();
                ResponseBody::chunks(released(std::sync::Arc::clone(entry), release, (0, None), limit), None)
            }
            None => ResponseBody::reader(lagged(entry.reader(0, None), limit), None),
        };
        body.attached(app.metrics.growing_reader())
    };
    typed(app, path, true, body)
}

async fn complete(
    app: &App,
    path: &StorePath,
    entry: &std::sync::Arc<Entry>,
    request: &HeaderMap,
    head: bool,
) -> Result<Response<ResponseBody>, HttpError> {
    let len = entry.len();
    let etag = entry.etag();
    let modified = entry.modified();
    let mut response = typed(app, path, false, ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    if not_modified(request, &etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }
    let (start, end) = match requested_range(request, &etag, modified, len) {
        Range::Whole => (0, len),
        Range::Part(start, end) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let value = format!("bytes {}-{}/{}", start, end - 1, len);
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            (start, end)
        }
        Range::Unsatisfiable => return Err(HttpError::RangeNotSatisfiable(len)),
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if !head && end > start {
        let mut reader = entry.reader(start, Some(end));
        // A file that left memory is opened before the status is sent: one that cannot be read
        // (removed or replaced behind ldash's back, or behind a symbolic link since) is a 404, not
        // a 200 with a broken body.
        if let Err(err) = reader.ready().await {
            tracing::warn!(%path, %err, "a stored file could not be read from disk");
            return Err(HttpError::NotFound);
        }
        *response.body_mut() = ResponseBody::reader(reader, Some(end - start));
    }
    Ok(response)
}

/// If-None-Match (weak comparison) or, without it, If-Modified-Since.
fn not_modified(request: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(value) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return value
            .split(',')
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag == etag);
    }
    let Some(since) = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    whole_seconds(modified) <= since
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    Whole,
    /// `start..end`, end exclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// The single byte range asked for, if it applies (If-Range matches). Several ranges, or a header
/// that does not parse, get the whole file, as HTTP allows.
fn requested_range(request: &HeaderMap, etag: &str, modified: SystemTime, len: u64) -> Range {
    let Some(value) = request.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Whole;
    };
    if let Some(condition) = request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let matches = if condition.starts_with('"') {
            condition == etag
        } else {
            httpdate::parse_http_date(condition).is_ok_and(|date| date == whole_seconds(modified))
        };
        if !matches {
            return Range::Whole;
        }
    }
    parse_range(value, len)
}

fn parse_range(value: &str, len: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return Range::Whole;
        };
        if suffix == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part(len.saturating_sub(suffix), len);
    }
    let Ok(start) = first.parse::<u64>() else {
        return Range::Whole;
    };
    let end = if last.is_empty() {
        len
    } else {
        match last.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(len),
            _ => return Range::Whole,
        }
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Part(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), Range::Part(90, 100));
        assert_eq!(parse_range("bytes=-10", 100), Range::Part(90, 100));
        assert_eq!(parse_range("bytes=50-500", 100), Range::Part(50, 100));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(parse_range("items=0-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=x-", 100), Range::Whole);
    }

    #[test]
    fn ranges_into_a_growing_entry_are_closed_or_open_ended() {
        let ask = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RANGE, HeaderValue::from_str(value).expect("header"));
            growing_range_of(&headers)
        };
        assert_eq!(ask("bytes=10-19"), Some(GrowingRange::Closed((10, 20))));
        assert_eq!(
            ask("bytes=10-"),
            Some(GrowingRange::Open {
                first: 10,
                last: OPEN_ENDED
            })
        );
        assert_eq!(
            ask("bytes=10-9007199254740991"),
            Some(GrowingRange::Open {
                first: 10,
                last: 9_007_199_254_740_991
            })
        );
        assert_eq!(
            ask("bytes=0-18446744073709551615"),
            Some(GrowingRange::Open {
                first: 0,
                last: u64::MAX
            })
        );
        assert_eq!(ask("bytes=-10"), None, "a suffix of a file whose end is unknown");
        assert_eq!(ask("bytes=5-1"), None);
        assert_eq!(ask("bytes=0-1,5-6"), None);
        assert_eq!(ask("items=0-1"), None);
    }
}
