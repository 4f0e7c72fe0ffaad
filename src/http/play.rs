//! The player page (`GET /ldash/play/{path}`), its scripts (`/ldash/player/...`), and the stream list
//! (`GET /ldash/` as HTML, `GET /ldash/streams` as JSON). The page's sources live in player/ and are
//! built into the binary; dash.js and hls.js are served from player/node_modules when
//! `npm ci --prefix player` has installed them, else the page loads the same pinned versions from a
//! public CDN and says so.

use std::path::{Path, PathBuf};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::{App, HttpError, ResponseBody};

const PAGE: &str = include_str!("../../player/index.html");
const SCRIPT: &str = include_str!("../../player/ldash-player.js");
const PACKAGE: &str = include_str!("../../player/package.json");

/// The libraries the page can load, as (route name, file under node_modules, package name).
const LIBRARIES: [(&str, &str, &str); 2] = [
    ("dash.all.min.js", "dashjs/dist/modern/umd/dash.all.min.js", "dashjs"),
    ("hls.min.js", "hls.js/dist/hls.min.js", "hls.js"),
];

/// The pinned version of an npm package, from player/package.json.
fn pinned(package: &str) -> Option<&'static str> {
    let key = format!("\"{package}\": \"");
    let at = PACKAGE.find(&key)? + key.len();
    PACKAGE[at..].split('"').next()
}

fn library_url(player_dir: &Path, index: usize) -> (String, bool) {
    let (name, file, package) = LIBRARIES[index];
    if player_dir.join("node_modules").join(file).is_file() {
        return (format!("/ldash/player/{name}"), false);
    }
    let version = pinned(package).unwrap_or("latest");
    (format!("https://cdn.jsdelivr.net/npm/{package}@{version}/{}", file.split_once('/').map_or(file, |(_, f)| f)), true)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
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
    let (dash_lib, dash_cdn) = library_url(&app.player_dir, 0);
    let (hls_lib, hls_cdn) = library_url(&app.player_dir, 1);
    let body = PAGE
        .replace("{{TITLE}}", &html_escape(path))
        .replace("{{MANIFEST}}", &html_escape(&manifest))
        .replace("{{KIND}}", kind)
        .replace("{{DASH_PAGE}}", &html_escape(&format!("/ldash/play/{stem}.mpd")))
        .replace("{{HLS_PAGE}}", &html_escape(&format!("/ldash/play/{stem}.m3u8")))
        .replace("{{DASH_LIB}}", &html_escape(&dash_lib))
        .replace("{{HLS_LIB}}", &html_escape(&hls_lib))
        .replace("{{FROM_CDN}}", if dash_cdn || hls_cdn { "true" } else { "false" });
    Ok(text(body, "text/html; charset=utf-8"))
}

/// `/ldash/player/{name}`: the page's own script, or an installed library.
pub(super) async fn asset(app: &App, name: &str) -> Result<Response<ResponseBody>, HttpError> {
    if name == "ldash-player.js" {
        return Ok(text(SCRIPT.to_owned(), "text/javascript; charset=utf-8"));
    }
    let (_, file, _) = LIBRARIES.iter().find(|(route, _, _)| *route == name).ok_or(HttpError::NotFound)?;
    let path: PathBuf = app.player_dir.join("node_modules").join(file);
    let bytes = tokio::fs::read(&path).await.map_err(|_| HttpError::NotFound)?;
    let mut response = Response::new(ResponseBody::full(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Ok(response)
}

fn text(body: String, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
