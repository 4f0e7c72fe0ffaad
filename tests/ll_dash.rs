//! LL-DASH end to end with the real ffmpeg: an encoder pushes two video renditions and audio as CMAF
//! chunks; the server rewrites the MPD for low latency and serves segments while they grow.

mod common;

use std::time::Duration;

use common::encoder::{ffprobe_decodes, streaming, xmllint_validates, Ingest};
use common::Proto;
use ldash::store::EntryState;

/// The value of attribute `name` on the first `element` (attributes may be separated by any whitespace).
fn attr<'a>(xml: &'a str, element: &str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{element}"))?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let needle = format!("{name}=\"");
    let at = tag
        .match_indices(&needle)
        .find(|(i, _)| tag[..*i].ends_with(char::is_whitespace))?
        .0
        + needle.len();
    tag[at..].split('"').next()
}

async fn ll_dash_end_to_end(ingest: Ingest) {
    // Wait for the stream to be a few segments in: the store says when segment 6 starts.
    let segment = "live/chunk-stream0-00006.m4s";
    let Some((server, mut encoder)) = streaming(&["ffprobe", "xmllint"], ingest, 12, segment).await else {
        return;
    };
    let client = server.client_for(Proto::H2Tls).await;

    // The rewritten MPD: low-latency properties, and valid against the MPEG schema.
    let mpd = client.get("/ldash/download/live/stream.mpd").fetch().await;
    assert_eq!(mpd.status, 200);
    let mpd = mpd.text().await;
    xmllint_validates(mpd.as_bytes())
        .unwrap_or_else(|e| panic!("{ingest:?}: rewritten MPD fails the schema: {e}\n{mpd}"));
    assert_eq!(attr(&mpd, "MPD", "type"), Some("dynamic"), "{ingest:?}: live MPD");
    assert_eq!(
        attr(&mpd, "UTCTiming", "schemeIdUri"),
        Some("urn:mpeg:dash:utc:http-iso:2014"),
        "{mpd}"
    );
    let clock = attr(&mpd, "UTCTiming", "value").expect("UTCTiming value").to_owned();
    assert!(
        clock.starts_with("https://") && clock.ends_with("/ldash/time"),
        "UTCTiming points at ldash's clock: {clock}"
    );
    // Derived from the chunks observed: the test encoder's 0.2 s chunks (audio's AAC frames make
    // its longest chunk a little longer) give four chunks + 200 ms, about 1 s.
    let target: u64 = attr(&mpd, "Latency", "target")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{ingest:?}: a ServiceDescription latency: {mpd}"));
    assert!(
        (1000..=1100).contains(&target),
        "{ingest:?}: the latency target follows the 0.2 s chunks: {target} ms"
    );
    assert_eq!(
        attr(&mpd, "SegmentTemplate", "availabilityTimeComplete"),
        Some("false"),
        "{mpd}"
    );
    let ato: f64 = attr(&mpd, "SegmentTemplate", "availabilityTimeOffset")
        .and_then(|v| v.parse().ok())
        .expect("ATO");
    assert!(
        (ato - 0.8).abs() < 0.05,
        "{ingest:?}: ATO is segment minus chunk duration (0.8 s), got {ato}"
    );
    let mup = attr(&mpd, "MPD", "minimumUpdatePeriod").unwrap_or("");
    assert_ne!(mup, "PT500S", "{ingest:?}: ffmpeg's 500 s update period is repaired");
    let (_, raw) = client.get_text("/ldash/download/live/stream.mpd?raw=1").await;
    assert!(
        !raw.contains("UTCTiming"),
        "{ingest:?}: ?raw=1 returns the MPD as uploaded"
    );
    let clock = client.get("/ldash/time").fetch().await;
    assert_eq!(clock.status, 200);

    // The live edge: the next segment is requested before its upload starts (held, not 404), and its
    // first bytes arrive while the upload is still growing.
    let newest = (6..60u32)
        .take_while(|n| server.store.get(&format!("live/chunk-stream0-{n:05}.m4s")).is_some())
        .last()
        .expect("newest");
    let edge = format!("live/chunk-stream0-{:05}.m4s", newest + 1);
    let mut response = client.get(&format!("/ldash/download/{edge}")).fetch().await;
    assert_eq!(
        response.status, 200,
        "{ingest:?}: the next segment is held until its upload starts, not 404"
    );
    let first = response.chunk().await.expect("first bytes").expect("data");
    assert!(!first.is_empty());
    let state = server.store.get(&edge).map(|e| e.state());
    assert_eq!(
        state,
        Some(EntryState::Growing),
        "{ingest:?}: the first bytes of {edge} arrived before its upload completed"
    );
    let rest = response.bytes().await.expect("rest of the live edge");
    let edge_len = first.len() + rest.len();
    assert_eq!(
        edge_len as u64,
        server.store.get(&edge).expect("edge").len(),
        "{ingest:?}: the whole live-edge segment"
    );

    // Every segment in the window downloads and decodes with its init segment.
    for rep in 0..3 {
        let init = client
            .get_ok(&format!("/ldash/download/live/init-stream{rep}.m4s"))
            .await;
        for n in newest.saturating_sub(3)..=newest {
            let seg = client
                .get_ok(&format!("/ldash/download/live/chunk-stream{rep}-{n:05}.m4s"))
                .await;
            ffprobe_decodes(&init, &seg).unwrap_or_else(|e| panic!("{ingest:?}: rep {rep} segment {n}: {e}"));
        }
    }

    let mut mpd_events = server.store.subscribe();
    let status = tokio::time::timeout(Duration::from_secs(60), encoder.child.wait())
        .await
        .expect("ffmpeg ends")
        .expect("wait");
    let log = encoder.log().await;
    assert!(status.success(), "{ingest:?}: ffmpeg exits 0; its log:\n{log}");
    assert!(
        !log.contains("Broken pipe"),
        "{ingest:?}: the server never closed an ingest connection:\n{log}"
    );
    // Segments that left the window were deleted by ffmpeg and are gone.
    let gone = client.get("/ldash/download/live/chunk-stream0-00001.m4s").fetch().await;
    assert_eq!(
        gone.status, 404,
        "{ingest:?}: segment 1 left the window and was deleted"
    );
    // At exit ffmpeg writes a static MPD, which stays static and valid. Without persistent
    // connections ffmpeg does not wait for the answer, so the upload may still be in flight when it
    // exits: wait for it on the store's events.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, raw) = client.get_text("/ldash/download/live/stream.mpd?raw=1").await;
        if raw.contains("type=\"static\"") {
            break;
        }
        match tokio::time::timeout_at(deadline, mpd_events.recv()).await {
            Ok(Ok(ldash::store::StoreEvent::Started { path, entry })) if &*path == "live/stream.mpd" => {
                entry.wait_for_len(u64::MAX, Duration::from_secs(5)).await;
            }
            Ok(_) => {}
            Err(_) => panic!("{ingest:?}: no static MPD arrived after ffmpeg exited"),
        }
    }
    let last = client.get("/ldash/download/live/stream.mpd").fetch().await.text().await;
    assert_eq!(
        attr(&last, "MPD", "type"),
        Some("static"),
        "{ingest:?}: the final MPD is static: {last}"
    );
    xmllint_validates(last.as_bytes())
        .unwrap_or_else(|e| panic!("{ingest:?}: final MPD fails the schema: {e}\n{last}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_ll_dash_put_persistent() {
    ll_dash_end_to_end(Ingest::PutPersistent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_ll_dash_post_defaults() {
    ll_dash_end_to_end(Ingest::PostDefaults).await;
}
