//! `GET /ldash/download/{folder}/{name}.m3u8` for a stream ingested as `{name}.mpd`: the LL-HLS
//! multivariant playlist, and `{name}.{representation id}.m3u8`, each representation's media
//! playlist with blocking reload and delta updates. An `.m3u8` that was uploaded is served as
//! uploaded instead (the router sends only the others here, [`is_generated`]).
//!
//! The HTTP side of LL-HLS lives here: the `_HLS_` delivery directives, how long a playlist may be
//! cached, and its gzip form, compressed once per text and shared by the hundreds of blocked
//! requests that wake on the same part. The live index answers with the text ([`Live::hls_media`]).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};

use super::timeview::TimeView;
use super::{headers, App, ConnInfo, HttpError, ResponseBody};
use crate::live::{Playlist, PlaylistKind};
use crate::media::hls::{self, Wanted};
use crate::store::StorePath;

#[cfg(doc)]
use crate::live::Live;

/// Whether `path` names a playlist ldash generates: an `.m3u8` nobody uploaded.
pub(super) fn is_generated(app: &App, path: &StorePath) -> bool {
    path.ends_with(".m3u8") && app.store.get(path).is_none()
}

pub(super) async fn get<B>(
    app: &App,
    path: &StorePath,
    req: &Request<B>,
    conn: &ConnInfo,
) -> Result<Response<ResponseBody>, HttpError> {
    let stem = path.name().strip_suffix(".m3u8").ok_or(HttpError::NotFound)?;
    let manifest = path.sibling(&format!("{stem}.mpd"))?;
    let view = TimeView::parse(req.uri().query(), SystemTime::now())?;
    if app.live.knows_manifest(&manifest) {
        let mut playlist = app.live.hls_multivariant(&manifest).await?;
        if let Some(view) = &view {
            playlist.text = with_query(&playlist.text, &view.query).into();
        }
        return Ok(respond(app, path, playlist, Directives::default(), view.is_some(), req));
    }
    // `{name}.{rep}.m3u8`: try each '.' from the right as the separator.
    for (at, _) in stem.rmatch_indices('.') {
        let (base, rep) = (&stem[..at], &stem[at + 1..]);
        let Ok(manifest) = path.sibling(&format!("{base}.mpd")) else {
            continue;
        };
        if !app.live.knows_manifest(&manifest) {
            continue;
        }
        let directives = Directives::parse(req.uri().query())?;
        // A blocking reload (_HLS_msn) may be held for up to three target durations: counted
        // against the held requests while it is answered.
        let _slot = directives.msn.is_some().then(|| app.hold(conn)).transpose()?;
        let _blocking = directives.msn.is_some().then(|| app.metrics.hls_blocking());
        let clip = view.as_ref().map(|v| (&v.clip, v.query.as_str()));
        let playlist = app
            .live
            .hls_media(&manifest, rep, directives.wanted(), directives.skip, clip)
            .await?;
        return Ok(respond(app, path, playlist, directives, view.is_some(), req));
    }
    Err(HttpError::NotFound)
}

/// Delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// _HLS_msn.
    pub msn: Option<u64>,
    /// _HLS_part.
    pub part: Option<u64>,
    /// _HLS_skip=YES or v2.
    pub skip: bool,
}

impl Directives {
    /// Parses `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string.
    pub fn parse(query: Option<&str>) -> Result<Directives, HttpError> {
        let bad = |why: &str| HttpError::BadRequest(why.to_owned());
        let mut d = Directives::default();
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "_HLS_msn" => d.msn = Some(value.parse().map_err(|_| bad("_HLS_msn is not a number"))?),
                "_HLS_part" => d.part = Some(value.parse().map_err(|_| bad("_HLS_part is not a number"))?),
                "_HLS_skip" => d.skip = value == "YES" || value == "v2",
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err(bad("_HLS_part needs _HLS_msn"));
        }
        Ok(d)
    }

    /// What a blocking reload waits for; None for a plain reload.
    pub fn wanted(&self) -> Option<Wanted> {
        self.msn.map(|msn| Wanted { msn, part: self.part })
    }
}

/// How long a playlist may be cached: a multivariant playlist 1 s; a media playlist half a target
/// duration, or six when it answers a blocking reload of a live stream (the draft's profile).
fn max_age(kind: PlaylistKind, directives: Directives) -> Duration {
    match kind {
        PlaylistKind::Multivariant => Duration::from_secs(1),
        PlaylistKind::Media { timing, ended } => hls::playlist_max_age(&timing, directives.msn.is_some() && !ended),
    }
}

/// The multivariant playlist of a time view: every media playlist it names carries the view's
/// query, so the player loads the same view of each rendition.
fn with_query(text: &[u8], query: &str) -> String {
    let text = String::from_utf8_lossy(text);
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.lines() {
        if !line.is_empty() && !line.starts_with('#') {
            out.push_str(&format!("{line}?{query}\n"));
        } else if let Some((head, rest)) = line.split_once("URI=\"") {
            let (uri, tail) = rest.split_once('"').unwrap_or((rest, ""));
            out.push_str(&format!("{head}URI=\"{uri}?{query}\"{tail}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn respond<B>(
    app: &App,
    path: &StorePath,
    playlist: Playlist,
    directives: Directives,
    view: bool,
    req: &Request<B>,
) -> Response<ResponseBody> {
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().split(';').next() == Some("gzip")));
    // Hundreds of blocked requests wake on one part: the first compresses, the others share it.
    // A time view's text is its request's own: compressed for it alone, not cached.
    let body = match (gzip, view) {
        (false, _) => None,
        (true, false) => app.gzipped.get(path, directives.skip, &playlist.text),
        (true, true) => compress(&playlist.text).map(Bytes::from),
    };
    let mut response = Response::new(ResponseBody::empty());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(headers::content_type(path)),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let max_age = max_age(playlist.kind, directives).as_millis().div_ceil(1000);
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

/// Playlists cached gzipped at most (beyond, the cache starts again: a server with thousands of
/// streams compresses a little more often).
const GZIP_CACHED: usize = 4096;

/// A compressed form made at most once and shared (None when compression failed).
type SharedGzip = Arc<OnceLock<Option<Bytes>>>;

/// The gzip form of the newest text of each generated playlist (full or with EXT-X-SKIP): the
/// requests that get the same text (the live index shares one text per change of the stream)
/// share one compression.
#[derive(Debug, Default)]
pub struct GzipCache {
    newest: Mutex<HashMap<(StorePath, bool), (Bytes, SharedGzip)>>,
}

impl GzipCache {
    /// `text` (of playlist `path`, `skip` form) gzipped; None when compression failed.
    fn get(&self, path: &StorePath, skip: bool, text: &Bytes) -> Option<Bytes> {
        let slot = {
            let mut newest = self.newest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = (path.clone(), skip);
            match newest.get(&key) {
                Some((cached, slot)) if same(cached, text) => Arc::clone(slot),
                _ => {
                    if newest.len() >= GZIP_CACHED {
                        newest.clear();
                    }
                    let slot = SharedGzip::default();
                    newest.insert(key, (text.clone(), Arc::clone(&slot)));
                    slot
                }
            }
        };
        // Outside the map's lock: the others asking for this text wait for this one compression.
        slot.get_or_init(|| compress(text).map(Bytes::from)).clone()
    }
}

/// The same text: the same shared bytes (the usual case), or equal ones.
fn same(a: &Bytes, b: &Bytes) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

fn compress(text: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text).ok()?;
    encoder.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_from_the_query() {
        assert_eq!(Directives::parse(None).ok(), Some(Directives::default()));
        let d = Directives::parse(Some("_HLS_msn=7&_HLS_part=2&_HLS_skip=YES")).expect("valid");
        assert_eq!((d.msn, d.part, d.skip), (Some(7), Some(2), true));
        assert_eq!(d.wanted(), Some(Wanted { msn: 7, part: Some(2) }));
        assert!(Directives::parse(Some("_HLS_skip=v2")).is_ok_and(|d| d.skip && d.wanted().is_none()));
        assert!(matches!(
            Directives::parse(Some("_HLS_part=1")),
            Err(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            Directives::parse(Some("_HLS_msn=x")),
            Err(HttpError::BadRequest(_))
        ));
    }

    #[test]
    fn one_text_is_compressed_once_and_a_new_text_replaces_it() {
        let cache = GzipCache::default();
        let path = StorePath::new("live/stream.v.m3u8").expect("valid");
        let text = Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:9\n");
        let first = cache.get(&path, false, &text).expect("compressed");
        let again = cache.get(&path, false, &text.clone()).expect("compressed");
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same text shares one compression");
        let newer = Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-ENDLIST\n");
        let other = cache.get(&path, false, &newer).expect("compressed");
        assert_ne!(first, other, "a new text is compressed anew");
    }
}
