//! One binary: the play page works with nothing but the ldash binary (issue 13). The binary runs
//! from an empty folder (no player/, no node_modules: the player libraries must come from inside
//! it), in a network namespace of its own whose only interface is the loopback, with the encoder
//! and Debian's headless Chromium beside it. dash.js plays the LL-DASH page, hls.js and Shaka
//! Player the LL-HLS page, over HTTP/2 and HTTP/3; the test asserts that every library came from
//! ldash, that the page asked for nothing beyond the loopback, and that frames played.
//!
//! The outer test re-runs this test binary under `unshare --net` (root, util-linux and iproute2);
//! the inner one does the work there, on ldash's default ports, which nothing else in a fresh
//! namespace holds.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::browser::{browser_driver, drive};
use common::encoder::clock_encoder;
use common::require_tool;
use testkit::origin::{follow_log, ldash_command, read_announcement};

/// Set in the namespace: the inner test runs only there.
const INSIDE: &str = "LDASH_ONE_BINARY_NETNS";

#[test]
fn play_page_from_the_binary_alone_without_network() {
    if std::env::var_os(INSIDE).is_some() {
        return;
    }
    let tools = ["ffmpeg", "unshare", "ip"].map(require_tool);
    if tools.iter().any(Option::is_none) || browser_driver().is_none() {
        return;
    }
    let me = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(me)
        .args(["inner_offline_play", "--exact", "--ignored", "--nocapture"])
        .env(INSIDE, "1")
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    print!("{out}");
    eprint!("{err}");
    assert!(
        output.status.success(),
        "the run in a namespace with only the loopback failed ({}); if unshare itself was refused, this \
         test needs root (CAP_SYS_ADMIN) for a network namespace",
        output.status
    );
    assert!(out.contains("1 passed"), "the inner test did not run: {out}");
}

/// The work, inside the namespace (run by the outer test; ignored on its own).
#[tokio::test]
#[ignore = "run by play_page_from_the_binary_alone_without_network inside a network namespace"]
async fn inner_offline_play() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "runs only inside the outer test's network namespace (it takes ldash's default ports)"
    );
    let ffmpeg = require_tool("ffmpeg").expect("ffmpeg");
    let driver = browser_driver().expect("the browser driver");
    let empty = tempfile::tempdir().expect("an empty folder");
    // `ldash` with no argument in an empty folder: as a user runs `cargo run --release`.
    let mut command = ldash_command(env!("CARGO_BIN_EXE_ldash"));
    command.current_dir(empty.path()).env_remove("LDASH_PLAYER_DIR");
    let mut ldash = command.spawn().expect("ldash starts");
    let mut lines = follow_log(ldash.stdout.take().expect("ldash's log (standard output)"));
    let certs = empty.path().join("certs");
    let (origin, announced) = tokio::time::timeout(Duration::from_secs(30), read_announcement(&mut lines, &certs))
        .await
        .expect("ldash announces itself within 30 s")
        .expect("ldash keeps running");
    let libraries: Vec<&String> = announced.iter().filter(|l| l.contains("play page:")).collect();
    for line in &libraries {
        assert!(line.contains("embedded"), "a library is not built in: {line}");
    }
    assert_eq!(
        libraries.len(),
        3,
        "ldash names dash.js, hls.js and Shaka Player as embedded"
    );
    let spki = origin.spki;

    let seconds = 120;
    let _encoder = clock_encoder(
        &ffmpeg,
        "http://127.0.0.1:8080/ldash/upload/live/stream.mpd",
        seconds,
        0.1,
    );
    // The access log line of segment 3's upload: the stream has a few segments to play.
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.recv())
            .await
            .expect("ffmpeg uploads segment 3 within 30 s")
            .expect("ldash keeps running");
        if line.contains("PUT") && line.contains("chunk-stream0-00003.m4s") {
            break;
        }
    }
    // Log lines from here on are not needed (the kit keeps draining the pipe).
    drop(lines);

    for (engine, manifest, h3) in [
        ("dashjs", "stream.mpd", false),
        ("hlsjs", "stream.m3u8", true),
        ("shaka", "stream.m3u8", false),
    ] {
        let case = format!("{engine} {manifest} over {}", if h3 { "HTTP/3" } else { "HTTP/2" });
        let page = format!("https://127.0.0.1:8443/ldash/play/live/{manifest}?engine={engine}");
        let shot = empty.path().join(format!("{engine}.png"));
        let mut flags = Vec::new();
        if h3 {
            flags.push("--origin-to-force-quic-on=127.0.0.1:8443".to_owned());
            flags.push(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        // Asserts that the page asked for nothing beyond the loopback.
        let run = drive(&driver, &page, (3, 6), &shot, &flags, &case).await;
        let library = match engine {
            "dashjs" => "/ldash/player/dash.all.min.js",
            "hlsjs" => "/ldash/player/hls.min.js",
            _ => "/ldash/player/shaka-player.compiled.js",
        };
        assert!(
            run.libraries
                .iter()
                .any(|l| l.starts_with("200 https://127.0.0.1:8443") && l.ends_with(library)),
            "{case}: {library} did not come from ldash: {:?}",
            run.libraries
        );
        assert!(run.failed.is_empty(), "{case}: failed requests: {:?}", run.failed);
        let errors: Vec<&String> = run.samples.iter().filter_map(|s| s.error.as_ref()).collect();
        assert!(
            errors.is_empty(),
            "{case}: player errors: {errors:?}\n{:?}",
            run.console
        );
        // 6 s at 30 frames per second; a player that plays reads most of them.
        assert!(
            run.summary.glass_reads >= 60,
            "{case}: only {} frames played\n{:?}",
            run.summary.glass_reads,
            run.console
        );
        let protocol = run.samples.iter().rev().find_map(|s| s.protocol.clone());
        let expected = if h3 { "h3" } else { "h2" };
        assert_eq!(
            protocol.as_deref(),
            Some(expected),
            "{case}: the media came over {expected}"
        );
        println!(
            "OFFLINE {case}: {} frames, glass-to-glass p50 {:?} s, libraries {:?}",
            run.summary.glass_reads, run.summary.glass_p50, run.libraries
        );
    }
    let _ = ldash.start_kill();
}
