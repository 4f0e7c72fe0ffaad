//! `GET /ldash/download/{folder}/{name}.m3u8` for a stream ingested as `{name}.mpd`: the LL-HLS
//! multivariant playlist, and `{name}.{representation id}.m3u8`, each representation's media
//! playlist with blocking reload and delta updates. An `.m3u8` that was uploaded is served as
//! uploaded instead (the caller checks the store first).

use std::io::Write;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};

use super::{headers, App, ConnInfo, HttpError, ResponseBody};
use crate::live::hls::{Directives, Playlist};

pub(super) async fn get<B>(
    app: &App,
    path: &str,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Result<Response<ResponseBody>, HttpError> {
    let stem = path.strip_suffix(".m3u8").ok_or(HttpError::NotFound)?;
    let manifest = format!("{stem}.mpd");
    if app.live.knows_manifest(&manifest) {
        let playlist = app.live.hls_multivariant(&manifest).await?;
        return Ok(respond(path, playlist, req));
    }
    // `{name}.{rep}.m3u8`: try each '.' from the right as the separator.
    for (at, _) in stem.rmatch_indices('.') {
        let (base, rep) = (&stem[..at], &stem[at + 1..]);
        let manifest = format!("{base}.mpd");
        if !app.live.knows_manifest(&manifest) {
            continue;
        }
        let directives = Directives::parse(req.uri().query())?;
        // A blocking reload (_HLS_msn) may be held for up to three target durations: counted
        // against the held requests while it is answered.
        let _slot = directives.msn.is_some().then(|| app.hold(conn)).transpose()?;
        let _blocking = directives.msn.is_some().then(|| app.metrics.hls_blocking());
        let playlist = app.live.hls_media(&manifest, rep, directives).await?;
        return Ok(respond(path, playlist, req));
    }
    Err(HttpError::NotFound)
}

fn respond<B>(path: &str, playlist: Playlist, req: &Request<B>) -> Response<ResponseBody> {
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));
    // Hundreds of blocked requests wake on one part: the first compresses, the others share it.
    let body = if gzip {
        playlist
            .gzip
            .get_or_init(|| compress(&playlist.text).map(Bytes::from))
            .clone()
    } else {
        None
    };
    let mut response = Response::new(ResponseBody::empty());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(headers::content_type(path)),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let max_age = playlist.max_age.as_millis().div_ceil(1000);
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, value);
    }
    let bytes = match body {
        Some(compressed) => {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            compressed
        }
        None => playlist.text,
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if req.method() != http::Method::HEAD {
        *response.body_mut() = ResponseBody::full(bytes);
    }
    response
}

fn compress(text: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text).ok()?;
    encoder.finish().ok()
}
