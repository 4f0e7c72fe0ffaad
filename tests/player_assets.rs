//! The player libraries built into the binary (issue 13), over every HTTP version: the play page
//! points at ldash's own copies, each is the version pinned in player/package-lock.json, gzip as
//! built for clients that take it and plain for those that do not, with a strong ETag; and a copy
//! under `--player-dir`'s node_modules overrides the embedded one.

mod common;

use std::io::Read;

use common::{Proto, TestServer, ALL_PROTOS};

const LIBRARIES: [(&str, &str); 3] = [
    ("dash.all.min.js", "dashjs"),
    ("hls.min.js", "hls.js"),
    ("shaka-player.compiled.js", "shaka-player"),
];

fn pinned(package: &str) -> String {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/player/package-lock.json")).expect("lock");
    let lock: serde_json::Value = serde_json::from_str(&lock).expect("lock JSON");
    lock["packages"][format!("node_modules/{package}")]["version"]
        .as_str()
        .expect("pinned version")
        .to_owned()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .expect("valid gzip");
    plain
}

#[tokio::test]
async fn the_page_loads_the_embedded_libraries_over_every_protocol() {
    let server = TestServer::start_with(|c| c.player_dir = c.root.join("no-player-dir")).await;
    for proto in ALL_PROTOS {
        let client = server.client_for(proto).await;
        for manifest in ["live/stream.mpd", "live/stream.m3u8"] {
            let page = client.get(&format!("/ldash/play/{manifest}")).fetch().await;
            assert_eq!(page.status, 200, "{proto:?}");
            let html = page.text().await;
            for (route, _) in LIBRARIES {
                assert!(html.contains(&format!("/ldash/player/{route}")), "{proto:?}: {html}");
            }
            assert!(
                !html.contains("cdn.jsdelivr.net"),
                "{proto:?}: the page uses a CDN: {html}"
            );
            assert!(html.contains("fromCdn: false"), "{proto:?}: {html}");
        }
        for (route, package) in LIBRARIES {
            let version = pinned(package);
            let path = format!("/ldash/player/{route}");
            let zipped = client.get(&path).header("accept-encoding", "gzip, br").fetch().await;
            assert_eq!(zipped.status, 200, "{proto:?} {route}");
            assert_eq!(zipped.header("content-encoding"), "gzip", "{proto:?} {route}");
            assert_eq!(zipped.header("vary"), "accept-encoding", "{proto:?} {route}");
            assert!(
                zipped.header("content-type").starts_with("text/javascript"),
                "{proto:?} {route}"
            );
            let etag = zipped.header("etag").to_owned();
            assert!(
                etag.starts_with('"') && etag.len() > 2,
                "{proto:?} {route}: ETag {etag:?}"
            );
            let unzipped = gunzip(&zipped.bytes().await.expect("body"));

            let plain = client
                .get(&path)
                .header("accept-encoding", "identity, gzip;q=0")
                .fetch()
                .await;
            assert_eq!(plain.status, 200, "{proto:?} {route}");
            assert_eq!(plain.header("content-encoding"), "", "{proto:?} {route}");
            assert_eq!(
                plain.header("etag"),
                etag,
                "{proto:?} {route}: one ETag for both codings"
            );
            let plain = plain.bytes().await.expect("body");
            assert_eq!(
                plain.as_ref(),
                unzipped.as_slice(),
                "{proto:?} {route}: gzip and plain differ"
            );
            assert!(plain.len() > 100_000, "{proto:?} {route}: {} bytes", plain.len());
            let text = String::from_utf8_lossy(&plain);
            assert!(
                text.contains(&format!("{version}\"")),
                "{proto:?} {route}: not {package} {version}"
            );

            let again = client.get(&path).header("if-none-match", &etag).fetch().await;
            assert_eq!(again.status, 304, "{proto:?} {route}: a cached copy is revalidated");
        }
        let missing = client.get("/ldash/player/nothing.js").fetch().await;
        assert_eq!(missing.status, 404, "{proto:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_library_installed_under_the_player_dir_overrides_the_embedded_one() {
    let dir = tempfile::tempdir().expect("player folder");
    let file = dir.path().join("node_modules/hls.js/dist/hls.min.js");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("folders");
    std::fs::write(&file, "/* another hls.js */").expect("file");
    let player_dir = dir.path().to_owned();
    let server = TestServer::start_with(|c| c.player_dir = player_dir).await;
    let client = server.client_for(Proto::H2Tls).await;
    let hls = client.get("/ldash/player/hls.min.js").fetch().await;
    assert_eq!(hls.status, 200);
    assert_eq!(hls.text().await, "/* another hls.js */");
    // The others still come from the binary.
    let dash = client
        .get("/ldash/player/dash.all.min.js")
        .header("accept-encoding", "gzip")
        .fetch()
        .await;
    assert_eq!(dash.status, 200);
    assert_eq!(dash.header("content-encoding"), "gzip");
    server.stop().await;
}
