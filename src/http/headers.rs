//! Header policy shared by every route: content types, caching and CORS.

use http::header::{self, HeaderMap, HeaderValue};

use crate::media::kind::{extension, FileKind};

/// The Content-Type for a stored path, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match extension(path).as_deref() {
        Some("mpd") => "application/dash+xml",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("m4s") => "video/iso.segment",
        Some("mp4" | "m4v") => "video/mp4",
        Some("m4a") => "audio/mp4",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Cache-Control for a stored path. Growing entries must not be cached as if whole; complete media
/// segments may be cached for as long as the origin keeps them (`media_max_age`, the GC age).
pub fn cache_control(path: &str, growing: bool, media_max_age: u64) -> HeaderValue {
    if growing {
        return HeaderValue::from_static("no-store");
    }
    if FileKind::of(path) == FileKind::Media {
        return HeaderValue::from_str(&format!("public, max-age={media_max_age}"))
            .unwrap_or(HeaderValue::from_static("no-cache"));
    }
    HeaderValue::from_static("no-cache")
}

/// The RFC 9218 priority of a response to a request for `path` (the HLS draft's Low-Latency Server
/// Configuration Profile requires one with HTTP/3: playlists urgency 1, media segments 2 to 6, a
/// higher bit rate never before a lower one, so every media file here is 2); None for anything
/// else.
pub fn priority(path: &str) -> Option<HeaderValue> {
    match FileKind::of(path) {
        FileKind::Mpd | FileKind::Playlist => Some(HeaderValue::from_static("u=1")),
        FileKind::Media => Some(HeaderValue::from_static("u=2")),
        FileKind::Other => None,
    }
}

/// Headers that let players on other origins read responses (and the Date, Age and lengths they need
/// for clock sync and throughput estimates).
pub fn add_cors(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Date, Age, Content-Length, Content-Range, Content-Type, ETag, Last-Modified, Priority",
        ),
    );
}

/// The answer to a CORS preflight.
pub fn add_preflight(headers: &mut HeaderMap, requested: Option<&HeaderValue>) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS"),
    );
    let allowed = requested.cloned().unwrap_or(HeaderValue::from_static(
        "Range, Authorization, Content-Type, If-None-Match, If-Modified-Since",
    ));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_extensions() {
        assert_eq!(content_type("live/stream.mpd"), "application/dash+xml");
        assert_eq!(content_type("a/b.M3U8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("chunk-stream0-00001.m4s"), "video/iso.segment");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn caching_depends_on_kind_and_state() {
        assert_eq!(cache_control("a.m4s", true, 300), "no-store");
        assert_eq!(cache_control("a.m4s", false, 300), "public, max-age=300");
        assert_eq!(cache_control("a.mpd", false, 300), "no-cache");
        assert_eq!(cache_control("a.html", false, 300), "no-cache");
    }
}
