//! The player page (`GET /ldash/play/{path}`), its scripts (`/ldash/player/...`), and the stream list
//! (`GET /ldash/` as HTML, `GET /ldash/streams` as JSON). The page's sources live in player/ and are
//! built into the binary, and so are dash.js, hls.js and Shaka Player: build.rs fetches the versions
//! pinned in player/package-lock.json from the npm registry (checked against the lock file's
//! integrity hashes) and embeds them gzipped. A library found under `{--player-dir}/node_modules`
//! (after `npm ci --prefix player`, e.g. to try another version) is served instead; one that is
//! neither embedded (a build without the registry) nor installed is loaded from a public CDN, and the
//! page says so.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::{App, HttpError, ResponseBody};
use crate::live::{StreamList, StreamSummary};

const PAGE: &str = include_str!("../../player/index.html");
const SCRIPT: &str = include_str!("../../player/ldash-player.js");

/// One library the page can load.
pub(super) struct Library {
    /// Its name under `/ldash/player/`.
    route: &'static str,
    /// The npm package.
    package: &'static str,
    /// The file inside the package.
    file: &'static str,
    /// The version pinned in player/package-lock.json.
    version: &'static str,
    /// The file built into the binary, unless the build could not fetch it.
    embedded: Option<Embedded>,
}

/// A library file built into the binary.
struct Embedded {
    gzip: &'static [u8],
    /// A strong validator (the start of the file's SHA-256), quoted.
    etag: &'static str,
    /// Where build.rs took it from: "registry" (the tarball, checked) or "node_modules".
    from: &'static str,
}

// LIBRARIES: [Library; 3], dash.js, hls.js, Shaka Player, in the page's order.
include!(concat!(env!("OUT_DIR"), "/player_libraries.rs"));

/// The embedded libraries, decompressed once for the rare client that does not take gzip.
static PLAIN: [OnceLock<Option<Bytes>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];

/// Where the page loads each library from: an installed copy under the player folder, the
/// embedded one, or the CDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibrarySource {
    /// `{--player-dir}/node_modules`.
    PlayerDir,
    /// Built into the binary.
    Embedded,
    /// cdn.jsdelivr.net (a build without the registry and nothing installed).
    Cdn,
}

fn installed(player_dir: &Path, library: &Library) -> PathBuf {
    player_dir.join("node_modules").join(library.package).join(library.file)
}

fn source(player_dir: &Path, library: &Library) -> LibrarySource {
    if installed(player_dir, library).is_file() {
        LibrarySource::PlayerDir
    } else if library.embedded.is_some() {
        LibrarySource::Embedded
    } else {
        LibrarySource::Cdn
    }
}

/// One line per library for the start-up log: version and where the page loads it from.
pub fn describe_libraries(player_dir: &Path) -> Vec<(String, LibrarySource)> {
    LIBRARIES
        .iter()
        .map(|library| {
            let source = source(player_dir, library);
            let at = match (source, &library.embedded) {
                (LibrarySource::PlayerDir, _) => format!("from {}", installed(player_dir, library).display()),
                (LibrarySource::Embedded, Some(e)) => format!("embedded (from the {})", e.from),
                _ => "NOT embedded: the page loads it from cdn.jsdelivr.net".to_owned(),
            };
            (format!("{} {} {at}", library.package, library.version), source)
        })
        .collect()
}

fn library_url(player_dir: &Path, index: usize) -> (String, bool) {
    let library = &LIBRARIES[index];
    if source(player_dir, library) != LibrarySource::Cdn {
        return (format!("/ldash/player/{}", library.route), false);
    }
    (
        format!(
            "https://cdn.jsdelivr.net/npm/{}@{}/{}",
            library.package, library.version, library.file
        ),
        true,
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The play page for a manifest path (`live/stream.mpd` or `live/stream.m3u8`).
pub(super) fn page(app: &App, path: &str) -> Result<Response<ResponseBody>, HttpError> {
    let lower = path.to_ascii_lowercase();
    let (stem, kind) = if let Some(stem) = lower.strip_suffix(".mpd").map(|_| &path[..path.len() - 4]) {
        (stem, "dash")
    } else if let Some(stem) = lower.strip_suffix(".m3u8").map(|_| &path[..path.len() - 5]) {
        (stem, "hls")
    } else {
        return Err(HttpError::BadRequest("the play page takes a .mpd or .m3u8 path".into()));
    };
    let manifest = format!("/ldash/download/{path}");
    let (dash_lib, dash_cdn) = library_url(&app.settings.player_dir, 0);
    let (hls_lib, hls_cdn) = library_url(&app.settings.player_dir, 1);
    let (shaka_lib, shaka_cdn) = library_url(&app.settings.player_dir, 2);
    let body = PAGE
        .replace("{{TITLE}}", &html_escape(path))
        .replace("{{MANIFEST}}", &html_escape(&manifest))
        .replace("{{KIND}}", kind)
        .replace("{{DASH_PAGE}}", &html_escape(&format!("/ldash/play/{stem}.mpd")))
        .replace("{{HLS_PAGE}}", &html_escape(&format!("/ldash/play/{stem}.m3u8")))
        .replace("{{DASH_LIB}}", &html_escape(&dash_lib))
        .replace("{{HLS_LIB}}", &html_escape(&hls_lib))
        .replace("{{SHAKA_LIB}}", &html_escape(&shaka_lib))
        .replace(
            "{{FROM_CDN}}",
            if dash_cdn || hls_cdn || shaka_cdn {
                "true"
            } else {
                "false"
            },
        );
    Ok(text(body, "text/html; charset=utf-8"))
}

/// `/ldash/player/{name}`: the page's own script, or a library (installed copy first, else the
/// embedded one: gzip as built when the client takes it, with a strong ETag).
pub(super) async fn asset(app: &App, name: &str, request: &HeaderMap) -> Result<Response<ResponseBody>, HttpError> {
    if name == "ldash-player.js" {
        return Ok(text(SCRIPT.to_owned(), "text/javascript; charset=utf-8"));
    }
    let index = LIBRARIES
        .iter()
        .position(|library| library.route == name)
        .ok_or(HttpError::NotFound)?;
    let library = &LIBRARIES[index];
    let path = installed(&app.settings.player_dir, library);
    let mut response = match (tokio::fs::read(&path).await, &library.embedded) {
        (Ok(bytes), _) => Response::new(ResponseBody::full(bytes)),
        (Err(_), Some(embedded)) => embedded_response(index, embedded, request)?,
        (Err(_), None) => return Err(HttpError::NotFound),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Ok(response)
}

fn embedded_response(
    index: usize,
    embedded: &Embedded,
    request: &HeaderMap,
) -> Result<Response<ResponseBody>, HttpError> {
    let matches = list(request, header::IF_NONE_MATCH).any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.trim_start_matches("W/") == embedded.etag
    });
    let gzip = list(request, header::ACCEPT_ENCODING).any(|coding| {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            matches!(
                p.trim().replace(' ', "").as_str(),
                "q=0" | "q=0.0" | "q=0.00" | "q=0.000"
            )
        });
        name.eq_ignore_ascii_case("gzip") && !refused
    });
    let mut response = if matches {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else if gzip {
        let mut response = Response::new(ResponseBody::full(Bytes::from_static(embedded.gzip)));
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        let plain = PLAIN[index].get_or_init(|| {
            let mut bytes = Vec::new();
            flate2::read::GzDecoder::new(embedded.gzip)
                .read_to_end(&mut bytes)
                .ok()
                .map(|_| Bytes::from(bytes))
        });
        let plain = plain
            .clone()
            .ok_or(HttpError::Internal("the embedded library does not decompress"))?;
        Response::new(ResponseBody::full(plain))
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::ETAG, HeaderValue::from_static(embedded.etag));
    Ok(response)
}

/// The items of a comma-separated header, over all its lines.
fn list(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
}

fn text(body: String, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /ldash/` (HTML) or `GET /ldash/streams` (JSON): the live and recent streams, the newest
/// [`crate::live::STREAMS_LISTED`] of them. The JSON stays an array of streams; the headers
/// `X-Streams-Total` and `X-Streams-Listed` say how many there are and how many it lists (the page
/// says it in words).
pub(super) fn streams(app: &App, json: bool) -> Response<ResponseBody> {
    let StreamList { streams, total } = app.live.streams();
    let listed = streams.len();
    let mut response = if json {
        let body = serde_json::to_string_pretty(&streams).unwrap_or_else(|_| "[]".into());
        text(body, "application/json")
    } else {
        text(streams_page(&streams, total), "text/html; charset=utf-8")
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HeaderName::from_static("x-streams-total"), HeaderValue::from(total));
    headers.insert(HeaderName::from_static("x-streams-listed"), HeaderValue::from(listed));
    response
}

fn streams_page(streams: &[StreamSummary], total: usize) -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ldash streams</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:left}</style></head>\
         <body><h1>ldash: streams</h1><table><tr><th>manifest</th><th>state</th><th>last upload</th>\
         <th>segments kept</th><th>disk</th><th>representations</th><th>play</th></tr>",
    );
    for s in streams {
        let stem = s.manifest.strip_suffix(".mpd").unwrap_or(&s.manifest);
        let reps: Vec<String> = s
            .representations
            .iter()
            .map(|r| {
                let size = r.resolution.map(|(w, h)| format!(" {w}x{h}")).unwrap_or_default();
                let rate = r.bandwidth.map(|b| format!(" {} kbit/s", b / 1000)).unwrap_or_default();
                format!("{} ({}{size}{rate})", r.id, r.kind.as_deref().unwrap_or("?"))
            })
            .collect();
        html.push_str(&format!(
            "<tr><td>{m}</td><td>{state}</td><td>{last}</td><td>{kept}</td><td>{disk:.1} MB</td><td>{reps}</td>\
             <td><a href=\"/ldash/play/{stem}.mpd\">LL-DASH</a> · <a href=\"/ldash/play/{stem}.m3u8\">LL-HLS</a></td></tr>",
            m = html_escape(&s.manifest),
            state = s.state,
            last = html_escape(&s.last_upload),
            kept = html_escape(&match (&s.segments_from, &s.segments_to) {
                (Some(from), Some(to)) => format!("{from} to {to}"),
                _ => String::new(),
            }),
            disk = s.disk_bytes as f64 / 1e6,
            reps = html_escape(&reps.join(", ")),
            stem = html_escape(stem),
        ));
    }
    if streams.is_empty() {
        html.push_str("<tr><td colspan=\"7\">No stream yet: push one with ffmpeg (see the README).</td></tr>");
    }
    html.push_str("</table>");
    if total > streams.len() {
        html.push_str(&format!(
            "<p>The newest {} of {total} streams are listed.</p>",
            streams.len()
        ));
    }
    html.push_str("<p><a href=\"/ldash/streams\">as JSON</a></p></body></html>");
    html
}
