//! The player page (`GET /ldash/play/{path}`), its scripts (`/ldash/player/...`), and the stream list
//! (`GET /ldash/` as HTML, `GET /ldash/streams` as JSON). The page's sources live in player/ and are
//! built into the binary; dash.js, hls.js and Shaka Player are served from player/node_modules when
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
const LIBRARIES: [(&str, &str, &str); 3] = [
    ("dash.all.min.js", "dashjs/dist/modern/umd/dash.all.min.js", "dashjs"),
    ("hls.min.js", "hls.js/dist/hls.min.js", "hls.js"),
    (
        "shaka-player.compiled.js",
        "shaka-player/dist/shaka-player.compiled.js",
        "shaka-player",
    ),
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
    (
        format!(
            "https://cdn.jsdelivr.net/npm/{package}@{version}/{}",
            file.split_once('/').map_or(file, |(_, f)| f)
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
    let (dash_lib, dash_cdn) = library_url(&app.player_dir, 0);
    let (hls_lib, hls_cdn) = library_url(&app.player_dir, 1);
    let (shaka_lib, shaka_cdn) = library_url(&app.player_dir, 2);
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

/// `/ldash/player/{name}`: the page's own script, or an installed library.
pub(super) async fn asset(app: &App, name: &str) -> Result<Response<ResponseBody>, HttpError> {
    if name == "ldash-player.js" {
        return Ok(text(SCRIPT.to_owned(), "text/javascript; charset=utf-8"));
    }
    let (_, file, _) = LIBRARIES
        .iter()
        .find(|(route, _, _)| *route == name)
        .ok_or(HttpError::NotFound)?;
    let path: PathBuf = app.player_dir.join("node_modules").join(file);
    let bytes = tokio::fs::read(&path).await.map_err(|_| HttpError::NotFound)?;
    let mut response = Response::new(ResponseBody::full(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
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

/// `GET /ldash/` (HTML) or `GET /ldash/streams` (JSON): the live and recent streams.
pub(super) fn streams(app: &App, json: bool) -> Response<ResponseBody> {
    let streams = app.live.streams();
    if json {
        let body = serde_json::to_string_pretty(&streams).unwrap_or_else(|_| "[]".into());
        let mut response = text(body, "application/json");
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ldash streams</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:left}</style></head>\
         <body><h1>ldash: streams</h1><table><tr><th>manifest</th><th>state</th><th>last upload</th>\
         <th>representations</th><th>play</th></tr>",
    );
    for s in &streams {
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
            "<tr><td>{m}</td><td>{state}</td><td>{last}</td><td>{reps}</td>\
             <td><a href=\"/ldash/play/{stem}.mpd\">LL-DASH</a> · <a href=\"/ldash/play/{stem}.m3u8\">LL-HLS</a></td></tr>",
            m = html_escape(&s.manifest),
            state = s.state,
            last = html_escape(&s.last_upload),
            reps = html_escape(&reps.join(", ")),
            stem = html_escape(stem),
        ));
    }
    if streams.is_empty() {
        html.push_str("<tr><td colspan=\"5\">No stream yet: push one with ffmpeg (see the README).</td></tr>");
    }
    html.push_str("</table><p><a href=\"/ldash/streams\">as JSON</a></p></body></html>");
    let mut response = text(html, "text/html; charset=utf-8");
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
