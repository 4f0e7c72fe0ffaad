//! The play page in a real browser with the real encoder: Debian's headless Chromium (driven by
//! playwright-core from the npm registry, no browser download) plays what ffmpeg pushes from the
//! clock source (ldash-clock: every frame carries its capture time), over HTTP/2 and over HTTP/3,
//! with dash.js and Shaka Player (LL-DASH) and hls.js and Shaka Player (LL-HLS). The page reads the
//! capture time back from the pixels: the glass-to-glass latencies are printed (`GLASS` lines),
//! never asserted, since the machines are shared; errors, failed playlist requests and stalls are
//! asserted. Screenshots go under target/browser/.

mod common;

use std::time::Duration;

use common::browser::{assert_plays, browser_driver, drive, screenshot};
use common::encoder::{clock_encoder, clock_ingest, MANIFEST};
use common::{require_tool, Proto, TestServer};
use ldash::store::StoreEvent;

/// Seconds the player gets to reach its steady latency before the measurement starts.
const WARMUP: u32 = 10;
/// Seconds of playback measured (the "at least 30 s").
const MEASURED: u32 = 30;

/// One browser run at a time: four encoders and four Chromiums at once starve a 2-core machine, and
/// the stalls measured would be the machine's, not the server's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One player on the play page: `engine` (dashjs, hlsjs, shaka) playing `kind` (dash, hls) of a
/// clock source with 0.1 s chunks, over HTTP/2 or HTTP/3. Prints the glass-to-glass latency read from
/// the frames beside the player's own figure; asserts no player error, no 4xx/5xx on a manifest or
/// playlist request, at most one stall in the 30 s measured, and that playback keeps up.
async fn play(engine: &str, kind: &str, h3: bool, ingest: Ingest) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (Some(ffmpeg), Some(driver)) = (require_tool("ffmpeg"), browser_driver()) else {
        return;
    };
    // No player folder: the page loads the libraries built into the binary.
    let server = TestServer::start_with(|c| c.player_dir = c.root.join("no-player-dir")).await;
    let seconds = WARMUP + MEASURED + 60;
    // Either way the stream is live/stream.mpd (and its playlists): written by ffmpeg's DASH muxer,
    // or packaged by ldash from the tracks ffmpeg posts into channel "live".
    let (encoder, third) = match ingest {
        Ingest::Dash => (
            clock_encoder(&ffmpeg, &server.url(Proto::H1, MANIFEST), seconds, 0.1),
            "live/chunk-stream0-00003.m4s",
        ),
        Ingest::Cmaf | Ingest::CmafReconnect => (
            clock_ingest(
                &ffmpeg,
                &server.url(Proto::H1, "/ldash/upload/live"),
                true,
                seconds,
                0.1,
            ),
            "live/chunk-video-00003.m4s",
        ),
    };
    server.upload_started(third, Duration::from_secs(20)).await;
    let port = server.https.port();
    let manifest = if kind == "hls" { "stream.m3u8" } else { "stream.mpd" };
    let page = format!("https://127.0.0.1:{port}/ldash/play/live/{manifest}?engine={engine}");
    let shot = screenshot(&format!("{engine}-{kind}-{}-{ingest:?}", if h3 { "h3" } else { "h2" }));
    let mut flags = Vec::new();
    if h3 {
        flags.push(format!("--origin-to-force-quic-on=127.0.0.1:{port}"));
        flags.push(format!("--ignore-certificate-errors-spki-list={}", server.spki));
    }
    let format = if kind == "hls" { "LL-HLS" } else { "LL-DASH" };
    let from = match ingest {
        Ingest::Dash => "",
        Ingest::Cmaf => " (CMAF ingest)",
        Ingest::CmafReconnect => " (CMAF ingest, encoder restarted mid-stream)",
    };
    let case = format!("{engine} {format}{from} over {}", if h3 { "HTTP/3" } else { "HTTP/2" });
    // The encoder is killed when the channel's segment 20 starts (about 7 s into the measurement)
    // and started again: its timeline starts at 0, the channel's is 20 s on, so the channel gets a
    // new Period (DASH) and a discontinuity (HLS), and the player has to go on through them.
    let reconnect = async {
        if !matches!(ingest, Ingest::CmafReconnect) {
            return encoder;
        }
        server
            .upload_started("live/chunk-video-00020.m4s", Duration::from_secs(40))
            .await;
        drop(encoder);
        let mut events = server.store.subscribe();
        let again = clock_ingest(
            &ffmpeg,
            &server.url(Proto::H1, "/ldash/upload/live"),
            true,
            seconds,
            0.1,
        );
        // The new run's first segment (numbered on from the newest of the first run).
        let new_run = |path: &str| path.starts_with("live/chunk-video-") && path.ends_with(".p1.m4s");
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(event) = events.recv().await {
                if matches!(&event, StoreEvent::Started { path, .. } if new_run(path)) {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{case}: no segment of a new Period within 20 s of the encoder's restart"));
        again
    };
    let (run, _encoder) = tokio::join!(
        drive(&driver, &page, (WARMUP, MEASURED), &shot, &flags, &case),
        reconnect
    );
    let s = &run.summary;
    let stalls = run.samples.last().map_or(0, |l| l.stalls);
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} s"));
    println!(
        "GLASS {case}: glass-to-glass p50 {} p95 {}, player's own figure p50 {}, stalls {stalls} in {MEASURED} s, \
         {} frames read ({} unreadable), playlist/manifest errors {}",
        secs(s.glass_p50),
        secs(s.glass_p95),
        secs(s.player_p50),
        s.glass_reads,
        s.glass_misses,
        run.failed.len()
    );
    // Going through a reconnect, the player waits once for the encoder to come back, and may
    // wait once more at the new Period's start.
    let stalls_allowed = match ingest {
        Ingest::CmafReconnect => 2,
        Ingest::Dash | Ingest::Cmaf => 1,
    };
    // Plays at about real speed: over the last 5 s, at least 4 s of media; 2 s when one of the
    // stalls allowed fell into those 5 s (a player still playing, not one that froze).
    let stalled_at_the_end = match (run.samples.last(), run.samples.iter().rev().nth(5)) {
        (Some(last), Some(before)) => last.stalls > before.stalls && last.stalls <= stalls_allowed,
        _ => false,
    };
    let last = assert_plays(&run, if stalled_at_the_end { 2.0 } else { 4.0 }, &case);
    assert!(
        run.failed.is_empty(),
        "{case}: manifest or playlist requests answered with an error: {:?}",
        run.failed
    );
    assert!(
        last.stalls <= stalls_allowed,
        "{case}: {} stalls in {MEASURED} s; the page's console:\n{}",
        last.stalls,
        run.console
            .iter()
            .rev()
            .take(40)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The measurement itself worked: most frames shown in 30 s (30 per second) were read.
    assert!(
        s.glass_reads >= 300,
        "{case}: only {} frames' capture times were read ({} unreadable): the glass-to-glass measurement failed",
        s.glass_reads,
        s.glass_misses
    );
    let expected = if h3 { "h3" } else { "h2" };
    assert_eq!(
        last.protocol.as_deref(),
        Some(expected),
        "{case}: segment requests use {expected}"
    );
}

/// How the stream gets into ldash.
#[derive(Debug, Clone, Copy)]
enum Ingest {
    /// ffmpeg's DASH muxer uploads segments and the MPD.
    Dash,
    /// ffmpeg posts each track as a CMAF ingest stream; ldash packages the channel.
    Cmaf,
    /// As `Cmaf`, and the encoder is killed and started again mid-stream (its timeline restarting
    /// at 0: a new Period and an HLS discontinuity).
    CmafReconnect,
}

/// One test per player, format, protocol and ingest, each named for what it proves.
macro_rules! plays {
    ($($name:ident: $engine:literal plays $kind:literal over h3 = $h3:literal from $ingest:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            play($engine, $kind, $h3, Ingest::$ingest).await;
        }
    )*};
}

plays! {
    dashjs_plays_ll_dash_over_http2: "dashjs" plays "dash" over h3 = false from Dash;
    hlsjs_plays_ll_hls_over_http2: "hlsjs" plays "hls" over h3 = false from Dash;
    shaka_plays_ll_dash_over_http2: "shaka" plays "dash" over h3 = false from Dash;
    shaka_plays_ll_hls_over_http2: "shaka" plays "hls" over h3 = false from Dash;
    dashjs_plays_ll_dash_over_http3: "dashjs" plays "dash" over h3 = true from Dash;
    hlsjs_plays_ll_hls_over_http3: "hlsjs" plays "hls" over h3 = true from Dash;
    shaka_plays_ll_dash_over_http3: "shaka" plays "dash" over h3 = true from Dash;
    shaka_plays_ll_hls_over_http3: "shaka" plays "hls" over h3 = true from Dash;
    dashjs_plays_a_packaged_channel_over_http2: "dashjs" plays "dash" over h3 = false from Cmaf;
    hlsjs_plays_a_packaged_channel_over_http3: "hlsjs" plays "hls" over h3 = true from Cmaf;
    shaka_plays_a_packaged_ll_dash_channel_over_http3: "shaka" plays "dash" over h3 = true from Cmaf;
    shaka_plays_a_packaged_ll_hls_channel_over_http2: "shaka" plays "hls" over h3 = false from Cmaf;
    dashjs_plays_a_packaged_channel_on_through_an_encoder_restart: "dashjs" plays "dash" over h3 = true from CmafReconnect;
    hlsjs_plays_a_packaged_channel_on_through_an_encoder_restart: "hlsjs" plays "hls" over h3 = false from CmafReconnect;
}
