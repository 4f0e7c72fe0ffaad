//! Apple's Low-Latency HLS server profile (HLS draft -22 appendix B.1, its server rules of section
//! 6.2 and tags of 4.4, and Apple's HLS Authoring Specification) as a table of rules, each checked
//! from outside against what ldash serves: over HTTP/2 and HTTP/3, for both ingest paths (ffmpeg's
//! DASH muxer uploading live/stream.mpd, and ffmpeg's CMAF ingest packaged by ldash as ch1).
//!
//! One real ffmpeg per ingest path feeds one server; per path and protocol a "player" follows every
//! rendition's live edge with blocking reloads (`_HLS_msn`/`_HLS_part`, and `_HLS_skip=YES` now and
//! then) for a while, fetches each new part by its byte range, requests the preload hints with both
//! open Range forms, and samples every rendition at once; then it makes the active probes (too far
//! ahead, `_HLS_msn` alone, delta against full, unknown resources, segments read for their media
//! time). The timing rules use the store as the reference clock: a recorder follows every segment
//! upload and notes when each byte arrived, so "when was this part complete at the server" is
//! known, not guessed. Every rule is one row judged against everything observed; the test prints
//! the measurements and the table ("rule | source | HTTP/2 | HTTP/3 | DASH ingest | CMAF ingest")
//! and fails listing every failed rule, with its evidence, last. docs/apple-ll-hls-profile.md is
//! the same table with what ldash does.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::client::Client;
use common::encoder::{Encoder, Ingest};
use common::hls_check::{body_text, first_decode_time, max_age, media_uris, parse_media, timescale, MediaPlaylist};
use common::{require_tool, Proto, TestServer};
use ldash::store::StoreEvent;
use testkit::encoder::CmafIngest;
use tokio::sync::Mutex;

/// How long each player follows the live edge.
const FOLLOW: Duration = Duration::from_secs(10);
/// A bound on any one request (a blocking reload is held at most three target durations).
const REQUEST_BOUND: Duration = Duration::from_secs(6);
/// The protocols of Apple's profile: playlists and media over HTTP/2 or HTTP/3.
const PROTOS: [Proto; 2] = [Proto::H2Tls, Proto::H3];
/// The last byte position RFC 8673 recommends for a hint without BYTERANGE-LENGTH (2^53 - 1).
const RFC8673_END: u64 = 9_007_199_254_740_991;

/// When each stored segment had how many bytes: path -> (bytes so far, instant), as appended.
type Arrivals = Arc<std::sync::Mutex<HashMap<String, Vec<(u64, Instant)>>>>;

/// Follows every segment upload of `server`'s store from now on, recording when its bytes arrived:
/// the reference clock for when a part was complete at the server.
fn record_arrivals(server: &TestServer) -> (Arrivals, tokio::task::JoinHandle<()>) {
    let arrivals = Arrivals::default();
    let mut events = server.store.subscribe();
    let recorded = arrivals.clone();
    let task = tokio::spawn(async move {
        loop {
            let (path, entry) = match events.recv().await {
                Ok(StoreEvent::Started { path, entry }) if path.ends_with(".m4s") => (path, entry),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut reader = entry.reader(0, None);
                let mut total = 0;
                while let Some(Ok((chunk, appended))) = reader.next_timed().await {
                    total += chunk.len() as u64;
                    let at = appended.unwrap_or_else(Instant::now);
                    if let Ok(mut arrivals) = recorded.lock() {
                        arrivals.entry(path.to_string()).or_default().push((total, at));
                    }
                }
            });
        }
    });
    (arrivals, task)
}

/// The two ways a stream gets into ldash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IngestPath {
    /// ffmpeg's DASH muxer uploading live/stream.mpd and its segments.
    Dash,
    /// ffmpeg posting CMAF tracks to ch1, packaged by ldash.
    Cmaf,
}

impl IngestPath {
    fn label(self) -> &'static str {
        match self {
            IngestPath::Dash => "DASH ingest",
            IngestPath::Cmaf => "CMAF ingest",
        }
    }
    /// Where its playlists and segments are served from.
    fn base(self) -> &'static str {
        match self {
            IngestPath::Dash => "/ldash/download/live/",
            IngestPath::Cmaf => "/ldash/download/ch1/",
        }
    }
}

/// One playlist request and what came back.
#[derive(Debug, Clone)]
struct Reload {
    /// Index into the session's renditions (usize::MAX for the multivariant playlist).
    rendition: usize,
    route: String,
    /// `_HLS_msn` and `_HLS_part` asked for.
    wanted: Option<(u64, Option<u64>)>,
    skip: bool,
    status: u16,
    version: Option<http::Version>,
    cache: String,
    encoding: String,
    priority: String,
    /// Sent this long after the session started.
    at: Duration,
    /// Answered (body complete) this long after it was sent.
    took: Duration,
    text: String,
    /// The playlist, when the answer was 200 and readable.
    playlist: Option<MediaPlaylist>,
    /// Why there is no playlist.
    error: Option<String>,
}

impl Reload {
    /// When the answer was complete, since the session started.
    fn answered(&self) -> Duration {
        self.at + self.took
    }
    fn blocking(&self) -> bool {
        self.wanted.is_some()
    }
    /// The playlist's lines around `needle` (the first line containing it), for evidence.
    fn around(&self, needle: &str) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let at = lines.iter().position(|l| l.contains(needle)).unwrap_or(0);
        let from = at.saturating_sub(3);
        let to = (at + 3).min(lines.len());
        lines[from..to].join("\n    ")
    }
}

/// A request for a preload hint.
#[derive(Debug, Clone)]
struct HintProbe {
    /// "bytes=N-9007199254740991" or "bytes=N-".
    form: &'static str,
    route: String,
    range: String,
    /// The body as it arrived: (bytes so far, instant), for a while after its first byte.
    chunks: Vec<(u64, Instant)>,
    uri: String,
    start: u64,
    hint_line: String,
    status: u16,
    content_range: String,
    cache: String,
    /// Its first body byte arrived this long after it was sent.
    first_byte: Option<Duration>,
    error: Option<String>,
}

/// A closed Range request for a listed part.
#[derive(Debug, Clone)]
struct PartProbe {
    uri: String,
    offset: u64,
    len: u64,
    status: u16,
    version: Option<http::Version>,
    content_range: String,
    cache: String,
    priority: String,
    body: Result<Bytes, String>,
}

/// A whole segment, fetched once a playlist listed it complete.
#[derive(Debug, Clone)]
struct WholeProbe {
    uri: String,
    status: u16,
    cache: String,
    body: Result<Bytes, String>,
}

/// Everything one player observed of one stream over one protocol.
struct Session {
    path: IngestPath,
    proto: Proto,
    /// The server's --part-target-ms (0: a part per CMAF chunk).
    part_target_ms: u64,
    /// When the session started (`Reload::at` counts from it).
    t0: Instant,
    /// When the store had each segment's bytes.
    arrivals: Arrivals,
    multivariant: Reload,
    renditions: Vec<String>,
    /// The followers' reloads, each rendition's in order.
    reloads: Vec<Reload>,
    /// Every rendition fetched at once, now and then.
    samples: Vec<Vec<Reload>>,
    hints: Vec<HintProbe>,
    parts: Vec<PartProbe>,
    wholes: Vec<WholeProbe>,
    /// `_HLS_msn` three past the last segment (tries).
    too_far: Vec<Reload>,
    /// `_HLS_part` without `_HLS_msn`.
    no_msn: Option<Reload>,
    /// `_HLS_msn` of the growing segment without `_HLS_part`.
    msn_only: Option<Reload>,
    /// A full playlist and a delta update of the same moment.
    delta_pairs: Vec<(Reload, Reload)>,
    /// A playlist and a segment that do not exist.
    missing: Vec<Reload>,
    /// Complete segments read whole: (rendition, msn, PROGRAM-DATE-TIME, media start in seconds or
    /// why not).
    media_times: Vec<(usize, u64, String, Result<f64, String>)>,
}

impl Session {
    fn label(&self) -> String {
        let parts = match self.part_target_ms {
            0 => String::new(),
            ms => format!(", --part-target-ms {ms}"),
        };
        format!("{} over {}{parts}", self.path.label(), self.proto.label())
    }

    /// Every media playlist answered 200 and read: the followers', the samples' and the probes'.
    fn playlists(&self) -> impl Iterator<Item = (&Reload, &MediaPlaylist)> {
        let probes = self
            .delta_pairs
            .iter()
            .flat_map(|(a, b)| [a, b])
            .chain(self.msn_only.iter());
        self.reloads
            .iter()
            .chain(self.samples.iter().flatten())
            .chain(probes)
            .filter_map(|r| r.playlist.as_ref().map(|p| (r, p)))
    }

    /// Every playlist response (multivariant too, any status).
    fn responses(&self) -> impl Iterator<Item = &Reload> {
        std::iter::once(&self.multivariant)
            .chain(self.reloads.iter())
            .chain(self.samples.iter().flatten())
    }

    /// The first PART-TARGET seen (the rules compare the others with it).
    /// When the store held `uri` (a segment of this stream) up to byte `end`.
    fn stored(&self, uri: &str, end: u64) -> Option<Instant> {
        let folder = self.path.base().trim_start_matches("/ldash/download/");
        let arrivals = self.arrivals.lock().ok()?;
        let times = arrivals.get(&format!("{folder}{uri}"))?;
        times.iter().find(|(n, _)| *n >= end).map(|a| a.1)
    }

    /// The parts of segment `uri` as the playlists listed them: (offset, length), in order.
    fn part_bounds(&self, uri: &str) -> Vec<(u64, u64)> {
        let mut bounds = std::collections::BTreeSet::new();
        for (_, p) in self.playlists() {
            for seg in p.segments.iter().filter(|seg| seg.uri == uri) {
                let mut end = 0;
                for part in &seg.parts {
                    if let Some((len, offset)) = part.range {
                        let offset = offset.unwrap_or(end);
                        end = offset + len;
                        bounds.insert((offset, len));
                    }
                }
            }
        }
        bounds.into_iter().collect()
    }

    fn part_target(&self) -> Option<f64> {
        self.playlists().find_map(|(_, p)| p.part_target)
    }

    fn target_duration(&self) -> Option<u64> {
        self.playlists().find_map(|(_, p)| p.target_duration)
    }
}

/// A rule's verdict on one session.
#[derive(Debug, Clone)]
enum Verdict {
    /// Kept; what was measured.
    Pass(String),
    /// Broken; the evidence.
    Fail(String),
    /// Nothing to judge; why.
    NotApplicable(String),
}

impl Verdict {
    /// A judgement over all the values at once: "1 of n" reads wrong there.
    fn count_as_one(self) -> Verdict {
        match self {
            Verdict::Fail(m) => Verdict::Fail(m.replacen("1 of ", "over ", 1)),
            other => other,
        }
    }
}

/// One row of the profile.
struct Rule {
    id: &'static str,
    source: &'static str,
    /// What it asks, in a few words.
    text: &'static str,
    check: fn(&Session) -> Verdict,
}

/// Judges `check` on every media playlist of the session.
fn each_playlist(s: &Session, check: impl Fn(&Reload, &MediaPlaylist) -> Result<(), String>) -> Verdict {
    let mut bad = Vec::new();
    let mut count = 0;
    for (reload, playlist) in s.playlists() {
        count += 1;
        if let Err(why) = check(reload, playlist) {
            bad.push(format!("{} (sent at {:.2?}): {why}", reload.route, reload.at));
        }
    }
    verdict(count, "playlists", bad)
}

fn verdict(count: usize, what: &str, bad: Vec<String>) -> Verdict {
    if count == 0 {
        return Verdict::NotApplicable(format!("no {what} observed"));
    }
    if bad.is_empty() {
        return Verdict::Pass(format!("{count} {what}"));
    }
    let shown: Vec<&String> = bad.iter().take(2).collect();
    Verdict::Fail(format!(
        "{} of {count} {what}; first: {}",
        bad.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  and: ")
    ))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// "p50 x, p95 y, max z" of durations.
fn spread(mut values: Vec<Duration>) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values.sort();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {}, p95 {}, max {} (n={})",
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0)),
        values.len()
    )
}

// ---------------------------------------------------------------------------------------------
// The rules.

fn http2_or_3(s: &Session) -> Verdict {
    let expected = s.proto.version();
    let mut bad = Vec::new();
    let mut count = 0;
    for r in s.responses().filter(|r| r.version.is_some()) {
        count += 1;
        if r.version != Some(expected) {
            bad.push(format!("{} came over {:?}", r.route, r.version));
        }
    }
    for p in &s.parts {
        count += 1;
        if p.version != Some(expected) {
            bad.push(format!("part {}@{} came over {:?}", p.uri, p.offset, p.version));
        }
    }
    verdict(count, "playlist and part responses", bad)
}

fn gzip(s: &Session) -> Verdict {
    let mut bad = Vec::new();
    let mut count = 0;
    for r in s.responses().filter(|r| r.status == 200) {
        count += 1;
        if !r.encoding.eq_ignore_ascii_case("gzip") {
            bad.push(format!(
                "{} asked with Accept-Encoding: gzip, answered Content-Encoding {:?}",
                r.route, r.encoding
            ));
        }
    }
    verdict(count, "playlists asked with gzip", bad)
}

fn version(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        let [version] = p.versions[..] else {
            return Err(format!("{} EXT-X-VERSION tags", p.versions.len()));
        };
        let has_map = p.segments.iter().any(|seg| seg.map.is_some()) || p.segments.is_empty();
        if has_map && version < 6 {
            return Err(format!("EXT-X-VERSION:{version} with EXT-X-MAP (needs 6)"));
        }
        if p.skipped.is_some() && version < 9 {
            return Err(format!("EXT-X-VERSION:{version} with EXT-X-SKIP (needs 9)"));
        }
        Ok(())
    })
}

fn target_duration(s: &Session) -> Verdict {
    let Some(first) = s.target_duration() else {
        return Verdict::Fail("no EXT-X-TARGETDURATION".into());
    };
    each_playlist(s, |_, p| match p.target_duration {
        None => Err("no EXT-X-TARGETDURATION".into()),
        Some(0) => Err("EXT-X-TARGETDURATION:0".into()),
        Some(td) if td != first => Err(format!(
            "EXT-X-TARGETDURATION:{td}, elsewhere {first} (every rendition and reload the same)"
        )),
        Some(_) => Ok(()),
    })
}

fn extinf(s: &Session) -> Verdict {
    let mut longest: f64 = 0.0;
    let v = each_playlist(s, |r, p| {
        let td = p.target_duration.unwrap_or(0) as f64;
        for seg in &p.segments {
            let Some(d) = seg.extinf else { continue };
            if d.round() > td {
                return Err(format!(
                    "EXTINF {d} rounds above TARGETDURATION {td}:\n    {}",
                    r.around(&seg.uri)
                ));
            }
        }
        Ok(())
    });
    for (_, p) in s.playlists() {
        for seg in &p.segments {
            longest = longest.max(seg.extinf.unwrap_or(0.0));
        }
    }
    with_note(v, format!("longest EXTINF {longest:.3} s"))
}

fn with_note(v: Verdict, note: String) -> Verdict {
    match v {
        Verdict::Pass(m) => Verdict::Pass(format!("{m}; {note}")),
        Verdict::Fail(m) => Verdict::Fail(format!("{m}\n  ({note})")),
        other => other,
    }
}

fn can_block_reload(s: &Session) -> Verdict {
    each_playlist(s, |_, p| match p.control("CAN-BLOCK-RELOAD") {
        Some("YES") => Ok(()),
        _ => Err(format!("EXT-X-SERVER-CONTROL:{:?}", p.server_control)),
    })
}

fn part_hold_back(s: &Session, times: f64) -> Verdict {
    each_playlist(s, |_, p| {
        let (Some(phb), Some(pt)) = (p.control_seconds("PART-HOLD-BACK"), p.part_target) else {
            return Err(format!(
                "PART-HOLD-BACK {:?} with PART-TARGET {:?}",
                p.control("PART-HOLD-BACK"),
                p.part_target
            ));
        };
        if phb + 1e-6 < times * pt {
            return Err(format!("PART-HOLD-BACK={phb} < {times} x PART-TARGET {pt}"));
        }
        Ok(())
    })
}

fn part_hold_back_2x(s: &Session) -> Verdict {
    part_hold_back(s, 2.0)
}

fn part_hold_back_3x(s: &Session) -> Verdict {
    part_hold_back(s, 3.0)
}

fn can_skip_until(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        let td = p.target_duration.unwrap_or(0) as f64;
        match p.control_seconds("CAN-SKIP-UNTIL") {
            Some(until) if until + 1e-6 < 6.0 * td => Err(format!("CAN-SKIP-UNTIL={until} < 6 x {td}")),
            _ => Ok(()),
        }
    })
}

fn hold_back(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        let td = p.target_duration.unwrap_or(0) as f64;
        match p.control_seconds("HOLD-BACK") {
            Some(hb) if hb + 1e-6 < 3.0 * td => Err(format!("HOLD-BACK={hb} < 3 x {td}")),
            _ => Ok(()),
        }
    })
}

fn server_control_identical(s: &Session) -> Verdict {
    let Some(first) = s.playlists().find_map(|(_, p)| p.server_control.clone()) else {
        return Verdict::Fail("no EXT-X-SERVER-CONTROL".into());
    };
    let v = each_playlist(s, |_, p| match &p.server_control {
        Some(c) if *c == first => Ok(()),
        other => Err(format!("EXT-X-SERVER-CONTROL:{other:?}, elsewhere {first}")),
    });
    with_note(v, format!("EXT-X-SERVER-CONTROL:{first}"))
}

fn part_target_steady(s: &Session) -> Verdict {
    let mut firsts: Vec<Option<f64>> = vec![None; s.renditions.len()];
    let mut bad = Vec::new();
    let mut count = 0;
    for (r, p) in s.playlists() {
        count += 1;
        let Some(first) = firsts.get_mut(r.rendition) else {
            continue;
        };
        match (p.part_target, *first) {
            (None, _) if !p.segments.iter().any(|seg| !seg.parts.is_empty()) => {}
            (None, _) => bad.push(format!("{}: EXT-X-PART without EXT-X-PART-INF", r.route)),
            (Some(t), None) => *first = Some(t),
            (Some(t), Some(f)) if (t - f).abs() > 1e-9 => {
                bad.push(format!("{} at {:.2?}: PART-TARGET={t}, before {f}", r.route, r.at))
            }
            _ => {}
        }
    }
    let seen: Vec<String> = firsts.iter().flatten().map(|t| format!("{t}")).collect();
    with_note(
        verdict(count, "playlists", bad),
        format!("PART-TARGET per rendition {}", seen.join(", ")),
    )
}

fn part_max(s: &Session) -> Verdict {
    let mut longest: f64 = 0.0;
    for (_, p) in s.playlists() {
        for seg in &p.segments {
            for part in &seg.parts {
                longest = longest.max(part.duration);
            }
        }
    }
    let v = each_playlist(s, |_, p| {
        let pt = p.part_target.unwrap_or(0.0);
        for seg in &p.segments {
            if let Some(part) = seg.parts.iter().find(|part| part.duration > pt + 1e-6) {
                return Err(format!("PART-TARGET {pt}:\n    {}", part.line));
            }
        }
        Ok(())
    });
    with_note(v, format!("longest part {longest:.3} s"))
}

fn part_min(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        let pt = p.part_target.unwrap_or(0.0);
        for seg in &p.segments {
            // The last listed part of a segment may be its final one (judged once more are listed).
            for part in seg.parts.iter().rev().skip(1) {
                if !part.independent && part.duration + 1e-6 < 0.85 * pt {
                    return Err(format!(
                        "under 85% of PART-TARGET {pt}, neither INDEPENDENT nor last:\n    {}",
                        part.line
                    ));
                }
            }
        }
        Ok(())
    })
}

fn byterange_contiguous(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        for seg in &p.segments {
            let mut end = 0;
            for part in &seg.parts {
                let Some((len, offset)) = part.range else {
                    return Err(format!("a part without BYTERANGE:\n    {}", part.line));
                };
                let offset = offset.unwrap_or(end);
                if offset != end {
                    return Err(format!(
                        "a part at {offset}, the one before ended at {end}:\n    {}",
                        part.line
                    ));
                }
                end = offset + len;
            }
        }
        Ok(())
    })
}

fn parts_steady(s: &Session) -> Verdict {
    // Each rendition's segments as the followers saw them: a later reload extends the parts listed
    // before, never renumbers, moves or drops them while the segment is at the edge.
    let mut bad = Vec::new();
    let mut count = 0;
    for rendition in 0..s.renditions.len() {
        let mut seen: std::collections::HashMap<u64, (String, Vec<String>)> = Default::default();
        for r in s.reloads.iter().filter(|r| r.rendition == rendition) {
            let Some(p) = &r.playlist else { continue };
            count += 1;
            for seg in &p.segments {
                let lines: Vec<String> = seg.parts.iter().map(|part| part.line.clone()).collect();
                if let Some((uri, before)) = seen.get(&seg.msn) {
                    if *uri != seg.uri {
                        bad.push(format!("{}: segment {} is {}, before {uri}", r.route, seg.msn, seg.uri));
                    } else if !lines.is_empty() && !lines.starts_with(before) {
                        bad.push(format!(
                            "{}: segment {}'s parts changed:\n    before {before:?}\n    now    {lines:?}",
                            r.route, seg.msn
                        ));
                    }
                }
                if !lines.is_empty() || !seen.contains_key(&seg.msn) {
                    seen.insert(seg.msn, (seg.uri.clone(), lines));
                }
            }
        }
    }
    verdict(count, "reloads", bad)
}

fn media_sequence(s: &Session) -> Verdict {
    let mut bad = Vec::new();
    let mut count = 0;
    for rendition in 0..s.renditions.len() {
        let mut last = 0;
        for r in s.reloads.iter().filter(|r| r.rendition == rendition) {
            let Some(p) = &r.playlist else { continue };
            count += 1;
            let Some(seq) = p.media_sequence else {
                bad.push(format!("{}: no EXT-X-MEDIA-SEQUENCE", r.route));
                continue;
            };
            if seq < last {
                bad.push(format!(
                    "{}: EXT-X-MEDIA-SEQUENCE went back from {last} to {seq}",
                    r.route
                ));
            }
            last = seq;
        }
    }
    verdict(count, "reloads", bad)
}

fn tag_order(s: &Session, pick: fn(&str) -> bool) -> Verdict {
    each_playlist(s, |_, p| match p.order.iter().find(|o| pick(o)) {
        Some(o) => Err(o.clone()),
        None => Ok(()),
    })
}

fn order_parent_tags(s: &Session) -> Verdict {
    tag_order(s, |o| o.contains("after its first EXT-X-PART"))
}

fn order_parts_extinf(s: &Session) -> Verdict {
    tag_order(s, |o| {
        o.contains("after its segment's EXTINF") || o.contains("another URI") || o.contains("two segments")
    })
}

fn order_skip(s: &Session) -> Verdict {
    tag_order(s, |o| o.contains("EXT-X-SKIP"))
}

fn no_playlist_type(s: &Session) -> Verdict {
    each_playlist(s, |_, p| match &p.playlist_type {
        Some(t) => Err(format!("EXT-X-PLAYLIST-TYPE:{t} in a live playlist")),
        None => Ok(()),
    })
}

fn program_date_time(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        if !p.segments.iter().any(|seg| seg.pdt.is_some()) {
            return Err("no EXT-X-PROGRAM-DATE-TIME".into());
        }
        Ok(())
    })
}

fn six_segments(s: &Session) -> Verdict {
    // The newest full playlist of each rendition, once the stream has run longer than six segments.
    let mut bad = Vec::new();
    let mut counts = Vec::new();
    for rendition in 0..s.renditions.len() {
        let newest = s
            .reloads
            .iter()
            .filter(|r| r.rendition == rendition && !r.skip)
            .filter_map(|r| r.playlist.as_ref().map(|p| (r, p)))
            .next_back();
        let Some((r, p)) = newest else { continue };
        let newest_msn = p.segments.last().map_or(0, |seg| seg.msn);
        let complete = p.segments.iter().filter(|seg| seg.extinf.is_some()).count();
        counts.push(format!("{complete}"));
        // Segment numbers start at 1 for both encoders: by segment 8 six are surely complete.
        if newest_msn >= 8 && complete < 6 {
            bad.push(format!(
                "{}: {complete} complete segments (MEDIA-SEQUENCE {:?}, newest segment {newest_msn})",
                r.route, p.media_sequence
            ));
        }
    }
    with_note(
        verdict(counts.len(), "renditions", bad),
        format!("complete segments listed at the end: {}", counts.join(", ")),
    )
}

fn independent_segments(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        for seg in p
            .segments
            .iter()
            .filter(|seg| seg.extinf.is_some() && !seg.parts.is_empty())
        {
            if !seg.parts.iter().any(|part| part.independent) {
                return Err(format!("segment {} ({}) has no INDEPENDENT=YES part", seg.msn, seg.uri));
            }
        }
        Ok(())
    })
}

fn rendition_reports(s: &Session) -> Verdict {
    each_playlist(s, |r, p| {
        if p.endlist {
            return Ok(());
        }
        let own = s.renditions.get(r.rendition).cloned().unwrap_or_default();
        for other in s.renditions.iter().filter(|u| **u != own) {
            let n = p.reports.iter().filter(|rep| rep.uri == *other).count();
            if n != 1 {
                return Err(format!("{n} EXT-X-RENDITION-REPORT for {other}"));
            }
        }
        if let Some(rep) = p.reports.iter().find(|rep| rep.uri == own) {
            return Err(format!("a report of itself: {rep:?}"));
        }
        if let Some(rep) = p.reports.iter().find(|rep| rep.last_msn.is_none()) {
            return Err(format!("a report without LAST-MSN: {rep:?}"));
        }
        let with_parts = p.segments.iter().any(|seg| !seg.parts.is_empty());
        if let Some(rep) = p.reports.iter().find(|rep| with_parts && rep.last_part.is_none()) {
            return Err(format!("a report without LAST-PART: {rep:?}"));
        }
        Ok(())
    })
}

/// The wall-clock time a playlist's newest listed media ends at (PDT + duration so far).
fn edge_time(p: &MediaPlaylist) -> Option<SystemTime> {
    let last = p.segments.last()?;
    let pdt = humantime::parse_rfc3339(last.pdt.as_deref()?).ok()?;
    Some(pdt + Duration::from_secs_f64(last.duration()))
}

/// The wall-clock time part `part` of segment `msn` ends at, if `p` lists it.
fn part_end_time(p: &MediaPlaylist, msn: u64, part: u64) -> Option<SystemTime> {
    let seg = p.segment(msn)?;
    let pdt = humantime::parse_rfc3339(seg.pdt.as_deref()?).ok()?;
    let parts = seg.parts.get(..=part as usize)?;
    Some(pdt + Duration::from_secs_f64(parts.iter().map(|x| x.duration).sum()))
}

fn signed_gap(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn renditions_in_sync(s: &Session) -> Verdict {
    let pt = s.part_target().unwrap_or(0.0);
    let mut worst: f64 = 0.0;
    let mut bad = Vec::new();
    let mut count = 0;
    for sample in &s.samples {
        let edges: Vec<(usize, SystemTime)> = sample
            .iter()
            .filter_map(|r| Some((r.rendition, edge_time(r.playlist.as_ref()?)?)))
            .collect();
        if edges.len() < 2 || edges.len() != s.renditions.len() {
            continue;
        }
        count += 1;
        // The renditions were fetched at once, but not at one instant: that window is allowed too.
        let window = sample.iter().map(|r| r.answered()).max().unwrap_or_default()
            - sample.iter().map(|r| r.at).min().unwrap_or_default();
        let newest = edges.iter().map(|e| e.1).max().unwrap_or(SystemTime::UNIX_EPOCH);
        let oldest = edges.iter().map(|e| e.1).min().unwrap_or(SystemTime::UNIX_EPOCH);
        let gap = signed_gap(newest, oldest);
        worst = worst.max(gap);
        if gap > pt + window.as_secs_f64() + 1e-3 {
            let detail: Vec<String> = sample
                .iter()
                .map(|r| {
                    let last = r.playlist.as_ref().and_then(|p| p.segments.last());
                    format!(
                        "\n    {} edge {:?} ends {:+.3} s: segment {} PDT {} parts {:?}",
                        s.renditions.get(r.rendition).map_or("?", |u| u.as_str()),
                        r.playlist.as_ref().and_then(|p| p.edge()),
                        r.playlist
                            .as_ref()
                            .and_then(edge_time)
                            .map_or(f64::NAN, |t| signed_gap(t, oldest)),
                        last.map_or(0, |seg| seg.msn),
                        last.and_then(|seg| seg.pdt.as_deref()).unwrap_or("-"),
                        last.map(|seg| seg.parts.iter().map(|p| p.duration).collect::<Vec<_>>())
                    )
                })
                .collect();
            bad.push(format!(
                "at {:.2?}: edges {gap:.3} s apart (PART-TARGET {pt}, fetched within {}): {}",
                sample[0].at,
                ms(window),
                detail.join("; ")
            ));
        }
    }
    with_note(
        verdict(count, "samples of every rendition at once", bad),
        format!("widest spread of the renditions' edges {:.0} ms", worst * 1000.0),
    )
}

fn reports_current(s: &Session) -> Verdict {
    // A report is as up to date as its playlist: the part it names ends within one part target of
    // the reported rendition's own edge fetched at the same moment.
    let pt = s.part_target().unwrap_or(0.0);
    let mut bad = Vec::new();
    let mut count = 0;
    let mut worst: f64 = 0.0;
    for sample in &s.samples {
        for r in sample {
            let Some(p) = &r.playlist else { continue };
            for rep in &p.reports {
                let Some(j) = s.renditions.iter().position(|u| *u == rep.uri) else {
                    bad.push(format!(
                        "{}: a report of {}, not in the multivariant playlist",
                        r.route, rep.uri
                    ));
                    continue;
                };
                let Some(other) = sample
                    .iter()
                    .find(|x| x.rendition == j)
                    .and_then(|x| x.playlist.as_ref())
                else {
                    continue;
                };
                let (Some(msn), Some(edge)) = (rep.last_msn, edge_time(other)) else {
                    continue;
                };
                let reported = match rep.last_part {
                    Some(part) => part_end_time(other, msn, part),
                    None => other.segment(msn).and_then(|seg| {
                        let pdt = humantime::parse_rfc3339(seg.pdt.as_deref()?).ok()?;
                        Some(pdt + Duration::from_secs_f64(seg.duration()))
                    }),
                };
                count += 1;
                let Some(reported) = reported else {
                    // Not listed by the other playlist (fetched a moment earlier): at most one part ahead.
                    let next = other.edge().map(|(m, p)| [(m, p.map_or(0, |p| p + 1)), (m + 1, 0)]);
                    let ok = next.is_some_and(|n| n.contains(&(msn, rep.last_part.unwrap_or(0))));
                    if !ok {
                        bad.push(format!(
                            "{}: reports {} at {msn}.{:?}, which its playlist (edge {:?}) does not list",
                            r.route,
                            rep.uri,
                            rep.last_part,
                            other.edge()
                        ));
                    }
                    continue;
                };
                let gap = signed_gap(edge, reported).abs();
                worst = worst.max(gap);
                let window = sample.iter().map(|x| x.answered()).max().unwrap_or_default()
                    - sample.iter().map(|x| x.at).min().unwrap_or_default();
                if gap > pt + window.as_secs_f64() + 1e-3 {
                    bad.push(format!(
                        "{}: reports {} at {msn}.{:?}, {gap:.3} s from its edge {:?}",
                        r.route,
                        rep.uri,
                        rep.last_part,
                        other.edge()
                    ));
                }
            }
        }
    }
    with_note(
        verdict(count, "rendition reports", bad),
        format!("largest report-to-edge gap {:.0} ms", worst * 1000.0),
    )
}

fn pdt_consistent(s: &Session) -> Verdict {
    let mut worst: f64 = 0.0;
    let mut bad = Vec::new();
    let mut count = 0;
    for sample in &s.samples {
        let mut starts: std::collections::HashMap<u64, Vec<(String, SystemTime)>> = Default::default();
        for r in sample {
            let Some(p) = &r.playlist else { continue };
            for seg in &p.segments {
                if let Some(t) = seg.pdt.as_deref().and_then(|t| humantime::parse_rfc3339(t).ok()) {
                    starts.entry(seg.msn).or_default().push((r.route.clone(), t));
                }
            }
        }
        for (msn, at) in starts {
            if at.len() < 2 {
                continue;
            }
            count += 1;
            let newest = at.iter().map(|a| a.1).max().unwrap_or(SystemTime::UNIX_EPOCH);
            let oldest = at.iter().map(|a| a.1).min().unwrap_or(SystemTime::UNIX_EPOCH);
            let gap = signed_gap(newest, oldest);
            worst = worst.max(gap);
            // Renditions cut their segments on their own frames and fragments: a packaged audio
            // track's segment starts up to a fragment away from video's. The MUST of 6.2.4 is one
            // mapping of dates to media time across renditions (pdt-media-time); this checks that
            // segments of one number hold the same content.
            if gap > s.target_duration().unwrap_or(1) as f64 {
                let detail: Vec<String> = at.iter().map(|(route, t)| format!("{route} {t:?}")).collect();
                bad.push(format!("segment {msn} starts {gap:.3} s apart: {}", detail.join("; ")));
            }
        }
    }
    with_note(
        verdict(count, "segments listed by several renditions", bad),
        format!("largest PDT difference {:.0} ms", worst * 1000.0),
    )
}

fn pdt_media_time(s: &Session) -> Verdict {
    // PROGRAM-DATE-TIME minus the media time a segment starts at is one constant per rendition, up
    // to one AAC frame (21.3 ms at 48 kHz: audio segments start on frame boundaries while a
    // template dates them on whole seconds) and the PDT's millisecond rounding; and the same
    // across renditions up to one AAC frame of priming (30 ms).
    let mut offsets: Vec<(usize, u64, f64)> = Vec::new();
    let mut bad = Vec::new();
    for (rendition, msn, pdt, start) in &s.media_times {
        let uri = &s.renditions[*rendition];
        let (Ok(pdt_at), Ok(start)) = (humantime::parse_rfc3339(pdt), start) else {
            bad.push(format!("{uri} segment {msn}: {start:?}"));
            continue;
        };
        let pdt_secs = pdt_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        offsets.push((*rendition, *msn, pdt_secs - start));
    }
    let mut drifts = Vec::new();
    for rendition in 0..s.renditions.len() {
        let mine: Vec<&(usize, u64, f64)> = offsets.iter().filter(|o| o.0 == rendition).collect();
        let Some(first) = mine.first() else { continue };
        let drift = mine.iter().map(|o| (o.2 - first.2).abs()).fold(0.0, f64::max);
        drifts.push(format!("{} {:.0} ms", s.renditions[rendition], drift * 1000.0));
        for o in &mine {
            if (o.2 - first.2).abs() > 0.025 {
                bad.push(format!(
                    "{}: segment {} is dated {:+.3} s off its media time compared with segment {} (PROGRAM-DATE-TIME does not follow tfdt)",
                    s.renditions[rendition],
                    o.1,
                    o.2 - first.2,
                    first.1
                ));
            }
        }
    }
    let mut per_rendition: Vec<(usize, f64)> = Vec::new();
    for o in &offsets {
        if !per_rendition.iter().any(|p| p.0 == o.0) {
            per_rendition.push((o.0, o.2));
        }
    }
    if let (Some(lo), Some(hi)) = (
        per_rendition.iter().map(|p| p.1).reduce(f64::min),
        per_rendition.iter().map(|p| p.1).reduce(f64::max),
    ) {
        if hi - lo > 0.03 {
            bad.push(format!(
                "renditions map date to media time {:.3} s apart: {}",
                hi - lo,
                per_rendition
                    .iter()
                    .map(|(r, o)| format!("{} {:+.3}", s.renditions[*r], o - lo))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    with_note(
        verdict(offsets.len(), "complete segments read", bad),
        format!("largest drift of PDT against media time: {}", drifts.join(", ")),
    )
}

fn preload_hint(s: &Session) -> Verdict {
    each_playlist(s, |_, p| {
        if p.endlist || !p.segments.iter().any(|seg| !seg.parts.is_empty()) {
            return Ok(());
        }
        let parts: Vec<_> = p.hints.iter().filter(|h| h.kind == "PART").collect();
        match parts.len() {
            0 => Err("EXT-X-PART without EXT-X-PRELOAD-HINT:TYPE=PART".into()),
            1 => {
                let hint = parts[0];
                let last = p.segments.last().ok_or("no segment")?;
                let start = hint.start.unwrap_or(0);
                let rest_of_last = hint.uri == last.uri && start == last.parts_end();
                let next_segment = start == 0 && hint.uri != last.uri;
                if rest_of_last || next_segment {
                    Ok(())
                } else {
                    Err(format!(
                        "the hint is not the next part (last {} ends at {}):\n    {}",
                        last.uri,
                        last.parts_end(),
                        hint.line
                    ))
                }
            }
            n => Err(format!("{n} EXT-X-PRELOAD-HINT:TYPE=PART")),
        }
    })
}

fn hint_probes<'a>(s: &'a Session, form: &'static str) -> impl Iterator<Item = &'a HintProbe> {
    s.hints.iter().filter(move |h| h.form == form)
}

fn hint_206(s: &Session, form: &'static str) -> Verdict {
    let mut bad = Vec::new();
    let mut count = 0;
    for h in hint_probes(s, form) {
        count += 1;
        let wanted = format!("bytes {}-", h.start);
        if let Some(err) = &h.error {
            bad.push(format!("{} ({}, hinted by {}): {err}", h.route, h.range, h.hint_line));
        } else if h.status != 206 || !h.content_range.starts_with(&wanted) {
            bad.push(format!(
                "{} Range: {} (hinted by {}) answered {} Content-Range {:?}",
                h.route, h.range, h.hint_line, h.status, h.content_range
            ));
        }
    }
    let delays = hint_probes(s, form).filter_map(|h| h.first_byte).collect();
    with_note(
        verdict(count, "hint requests", bad),
        format!("first byte after the request: {}", spread(delays)),
    )
}

fn hint_206_rfc8673(s: &Session) -> Verdict {
    hint_206(s, "bytes=N-9007199254740991")
}

fn hint_206_open(s: &Session) -> Verdict {
    hint_206(s, "bytes=N-")
}

/// What a hint request shows once the part it named is known (a later playlist lists it) and the
/// store says when each of its bytes had arrived.
struct HintTiming<'a> {
    probe: &'a HintProbe,
    /// The hinted part's length.
    len: u64,
    /// The part was complete in the store.
    stored: Instant,
    /// Its first byte reached the player.
    first: Instant,
    /// Its last byte reached the player.
    last: Option<Instant>,
    /// Bytes that reached the player before their part was complete in the store.
    early: Vec<String>,
}

/// Signed seconds from `b` to `a`.
fn secs(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => d.as_secs_f64(),
        None => -b.duration_since(a).as_secs_f64(),
    }
}

/// The hint requests answered with the range asked for, against the store's arrival times.
fn hint_timings(s: &Session) -> Vec<HintTiming<'_>> {
    let mut timings = Vec::new();
    for h in &s.hints {
        if h.status != 206 || !h.content_range.starts_with(&format!("bytes {}-", h.start)) {
            continue;
        }
        let bounds = s.part_bounds(&h.uri);
        let Some(&(_, len)) = bounds.iter().find(|(offset, _)| *offset == h.start) else {
            continue;
        };
        let (Some(stored), Some(&(_, first))) = (s.stored(&h.uri, h.start + len), h.chunks.first()) else {
            continue;
        };
        let last = h.chunks.iter().find(|(n, _)| *n >= len).map(|c| c.1);
        // Each part in turn: a byte may leave only once its whole part is in the store.
        let mut early = Vec::new();
        for &(received, at) in &h.chunks {
            let byte = h.start + received - 1;
            let Some(&(offset, part_len)) = bounds.iter().find(|(o, l)| *o <= byte && byte < o + l) else {
                continue;
            };
            let Some(complete) = s.stored(&h.uri, offset + part_len) else {
                continue;
            };
            if secs(at, complete) < -0.001 {
                early.push(format!(
                    "byte {byte} (part {offset}+{part_len}) reached the player {:.0} ms before its part was complete in the store",
                    secs(complete, at) * 1000.0
                ));
            }
        }
        timings.push(HintTiming {
            probe: h,
            len,
            stored,
            first,
            last,
            early,
        });
    }
    timings
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// How the timing rules judge delays measured at the player on a shared 2-core machine: the
/// median within `median` seconds, and none later than one PART-TARGET (a part a player would
/// see a whole part late).
fn judge_delays(values: &[f64], median_bound: f64, part_target: f64) -> Option<String> {
    let m = median(values);
    if m > median_bound {
        return Some(format!("median {:.0} ms > {:.0} ms", m * 1000.0, median_bound * 1000.0));
    }
    None.or_else(|| {
        let worst = values.iter().copied().fold(0.0, f64::max);
        (worst > part_target).then(|| format!("max {:.0} ms > PART-TARGET {part_target}", worst * 1000.0))
    })
}

fn millis(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] * 1000.0;
    format!(
        "p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (n={})",
        at(0.5),
        at(0.95),
        at(1.0),
        sorted.len()
    )
}

fn hint_prompt(s: &Session) -> Verdict {
    let timings = hint_timings(s);
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    for form in ["bytes=N-9007199254740991", "bytes=N-"] {
        let delays: Vec<(&HintTiming, f64)> = timings
            .iter()
            .filter(|t| t.probe.form == form)
            .map(|t| (t, secs(t.first, t.stored)))
            .collect();
        if delays.is_empty() {
            continue;
        }
        let values: Vec<f64> = delays.iter().map(|d| d.1).collect();
        notes.push(format!(
            "{form}: first byte after the part was complete in the store {}",
            millis(&values)
        ));
        if let Some(why) = judge_delays(&values, 0.05, s.part_target().unwrap_or(0.0)) {
            let (t, d) = delays.iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("not empty");
            bad.push(format!(
                "{form}: {why}; the latest: {} Range {}, first byte {:.0} ms after its {}-byte part was complete in the store",
                t.probe.route,
                t.probe.range,
                d * 1000.0,
                t.len
            ));
        }
    }
    if notes.is_empty() {
        return Verdict::NotApplicable("no hint request was answered with its range".into());
    }
    with_note(
        verdict(timings.len(), "hint requests answered with their range", bad),
        format!("{} (issue 24's target: 20 ms at the server)", notes.join("; ")),
    )
    .count_as_one()
}

fn hint_not_early(s: &Session) -> Verdict {
    let timings = hint_timings(s);
    let bad: Vec<String> = timings
        .iter()
        .filter_map(|t| {
            let first = t.early.first()?;
            Some(format!(
                "{} Range {}: {first} ({} such reads)",
                t.probe.route,
                t.probe.range,
                t.early.len()
            ))
        })
        .collect();
    let whole: Vec<f64> = timings.iter().filter_map(|t| Some(secs(t.last?, t.first))).collect();
    with_note(
        verdict(timings.len(), "hint requests answered with their range", bad),
        format!("a hinted part's first to last byte at the player {}", millis(&whole)),
    )
}

fn blocking_holds(s: &Session) -> Verdict {
    let mut bad = Vec::new();
    let mut count = 0;
    for r in s.reloads.iter().filter(|r| r.blocking()) {
        count += 1;
        let Some((msn, part)) = r.wanted else { continue };
        let part = part.unwrap_or(0);
        match &r.playlist {
            Some(p) if p.holds_part(msn, part) => {}
            Some(p) => bad.push(format!(
                "{} answered {} after {} without the part asked for (edge {:?}):\n    ...{}",
                r.route,
                r.status,
                ms(r.took),
                p.edge(),
                r.text
                    .lines()
                    .rev()
                    .take(6)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n    ")
            )),
            None if r.status == 503 && r.took >= Duration::from_secs(3) => {}
            None => bad.push(format!(
                "{} answered {} after {}: {}",
                r.route,
                r.status,
                ms(r.took),
                r.error.as_deref().unwrap_or("")
            )),
        }
    }
    let holds = s.reloads.iter().filter(|r| r.blocking()).map(|r| r.took).collect();
    with_note(
        verdict(count, "blocking reloads", bad),
        format!("held {}", spread(holds)),
    )
}

fn blocking_msn_only(s: &Session) -> Verdict {
    let Some(r) = &s.msn_only else {
        return Verdict::NotApplicable("not probed".into());
    };
    let Some((msn, _)) = r.wanted else {
        return Verdict::NotApplicable("not probed".into());
    };
    let Some(p) = &r.playlist else {
        return Verdict::Fail(format!("{} answered {} after {}", r.route, r.status, ms(r.took)));
    };
    let complete = p.segments.iter().any(|seg| seg.msn >= msn && seg.extinf.is_some());
    if complete {
        Verdict::Pass(format!(
            "{} held {} until segment {msn} was complete",
            r.route,
            ms(r.took)
        ))
    } else {
        Verdict::Fail(format!(
            "{} answered after {} before segment {msn} was complete (edge {:?}):\n    ...{}",
            r.route,
            ms(r.took),
            p.edge(),
            r.text
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n    ")
        ))
    }
}

fn blocking_too_far(s: &Session) -> Verdict {
    let Some(last) = s.too_far.last() else {
        return Verdict::NotApplicable("not probed".into());
    };
    if last.status == 400 && last.took < Duration::from_millis(500) {
        Verdict::Pass(format!("{} answered 400 after {}", last.route, ms(last.took)))
    } else {
        let tries: Vec<String> = s
            .too_far
            .iter()
            .map(|r| format!("{} answered {} after {}", r.route, r.status, ms(r.took)))
            .collect();
        Verdict::Fail(tries.join("; "))
    }
}

fn blocking_part_without_msn(s: &Session) -> Verdict {
    match &s.no_msn {
        None => Verdict::NotApplicable("not probed".into()),
        Some(r) if r.status == 400 => Verdict::Pass(format!("{} answered 400", r.route)),
        Some(r) => Verdict::Fail(format!("{} answered {}", r.route, r.status)),
    }
}

/// A part as the store knows it: (segment URI, the part's end in bytes).
type PartEnd = (String, u64);

/// The part a playlist lists last.
fn edge_part(p: &MediaPlaylist) -> Option<PartEnd> {
    let last = p.segments.last()?;
    let part = last.parts.last()?;
    Some((part.uri.clone(), last.parts_end()))
}

/// One step of a follower: an answer that brought exactly the one next part.
struct Step {
    route: String,
    /// Since the answer before it.
    listed: Duration,
    /// The encoder's (the store's) interval between the same two parts.
    stored: Option<f64>,
}

/// For each rendition's followers: the time between consecutive answers that each brought exactly
/// the one next part (the part cadence as seen by a player at the edge), beside the store's.
fn part_steps(s: &Session) -> Vec<Step> {
    let mut steps = Vec::new();
    for rendition in 0..s.renditions.len() {
        // The answer before: its reload, its edge (msn, part) and its last part (URI, end).
        let mut previous: Option<(&Reload, (u64, u64), Option<PartEnd>)> = None;
        for r in s.reloads.iter().filter(|r| r.rendition == rendition) {
            let Some(p) = &r.playlist else {
                previous = None;
                continue;
            };
            let Some((msn, Some(part))) = p.edge() else {
                previous = None;
                continue;
            };
            let edge = edge_part(p);
            if let Some((before, (bm, bp), before_edge)) = &previous {
                let next_in_segment = msn == *bm && part == bp + 1;
                let next_segment = msn == bm + 1 && part == 0;
                if r.blocking() && (next_in_segment || next_segment) {
                    let stored = match (&edge, before_edge) {
                        (Some((u, e)), Some((bu, be))) => match (s.stored(u, *e), s.stored(bu, *be)) {
                            (Some(a), Some(b)) => Some(secs(a, b)),
                            _ => None,
                        },
                        _ => None,
                    };
                    steps.push(Step {
                        route: r.route.clone(),
                        listed: r.answered() - before.answered(),
                        stored,
                    });
                }
            }
            previous = Some((r, (msn, part), edge));
        }
    }
    steps
}

fn part_cadence(s: &Session) -> Verdict {
    // The server MUST add a part within one PART-TARGET of the previous one; it cannot add one the
    // encoder has not sent: a longer interval of the encoder's (seen in the store) is allowed, and
    // measuring at the player on a shared 2-core machine adds up to one more PART-TARGET
    // (part-listed-promptly judges the server's own share).
    let pt = s.part_target().unwrap_or(0.0);
    let steps = part_steps(s);
    let bad: Vec<String> = steps
        .iter()
        .filter(|step| step.listed.as_secs_f64() > pt.max(step.stored.unwrap_or(0.0)) + pt)
        .map(|step| {
            format!(
                "{}: the next part listed {} after the one before (the encoder's interval {:.0} ms)",
                step.route,
                ms(step.listed),
                step.stored.unwrap_or(f64::NAN) * 1000.0
            )
        })
        .collect();
    let encoder: Vec<f64> = steps.iter().filter_map(|step| step.stored).collect();
    with_note(
        verdict(steps.len(), "part-to-part intervals", bad),
        format!(
            "listed every {}; the encoder's parts every {} (PART-TARGET {pt})",
            spread(steps.iter().map(|step| step.listed).collect()),
            millis(&encoder)
        ),
    )
}

fn part_listed_promptly(s: &Session) -> Verdict {
    // A blocking reload for a part that did not exist yet is answered once the part is in the store.
    let mut delays = Vec::new();
    let mut latest = Vec::new();
    let mut bad = Vec::new();
    for r in s.reloads.iter().filter(|r| r.blocking()) {
        let (Some(p), Some((msn, Some(part)))) = (&r.playlist, r.wanted) else {
            continue;
        };
        let asked = p
            .segment(msn)
            .and_then(|seg| seg.parts.get(part as usize).map(|_| (seg, part as usize)))
            .or_else(|| {
                p.segment(msn + 1)
                    .filter(|seg| !seg.parts.is_empty())
                    .map(|seg| (seg, 0))
            });
        let Some((seg, index)) = asked else { continue };
        let end: u64 = {
            let mut end = 0;
            for part in &seg.parts[..=index] {
                if let Some((len, offset)) = part.range {
                    end = offset.unwrap_or(end) + len;
                }
            }
            end
        };
        let Some(stored) = s.stored(&seg.uri, end) else {
            continue;
        };
        let sent = s.t0 + r.at;
        if stored <= sent {
            continue; // it existed when asked for: nothing was held
        }
        let delay = secs(s.t0 + r.answered(), stored);
        delays.push(delay);
        latest.push((
            delay,
            format!(
                "{}: answered {:.0} ms after part {msn}.{part} ({} up to byte {end}) was complete in the store",
                r.route,
                delay * 1000.0,
                seg.uri
            ),
        ));
    }
    if let Some(why) = judge_delays(&delays, 0.05, s.part_target().unwrap_or(0.0)) {
        latest.sort_by(|a, b| b.0.total_cmp(&a.0));
        bad.push(format!("{why}; the latest: {}", latest[0].1));
    }
    with_note(
        verdict(delays.len(), "held reloads", bad).count_as_one(),
        format!("answered after the part was in the store {}", millis(&delays)),
    )
}

fn segment_cadence(s: &Session) -> Verdict {
    let td = s.target_duration().unwrap_or(0) as f64;
    let mut bad = Vec::new();
    let mut intervals = Vec::new();
    for rendition in 0..s.renditions.len() {
        let mut first_complete: std::collections::BTreeMap<u64, Duration> = Default::default();
        for r in s.reloads.iter().filter(|r| r.rendition == rendition) {
            let Some(p) = &r.playlist else { continue };
            for seg in p.segments.iter().filter(|seg| seg.extinf.is_some()) {
                first_complete.entry(seg.msn).or_insert(r.answered());
            }
        }
        let times: Vec<(u64, Duration)> = first_complete.into_iter().collect();
        // The first one seen was complete before the player came.
        let newest_at_start = times.first().map_or(0, |t| t.0);
        for pair in times.windows(2) {
            let ((a, ta), (b, tb)) = (pair[0], pair[1]);
            if b != a + 1 || a <= newest_at_start {
                continue;
            }
            let d = tb - ta;
            intervals.push(d);
            if d.as_secs_f64() > 1.5 * td {
                bad.push(format!(
                    "{}: segment {b} completed {} after segment {a}",
                    s.renditions[rendition],
                    ms(d)
                ));
            }
        }
    }
    let count = intervals.len();
    with_note(
        verdict(count, "segment-to-segment intervals", bad),
        format!("intervals {}", spread(intervals)),
    )
}

fn cache_blocking(s: &Session) -> Verdict {
    let td = s.target_duration().unwrap_or(0);
    let mut bad = Vec::new();
    let mut count = 0;
    let mut seen = std::collections::BTreeSet::new();
    for r in s.reloads.iter().filter(|r| r.blocking() && r.status == 200) {
        count += 1;
        seen.insert(r.cache.clone());
        if max_age(&r.cache) != Some(6 * td) {
            bad.push(format!(
                "{}: Cache-Control {:?}, not max-age={}",
                r.route,
                r.cache,
                6 * td
            ));
        }
    }
    with_note(
        verdict(count, "blocking playlist responses", bad),
        format!("sent {:?}", seen),
    )
}

fn cache_non_blocking(s: &Session) -> Verdict {
    let td = s.target_duration().unwrap_or(0);
    // Half a target duration, in whole seconds either way.
    let allowed = [td / 2, td.div_ceil(2)];
    let mut bad = Vec::new();
    let mut count = 0;
    let mut seen = std::collections::BTreeSet::new();
    for r in s
        .responses()
        .filter(|r| !r.blocking() && r.status == 200 && r.playlist.is_some())
    {
        count += 1;
        seen.insert(r.cache.clone());
        if !max_age(&r.cache).is_some_and(|age| age > 0 && allowed.contains(&age)) {
            bad.push(format!("{}: Cache-Control {:?}, not max-age of TD/2", r.route, r.cache));
        }
    }
    with_note(
        verdict(count, "non-blocking playlist responses", bad),
        format!("sent {seen:?}"),
    )
}

fn cache_hinted(s: &Session) -> Verdict {
    let td = s.target_duration().unwrap_or(0);
    let mut seen = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    let mut count = 0;
    for h in s.hints.iter().filter(|h| h.status == 206 || h.status == 200) {
        count += 1;
        seen.insert(h.cache.clone());
        // Six target durations or longer: a hinted part's bytes never change.
        if max_age(&h.cache).is_none_or(|age| age < 6 * td) {
            bad.push(format!(
                "{} Range {}: Cache-Control {:?}, not max-age >= {}",
                h.route,
                h.range,
                h.cache,
                6 * td
            ));
        }
    }
    with_note(verdict(count, "hinted part responses", bad), format!("sent {seen:?}"))
}

fn cache_parts(s: &Session) -> Verdict {
    let mut seen = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    let mut count = 0;
    for p in s.parts.iter().filter(|p| p.status == 206) {
        count += 1;
        seen.insert(format!("part: {}", p.cache));
        if max_age(&p.cache).is_none_or(|a| a == 0) {
            bad.push(format!(
                "part {}@{}+{}: Cache-Control {:?}",
                p.uri, p.offset, p.len, p.cache
            ));
        }
    }
    for w in s.wholes.iter().filter(|w| w.status == 200) {
        count += 1;
        seen.insert(format!("segment: {}", w.cache));
        if max_age(&w.cache).is_none_or(|a| a == 0) {
            bad.push(format!("segment {}: Cache-Control {:?}", w.uri, w.cache));
        }
    }
    with_note(
        verdict(count, "part and segment responses", bad),
        format!("sent {seen:?}"),
    )
}

fn cache_errors(s: &Session) -> Verdict {
    let td = s.target_duration().unwrap_or(0);
    let mut bad = Vec::new();
    let mut count = 0;
    let mut seen = Vec::new();
    // B.1: unsuccessful blocking playlist responses 4 x TD, unsuccessful non-blocking ones and
    // unsuccessful media responses 1 x TD.
    for r in s.too_far.iter().filter(|r| r.status >= 400) {
        count += 1;
        seen.push(format!("{} -> {} {:?}", r.route, r.status, r.cache));
        if max_age(&r.cache) != Some(4 * td) {
            bad.push(format!(
                "{} ({}): Cache-Control {:?}, not max-age={}",
                r.route,
                r.status,
                r.cache,
                4 * td
            ));
        }
    }
    for r in s.missing.iter().filter(|r| r.status >= 400) {
        count += 1;
        seen.push(format!("{} -> {} {:?}", r.route, r.status, r.cache));
        if max_age(&r.cache) != Some(td) {
            bad.push(format!(
                "{} ({}): Cache-Control {:?}, not max-age={td}",
                r.route, r.status, r.cache
            ));
        }
    }
    with_note(
        verdict(count, "error responses", bad),
        format!("sent {}", seen.join("; ")),
    )
}

fn priority(s: &Session) -> Verdict {
    let mut bad = Vec::new();
    let mut count = 0;
    for r in s.responses().filter(|r| r.status == 200) {
        count += 1;
        if !r.priority.split(',').any(|p| p.trim() == "u=1") {
            bad.push(format!("playlist {}: Priority {:?}, not u=1", r.route, r.priority));
        }
    }
    for p in s.parts.iter().filter(|p| p.status == 206) {
        count += 1;
        let urgency = p
            .priority
            .split(',')
            .find_map(|x| x.trim().strip_prefix("u="))
            .and_then(|u| u.parse::<u8>().ok());
        if !urgency.is_some_and(|u| (2..=6).contains(&u)) {
            bad.push(format!("part {}: Priority {:?}, not u=2..6", p.uri, p.priority));
        }
    }
    if s.proto != Proto::H3 && !bad.is_empty() && bad.len() == count {
        return Verdict::NotApplicable(format!(
            "HTTP/2: RFC 9218 priorities only recommended, none sent ({count} responses)"
        ));
    }
    verdict(count, "playlist and part responses", bad)
}

fn range_parts(s: &Session) -> Verdict {
    let mut bad = Vec::new();
    let mut compared = 0;
    for p in &s.parts {
        let wanted = format!("bytes {}-{}/", p.offset, p.offset + p.len - 1);
        let body = match &p.body {
            Ok(body) => body,
            Err(e) => {
                bad.push(format!("part {}@{}+{}: {e}", p.uri, p.offset, p.len));
                continue;
            }
        };
        if p.status != 206 || !p.content_range.starts_with(&wanted) || body.len() as u64 != p.len {
            bad.push(format!(
                "part {} Range bytes={}-{}: {} Content-Range {:?}, {} bytes",
                p.uri,
                p.offset,
                p.offset + p.len - 1,
                p.status,
                p.content_range,
                body.len()
            ));
            continue;
        }
        let Some(Ok(whole)) = s
            .wholes
            .iter()
            .find(|w| w.uri == p.uri && w.status == 200)
            .map(|w| &w.body)
        else {
            continue;
        };
        compared += 1;
        let range = p.offset as usize..(p.offset + p.len) as usize;
        if whole.get(range.clone()) != Some(&body[..]) {
            bad.push(format!(
                "part {} bytes {range:?} differ from the same bytes of the complete segment ({} bytes)",
                p.uri,
                whole.len()
            ));
        }
    }
    with_note(
        verdict(s.parts.len(), "part requests", bad),
        format!("{compared} compared with their complete segment"),
    )
}

fn delta_updates(s: &Session) -> Verdict {
    // Every delta update on its own: the segments it skipped end at least CAN-SKIP-UNTIL before the
    // end of the playlist, and the first it lists does not (or it should have been skipped).
    let mut bad = Vec::new();
    let mut count = 0;
    let mut skipped_any = 0;
    for (r, p) in s.playlists().filter(|(r, _)| r.skip) {
        count += 1;
        let Some(until) = p.control_seconds("CAN-SKIP-UNTIL") else {
            continue;
        };
        let listed = p.complete_duration();
        let first = p
            .segments
            .iter()
            .find(|seg| seg.extinf.is_some())
            .map_or(0.0, |seg| seg.duration());
        match p.skipped {
            Some(n) if n > 0 => {
                skipped_any += 1;
                if listed + 1e-3 < until {
                    bad.push(format!(
                        "{}: skipped {n} segments, but the complete ones left last only {listed:.3} s < CAN-SKIP-UNTIL {until}",
                        r.route
                    ));
                }
            }
            _ => {}
        }
        if listed - first >= until + 1e-3 {
            bad.push(format!(
                "{}: the first listed segment ends {:.3} s before the end, beyond CAN-SKIP-UNTIL {until}, and was not skipped",
                r.route,
                listed - first
            ));
        }
    }
    // Pairs of the same moment: skipped + delta = full.
    let mut pairs = 0;
    for (full, delta) in &s.delta_pairs {
        let (Some(f), Some(d)) = (&full.playlist, &delta.playlist) else {
            bad.push(format!(
                "{} / {}: {} / {}",
                full.route, delta.route, full.status, delta.status
            ));
            continue;
        };
        if f.edge() != d.edge() {
            continue;
        }
        pairs += 1;
        let n = d.skipped.unwrap_or(0) as usize;
        let full_uris: Vec<&str> = f.segments.iter().map(|x| x.uri.as_str()).collect();
        let delta_uris: Vec<&str> = d.segments.iter().map(|x| x.uri.as_str()).collect();
        if d.media_sequence != f.media_sequence || full_uris.get(n..) != Some(&delta_uris[..]) {
            bad.push(format!(
                "SKIPPED-SEGMENTS={n}, MEDIA-SEQUENCE {:?} / {:?}: full lists {full_uris:?}, delta {delta_uris:?}",
                f.media_sequence, d.media_sequence
            ));
        }
    }
    let v = verdict(count, "delta updates", bad);
    if skipped_any == 0 {
        if let Verdict::Pass(m) = v {
            return Verdict::NotApplicable(format!(
                "{m}, none could skip a segment (the window is shorter than CAN-SKIP-UNTIL); {pairs} full/delta pairs equal"
            ));
        }
    }
    with_note(
        v,
        format!("{skipped_any} with EXT-X-SKIP, {pairs} full/delta pairs compared"),
    )
}

fn parts_window(s: &Session) -> Verdict {
    // EXT-X-PART tags more than three target durations from the end SHOULD be removed.
    each_playlist(s, |_, p| {
        let td = p.target_duration.unwrap_or(0) as f64;
        let total: f64 = p.segments.iter().map(|seg| seg.duration()).sum();
        let mut start = 0.0;
        for seg in &p.segments {
            let mut end = start;
            for part in &seg.parts {
                end += part.duration;
                if total - end > 3.0 * td + 1e-3 {
                    return Err(format!(
                        "a part ending {:.3} s from the end (3 x TD = {}):\n    {}",
                        total - end,
                        3.0 * td,
                        part.line
                    ));
                }
            }
            start += seg.duration();
        }
        Ok(())
    })
}

fn rules() -> Vec<Rule> {
    vec![
        Rule {
            id: "http2-http3",
            source: "draft B.1",
            text: "playlists and media over HTTP/2 or HTTP/3",
            check: http2_or_3,
        },
        Rule {
            id: "gzip",
            source: "draft B.1",
            text: "playlists delivered gzipped (Accept-Encoding: gzip)",
            check: gzip,
        },
        Rule {
            id: "version",
            source: "draft 4.4.1.2, 8",
            text: "one EXT-X-VERSION, >= 6 with EXT-X-MAP, >= 9 with EXT-X-SKIP",
            check: version,
        },
        Rule {
            id: "targetduration",
            source: "draft 4.4.3.1, 6.2.4",
            text: "EXT-X-TARGETDURATION present, the same in every rendition and reload",
            check: target_duration,
        },
        Rule {
            id: "extinf-rounded",
            source: "draft 4.4.3.1, Apple 7.7",
            text: "every EXTINF rounded to an integer <= TARGETDURATION (< TD + 0.5 s)",
            check: extinf,
        },
        Rule {
            id: "can-block-reload",
            source: "draft 4.4.3.8, B.1",
            text: "EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
            check: can_block_reload,
        },
        Rule {
            id: "part-hold-back-2x",
            source: "draft 4.4.3.8 (MUST)",
            text: "PART-HOLD-BACK >= 2 x PART-TARGET",
            check: part_hold_back_2x,
        },
        Rule {
            id: "part-hold-back-3x",
            source: "draft 4.4.3.8 (SHOULD), Apple 14.3",
            text: "PART-HOLD-BACK >= 3 x PART-TARGET",
            check: part_hold_back_3x,
        },
        Rule {
            id: "can-skip-until",
            source: "draft 4.4.3.8",
            text: "CAN-SKIP-UNTIL >= 6 x TARGETDURATION when present",
            check: can_skip_until,
        },
        Rule {
            id: "hold-back",
            source: "draft 4.4.3.8",
            text: "HOLD-BACK >= 3 x TARGETDURATION when present",
            check: hold_back,
        },
        Rule {
            id: "server-control-same",
            source: "draft 6.2.4",
            text: "identical EXT-X-SERVER-CONTROL in every media playlist and reload",
            check: server_control_identical,
        },
        Rule {
            id: "part-target-steady",
            source: "draft 4.4.3.7, Apple players",
            text: "EXT-X-PART-INF present with parts, PART-TARGET unchanged between reloads",
            check: part_target_steady,
        },
        Rule {
            id: "part-max",
            source: "draft 4.4.4.9 (MUST)",
            text: "every EXT-X-PART DURATION <= PART-TARGET",
            check: part_max,
        },
        Rule {
            id: "part-min-85",
            source: "draft 4.4.4.9 (MUST)",
            text: "every part >= 85% of PART-TARGET unless INDEPENDENT=YES or last of its segment",
            check: part_min,
        },
        Rule {
            id: "byterange-contiguous",
            source: "draft 4.4.4.9, B.1",
            text: "a segment's parts are contiguous byte ranges from 0",
            check: byterange_contiguous,
        },
        Rule {
            id: "parts-steady",
            source: "draft 6.2.2; gohlslib #107",
            text: "a reload extends a segment's parts, never renumbers or drops them (no gaps)",
            check: parts_steady,
        },
        Rule {
            id: "media-sequence",
            source: "draft 6.2.2",
            text: "EXT-X-MEDIA-SEQUENCE present and never decreasing",
            check: media_sequence,
        },
        Rule {
            id: "order-parent-tags",
            source: "draft 4.4.4.9 (MUST)",
            text: "MAP / DISCONTINUITY / PROGRAM-DATE-TIME before the segment's first EXT-X-PART",
            check: order_parent_tags,
        },
        Rule {
            id: "order-parts-extinf",
            source: "draft 4.4.4.9, Apple players",
            text: "a segment's parts before its EXTINF, naming its URI",
            check: order_parts_extinf,
        },
        Rule {
            id: "order-skip",
            source: "draft 4.4.5.2, Apple players",
            text: "EXT-X-MEDIA-SEQUENCE before EXT-X-SKIP, one EXT-X-SKIP, before the segments",
            check: order_skip,
        },
        Rule {
            id: "no-playlist-type",
            source: "draft 6.2.2",
            text: "a live playlist has no EXT-X-PLAYLIST-TYPE",
            check: no_playlist_type,
        },
        Rule {
            id: "program-date-time",
            source: "draft B.1, Apple 8.4",
            text: "EXT-X-PROGRAM-DATE-TIME in every media playlist",
            check: program_date_time,
        },
        Rule {
            id: "pdt-consistent",
            source: "draft 6.2.4 (MUST)",
            text: "the same segment number starts within one target duration in every rendition",
            check: pdt_consistent,
        },
        Rule {
            id: "pdt-media-time",
            source: "draft 6.2.4 (MUST), 4.4.4.6",
            text: "PROGRAM-DATE-TIME follows each segment's media time (tfdt), alike in every rendition",
            check: pdt_media_time,
        },
        Rule {
            id: "six-segments",
            source: "Apple 8.11",
            text: "a live playlist holds at least 6 segments once the stream has run that long",
            check: six_segments,
        },
        Rule {
            id: "independent-segments",
            source: "draft B.1",
            text: "every segment has an independent frame (an INDEPENDENT=YES part)",
            check: independent_segments,
        },
        Rule {
            id: "rendition-reports",
            source: "draft B.1 (MUST), 4.4.5.4",
            text: "one EXT-X-RENDITION-REPORT per other rendition, with LAST-MSN and LAST-PART",
            check: rendition_reports,
        },
        Rule {
            id: "reports-current",
            source: "draft 4.4.5.4",
            text: "a rendition report is as up to date as its playlist (one PART-TARGET)",
            check: reports_current,
        },
        Rule {
            id: "renditions-in-sync",
            source: "draft B.1, 6.2.4",
            text: "every rendition's edge within one PART-TARGET of the others",
            check: renditions_in_sync,
        },
        Rule {
            id: "preload-hint",
            source: "draft B.1, 6.2.6",
            text: "one EXT-X-PRELOAD-HINT:TYPE=PART, naming the next part",
            check: preload_hint,
        },
        Rule {
            id: "hint-206-rfc8673",
            source: "draft 6.2.6 (MUST), 4.4.5.3",
            text: "the hint requestable: Range bytes=N-9007199254740991 answered 206 from N",
            check: hint_206_rfc8673,
        },
        Rule {
            id: "hint-206-open",
            source: "draft 6.2.6 (MUST)",
            text: "the hint requestable: Range bytes=N- answered 206 from N",
            check: hint_206_open,
        },
        Rule {
            id: "hint-prompt",
            source: "draft 6.2.6; issue 24",
            text: "a hinted part's first byte as the part is complete in the store (median <= 50 ms, none > PART-TARGET)",
            check: hint_prompt,
        },
        Rule {
            id: "hint-no-early-bytes",
            source: "draft 6.2.6 (MUST)",
            text: "no byte of a part leaves before the whole part is in the store, part by part",
            check: hint_not_early,
        },
        Rule {
            id: "blocking-holds-part",
            source: "draft 6.2.5.2 (MUST); Apple players",
            text: "a blocking reload is answered once the part exists, never without it",
            check: blocking_holds,
        },
        Rule {
            id: "blocking-msn-only",
            source: "draft 6.2.5.2 (MUST); OvenMediaEngine PR 2207",
            text: "_HLS_msn alone is held until that whole segment exists",
            check: blocking_msn_only,
        },
        Rule {
            id: "blocking-too-far",
            source: "draft 6.2.5.2 (SHOULD), Apple's origin",
            text: "_HLS_msn more than two segments ahead: 400 at once",
            check: blocking_too_far,
        },
        Rule {
            id: "part-without-msn",
            source: "draft 6.2.5.2 (MUST)",
            text: "_HLS_part without _HLS_msn: 400",
            check: blocking_part_without_msn,
        },
        Rule {
            id: "part-cadence",
            source: "draft 6.2.1 (MUST)",
            text: "a new part within one PART-TARGET of the previous one (or the encoder's interval; + one PART-TARGET measuring)",
            check: part_cadence,
        },
        Rule {
            id: "part-listed-promptly",
            source: "draft 6.2.1, 6.2.5.2",
            text: "a held reload answered as its part is complete in the store (median <= 50 ms, none > PART-TARGET)",
            check: part_listed_promptly,
        },
        Rule {
            id: "segment-cadence",
            source: "draft 6.2.1 (MUST)",
            text: "a new segment within 1.5 x TARGETDURATION of the previous one",
            check: segment_cadence,
        },
        Rule {
            id: "parts-window",
            source: "draft 6.2.2 (SHOULD)",
            text: "no EXT-X-PART more than 3 x TARGETDURATION from the end",
            check: parts_window,
        },
        Rule {
            id: "delta-update",
            source: "draft 6.2.5.1 (MUST), 4.4.5.2",
            text: "_HLS_skip=YES skips exactly the segments beyond CAN-SKIP-UNTIL; skipped + delta = full",
            check: delta_updates,
        },
        Rule {
            id: "range-parts",
            source: "draft B.1",
            text: "a part's closed Range answered 206 with exactly those bytes of the segment",
            check: range_parts,
        },
        Rule {
            id: "cache-blocking",
            source: "draft B.1 (recommended), Apple's origin",
            text: "blocking playlist responses Cache-Control max-age = 6 x TD",
            check: cache_blocking,
        },
        Rule {
            id: "cache-non-blocking",
            source: "draft B.1 (recommended)",
            text: "non-blocking playlist responses max-age = TD / 2",
            check: cache_non_blocking,
        },
        Rule {
            id: "cache-hinted-part",
            source: "draft B.1 (recommended), Apple's origin",
            text: "hinted (blocking) part responses max-age >= 6 x TD",
            check: cache_hinted,
        },
        Rule {
            id: "cache-parts",
            source: "draft B.1 (recommended)",
            text: "part and segment responses carry a max-age",
            check: cache_parts,
        },
        Rule {
            id: "cache-errors",
            source: "draft B.1 (recommended)",
            text: "errors cached: blocking 4 x TD, others 1 x TD",
            check: cache_errors,
        },
        Rule {
            id: "priority",
            source: "draft B.1 (MUST with HTTP/3)",
            text: "RFC 9218 urgency: playlists u=1, media u=2..6",
            check: priority,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// The player.

/// Fetches a playlist asking for gzip, and reads it.
async fn fetch_playlist(
    client: &Client,
    t0: Instant,
    rendition: usize,
    route: String,
    wanted: Option<(u64, Option<u64>)>,
    skip: bool,
) -> Reload {
    let mut query = Vec::new();
    if let Some((msn, part)) = wanted {
        query.push(format!("_HLS_msn={msn}"));
        if let Some(part) = part {
            query.push(format!("_HLS_part={part}"));
        }
    }
    if skip {
        query.push("_HLS_skip=YES".to_owned());
    }
    let route = if query.is_empty() {
        route
    } else {
        format!("{route}?{}", query.join("&"))
    };
    let sent = Instant::now();
    let request = async {
        let response = client.get(&route).header("accept-encoding", "gzip").send().await?;
        let head = (
            response.status,
            response.version,
            response.header("cache-control").to_owned(),
            response.header("content-encoding").to_owned(),
            response.header("priority").to_owned(),
        );
        let body = response.bytes().await?;
        Ok::<_, String>((head, body))
    };
    let answer = tokio::time::timeout(REQUEST_BOUND, request).await;
    let took = sent.elapsed();
    let mut reload = Reload {
        rendition,
        route: route.clone(),
        wanted,
        skip,
        status: 0,
        version: None,
        cache: String::new(),
        encoding: String::new(),
        priority: String::new(),
        at: sent - t0,
        took,
        text: String::new(),
        playlist: None,
        error: None,
    };
    let ((status, version, cache, encoding, priority), body) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            reload.error = Some(format!("request failed: {e}"));
            return reload;
        }
        Err(_) => {
            reload.error = Some(format!("no answer within {REQUEST_BOUND:?}"));
            return reload;
        }
    };
    reload.status = status;
    reload.version = Some(version);
    reload.cache = cache;
    reload.priority = priority;
    match body_text(&encoding, &body) {
        Ok(text) => reload.text = text,
        Err(e) => reload.error = Some(e),
    }
    reload.encoding = encoding;
    if status == 200 && rendition != usize::MAX && reload.error.is_none() {
        match parse_media(&reload.text) {
            Ok(p) => reload.playlist = Some(p),
            Err(e) => reload.error = Some(format!("unreadable: {e}")),
        }
    } else if status != 200 && reload.error.is_none() {
        reload.error = Some(format!("status {status}: {}", reload.text.trim()));
    }
    reload
}

/// Requests the hint `uri` from byte `start` with `form`, and times its first body byte.
async fn probe_hint(client: Client, base: String, hint: common::hls_check::Hint, form: &'static str) -> HintProbe {
    let start = hint.start.unwrap_or(0);
    let range = match form {
        "bytes=N-" => format!("bytes={start}-"),
        _ => format!("bytes={start}-{RFC8673_END}"),
    };
    let route = format!("{base}{}", hint.uri);
    let sent = Instant::now();
    let mut probe = HintProbe {
        form,
        route: route.clone(),
        range: range.clone(),
        chunks: Vec::new(),
        uri: hint.uri.clone(),
        start,
        hint_line: hint.line.clone(),
        status: 0,
        content_range: String::new(),
        cache: String::new(),
        first_byte: None,
        error: None,
    };
    let request = async {
        let mut response = client.get(&route).header("range", range.as_str()).send().await?;
        let head = (
            response.status,
            response.header("content-range").to_owned(),
            response.header("cache-control").to_owned(),
        );
        // The body as it comes, until a part target's worth of time after the first byte (a part
        // and more at full speed) or its end.
        let mut chunks = Vec::new();
        let mut received = 0;
        let mut until = None;
        loop {
            let next = match until {
                Some(until) => match tokio::time::timeout_at(until, response.chunk()).await {
                    Ok(next) => next?,
                    Err(_) => break,
                },
                None => response.chunk().await?,
            };
            let Some(chunk) = next else { break };
            let now = Instant::now();
            received += chunk.len() as u64;
            chunks.push((received, now));
            until.get_or_insert(tokio::time::Instant::from_std(now) + Duration::from_millis(300));
        }
        Ok::<_, String>((head, chunks))
    };
    match tokio::time::timeout(REQUEST_BOUND, request).await {
        Ok(Ok(((status, content_range, cache), chunks))) => {
            probe.status = status;
            probe.content_range = content_range;
            probe.cache = cache;
            probe.first_byte = chunks.first().map(|c| c.1 - sent);
            if chunks.is_empty() && status < 300 {
                probe.error = Some("an empty body".into());
            }
            probe.chunks = chunks;
        }
        Ok(Err(e)) => probe.error = Some(format!("request failed: {e}")),
        Err(_) => probe.error = Some(format!("no first byte within {REQUEST_BOUND:?}")),
    }
    probe
}

async fn probe_part(client: Client, route: String, uri: String, offset: u64, len: u64) -> PartProbe {
    let range = format!("bytes={offset}-{}", offset + len - 1);
    let request = async {
        let response = client.get(&route).header("range", range.as_str()).send().await?;
        let head = (
            response.status,
            response.version,
            response.header("content-range").to_owned(),
            response.header("cache-control").to_owned(),
            response.header("priority").to_owned(),
        );
        Ok::<_, String>((head, response.bytes().await))
    };
    match tokio::time::timeout(REQUEST_BOUND, request).await {
        Ok(Ok(((status, version, content_range, cache, priority), body))) => PartProbe {
            uri,
            offset,
            len,
            status,
            version: Some(version),
            content_range,
            cache,
            priority,
            body,
        },
        Ok(Err(e)) => failed_part(uri, offset, len, format!("request failed: {e}")),
        Err(_) => failed_part(uri, offset, len, format!("no answer within {REQUEST_BOUND:?}")),
    }
}

fn failed_part(uri: String, offset: u64, len: u64, why: String) -> PartProbe {
    PartProbe {
        uri,
        offset,
        len,
        status: 0,
        version: None,
        content_range: String::new(),
        cache: String::new(),
        priority: String::new(),
        body: Err(why),
    }
}

async fn probe_whole(client: Client, route: String, uri: String) -> WholeProbe {
    let request = async {
        let response = client.get(&route).send().await?;
        let head = (response.status, response.header("cache-control").to_owned());
        Ok::<_, String>((head, response.bytes().await))
    };
    match tokio::time::timeout(REQUEST_BOUND, request).await {
        Ok(Ok(((status, cache), body))) => WholeProbe {
            uri,
            status,
            cache,
            body,
        },
        Ok(Err(e)) => WholeProbe {
            uri,
            status: 0,
            cache: String::new(),
            body: Err(e),
        },
        Err(_) => WholeProbe {
            uri,
            status: 0,
            cache: String::new(),
            body: Err(format!("no answer within {REQUEST_BOUND:?}")),
        },
    }
}

/// What the first rendition's follower also collects: hint, part and segment requests.
#[derive(Default)]
struct Collected {
    hints: Vec<HintProbe>,
    parts: Vec<PartProbe>,
    wholes: Vec<WholeProbe>,
}

/// Follows rendition `rendition` at its live edge until `until`, as a player does: a blocking
/// reload for the next part each time, with `_HLS_skip=YES` every fourth. The first rendition's
/// follower also requests every new part by its range, each hint (the two open Range forms in
/// turn), and each segment once listed complete.
async fn follow(
    client: Client,
    t0: Instant,
    base: String,
    uri: String,
    rendition: usize,
    until: Instant,
    collected: Arc<Mutex<Collected>>,
) -> Vec<Reload> {
    let route = format!("{base}{uri}");
    let mut reloads = Vec::new();
    let mut probes = tokio::task::JoinSet::new();
    let mut fetched_parts = std::collections::HashSet::new();
    let mut fetched_wholes = std::collections::HashSet::new();
    let mut hinted = std::collections::HashSet::new();
    let mut forms = ["bytes=N-9007199254740991", "bytes=N-"].into_iter().cycle();
    let mut wanted = None;
    let mut n = 0u32;
    while Instant::now() < until {
        let skip = n % 4 == 3;
        n += 1;
        let reload = fetch_playlist(&client, t0, rendition, route.clone(), wanted, skip).await;
        let next = reload.playlist.as_ref().and_then(|p| {
            let (msn, part) = p.edge()?;
            Some((msn, Some(part.map_or(0, |p| p + 1))))
        });
        if rendition == 0 {
            if let Some(p) = &reload.playlist {
                for seg in &p.segments {
                    let mut end = 0;
                    for part in &seg.parts {
                        let Some((len, offset)) = part.range else { continue };
                        let offset = offset.unwrap_or(end);
                        end = offset + len;
                        if len > 0 && fetched_parts.insert((part.uri.clone(), offset)) {
                            let (client, route) = (client.clone(), format!("{base}{}", part.uri));
                            let uri = part.uri.clone();
                            probes
                                .spawn(async move { Probed::Part(probe_part(client, route, uri, offset, len).await) });
                        }
                    }
                    let has_fetched_parts = fetched_parts.iter().any(|(u, _)| *u == seg.uri);
                    if seg.extinf.is_some() && has_fetched_parts && fetched_wholes.insert(seg.uri.clone()) {
                        let (client, route, uri) = (client.clone(), format!("{base}{}", seg.uri), seg.uri.clone());
                        probes.spawn(async move { Probed::Whole(probe_whole(client, route, uri).await) });
                    }
                }
                for hint in p.hints.iter().filter(|h| h.kind == "PART") {
                    if hinted.insert((hint.uri.clone(), hint.start)) {
                        let form = forms.next().unwrap_or("bytes=N-");
                        let (client, base, hint) = (client.clone(), base.clone(), hint.clone());
                        probes.spawn(async move { Probed::Hint(probe_hint(client, base, hint, form).await) });
                    }
                }
            }
        }
        reloads.push(reload);
        match next {
            Some(next) => wanted = Some(next),
            // A failed reload: start again as on a first load, after a moment.
            None => {
                wanted = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut collected = collected.lock().await;
    while let Some(done) = probes.join_next().await {
        match done {
            Ok(Probed::Hint(h)) => collected.hints.push(h),
            Ok(Probed::Part(p)) => collected.parts.push(p),
            Ok(Probed::Whole(w)) => collected.wholes.push(w),
            Err(e) => panic!("a probe task panicked: {e}"),
        }
    }
    reloads
}

enum Probed {
    Hint(HintProbe),
    Part(PartProbe),
    Whole(WholeProbe),
}

/// Every rendition fetched at once (non-blocking), every half second until `until`.
async fn sample(
    client: Client,
    t0: Instant,
    base: String,
    renditions: Vec<String>,
    until: Instant,
) -> Vec<Vec<Reload>> {
    let mut samples = Vec::new();
    while Instant::now() < until {
        let fetches = renditions.iter().enumerate().map(|(i, uri)| {
            let client = client.clone();
            let route = format!("{base}{uri}");
            async move { fetch_playlist(&client, t0, i, route, None, false).await }
        });
        samples.push(futures_util::future::join_all(fetches).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    samples
}

/// For each rendition, the complete segments its playlist lists now (up to 6 newest): their
/// PROGRAM-DATE-TIME and the media time their first fragment starts at (tfdt / timescale).
async fn media_times(
    client: &Client,
    base: &str,
    renditions: &[String],
) -> Vec<(usize, u64, String, Result<f64, String>)> {
    let mut times = Vec::new();
    for (i, uri) in renditions.iter().enumerate() {
        let reload = fetch_playlist(client, Instant::now(), i, format!("{base}{uri}"), None, false).await;
        let Some(p) = reload.playlist else { continue };
        let Some(init) = p.segments.iter().find_map(|seg| seg.map.clone()) else {
            continue;
        };
        let init = client.get(&format!("{base}{init}")).send().await;
        let init = match init {
            Ok(r) if r.status == 200 => r.bytes().await.unwrap_or_default(),
            _ => continue,
        };
        let Some(scale) = timescale(&init).filter(|t| *t > 0) else {
            continue;
        };
        let complete: Vec<_> = p.segments.iter().filter(|seg| seg.extinf.is_some()).collect();
        for seg in complete.iter().rev().take(6) {
            let Some(pdt) = seg.pdt.clone() else { continue };
            let body = match client.get(&format!("{base}{}", seg.uri)).send().await {
                Ok(r) if r.status == 200 => r.bytes().await,
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e),
            };
            let start = body.and_then(|b| {
                first_decode_time(&b)
                    .map(|t| t as f64 / f64::from(scale))
                    .ok_or_else(|| "no moof/traf/tfdt".to_owned())
            });
            times.push((i, seg.msn, pdt, start));
        }
    }
    times
}

/// One player over `proto` on the stream `path`: follows, samples, then probes.
async fn session(server: &TestServer, arrivals: Arrivals, path: IngestPath, proto: Proto) -> Session {
    let client = server.client_for(proto).await;
    let t0 = Instant::now();
    let base = path.base().to_owned();
    let multivariant = fetch_playlist(&client, t0, usize::MAX, format!("{base}stream.m3u8"), None, false).await;
    assert_eq!(
        multivariant.status,
        200,
        "{} over {}: the multivariant playlist: {:?}",
        path.label(),
        proto.label(),
        multivariant.error
    );
    let renditions = media_uris(&multivariant.text);
    assert!(
        renditions.len() >= 2,
        "{}: several renditions in {}",
        path.label(),
        multivariant.text
    );

    let until = Instant::now() + FOLLOW;
    let collected = Arc::new(Mutex::new(Collected::default()));
    let followers = renditions.iter().enumerate().map(|(i, uri)| {
        follow(
            client.clone(),
            t0,
            base.clone(),
            uri.clone(),
            i,
            until,
            collected.clone(),
        )
    });
    let (followed, samples) = tokio::join!(
        futures_util::future::join_all(followers),
        sample(client.clone(), t0, base.clone(), renditions.clone(), until)
    );
    let reloads: Vec<Reload> = followed.into_iter().flatten().collect();
    let Collected { hints, parts, wholes } = std::mem::take(&mut *collected.lock().await);

    let first = format!("{base}{}", renditions[0]);
    let fresh = || async { fetch_playlist(&client, t0, 0, first.clone(), None, false).await };

    // _HLS_msn three past the last segment: 400 at once. A segment that completes meanwhile
    // makes it two past: try again then.
    let mut too_far = Vec::new();
    for _ in 0..3 {
        let Some((edge, _)) = fresh().await.playlist.and_then(|p| p.edge()) else {
            continue;
        };
        let r = fetch_playlist(&client, t0, 0, first.clone(), Some((edge + 3, None)), false).await;
        let moved = fresh()
            .await
            .playlist
            .and_then(|p| p.edge())
            .is_some_and(|(now, _)| now > edge);
        let done = r.status == 400 || !moved;
        too_far.push(r);
        if done {
            break;
        }
    }
    let no_msn = Some(fetch_playlist(&client, t0, 0, format!("{first}?_HLS_part=1"), None, false).await);

    // _HLS_msn of the growing segment alone: held until it is complete.
    let growing = fresh().await.playlist.and_then(|p| {
        let last = p.segments.last()?;
        Some(if last.extinf.is_some() { last.msn + 1 } else { last.msn })
    });
    let msn_only = match growing {
        Some(msn) => Some(fetch_playlist(&client, t0, 0, first.clone(), Some((msn, None)), false).await),
        None => None,
    };

    // A full playlist and a delta update of the same moment (both answered at once).
    let mut delta_pairs = Vec::new();
    for _ in 0..5 {
        let full = fresh().await;
        let delta = fetch_playlist(&client, t0, 0, first.clone(), None, true).await;
        let same = matches!((&full.playlist, &delta.playlist), (Some(f), Some(d)) if f.edge() == d.edge());
        delta_pairs.push((full, delta));
        if same {
            break;
        }
    }

    let missing = vec![
        fetch_playlist(
            &client,
            t0,
            usize::MAX,
            format!("{base}stream.nosuch.m3u8"),
            None,
            false,
        )
        .await,
        fetch_playlist(&client, t0, usize::MAX, format!("{base}nosuch-00001.m4s"), None, false).await,
    ];

    let media_times = media_times(&client, &base, &renditions).await;

    Session {
        media_times,
        path,
        proto,
        part_target_ms: 0,
        t0,
        arrivals,
        multivariant,
        renditions,
        reloads,
        samples,
        hints,
        parts,
        wholes,
        too_far,
        no_msn,
        msn_only,
        delta_pairs,
        missing,
    }
}

// ---------------------------------------------------------------------------------------------
// The table.

fn cell(verdicts: &[&Verdict]) -> &'static str {
    if verdicts.iter().any(|v| matches!(v, Verdict::Fail(_))) {
        "FAIL"
    } else if verdicts.iter().any(|v| matches!(v, Verdict::Pass(_))) {
        "pass"
    } else {
        "n/a"
    }
}

/// The recommendations ldash does not follow on purpose, and why (docs/apple-ll-hls-profile.md):
/// a failure of these is printed, not counted.
const BENT: &[(&str, &str)] = &[(
    "cache-errors",
    "errors are never cached: a 404 or 400 cached at a CDN for one to four target durations would \
     keep players from a segment or part that exists a moment later (ldash holds early requests for \
     the next segments instead of answering 404)",
)];

/// --part-target-ms of the second run: two of the encoders' 0.2 s chunks a part.
const GROUPED_PART_TARGET_MS: u64 = 400;

/// One server with `part_target_ms`, fed by one ffmpeg per ingest path, and a player per path and
/// protocol on it: what they observed.
async fn run(ffmpeg: &std::path::Path, part_target_ms: u64) -> Vec<Session> {
    let started = Instant::now();
    let server = TestServer::start_with(|c| c.part_target_ms = part_target_ms).await;
    let (arrivals, recording) = record_arrivals(&server);
    // One source per ingest path, both feeding the one server.
    let mut dash = server.encoder(ffmpeg, Ingest::PutPersistent, 40);
    let cmaf = CmafIngest::test_stream(&server.url(Proto::H1, "/ldash/upload/ch1"), true, true, 40);
    let mut cmaf = Encoder::start(cmaf.command(ffmpeg)).expect("ffmpeg starts");
    // Every rendition has a complete segment and parts of the next.
    for segment in [
        "live/chunk-stream0-00002.m4s",
        "live/chunk-stream2-00002.m4s",
        "ch1/chunk-video_hi-00002.m4s",
        "ch1/chunk-audio-00002.m4s",
    ] {
        server.upload_started(segment, Duration::from_secs(20)).await;
    }
    eprintln!(
        "--part-target-ms {part_target_ms}: streams up after {:.1?}",
        started.elapsed()
    );

    let mut runs = Vec::new();
    for path in [IngestPath::Dash, IngestPath::Cmaf] {
        for proto in PROTOS {
            runs.push(session(&server, arrivals.clone(), path, proto));
        }
    }
    let mut sessions = futures_util::future::join_all(runs).await;
    for s in &mut sessions {
        s.part_target_ms = part_target_ms;
    }
    eprintln!(
        "--part-target-ms {part_target_ms}: followed and probed after {:.1?}",
        started.elapsed()
    );

    let dash_running = dash.child.try_wait().expect("ffmpeg status").is_none();
    let cmaf_running = cmaf.child.try_wait().expect("ffmpeg status").is_none();
    let _ = dash.stop().await;
    let _ = cmaf.stop().await;
    let logs = format!("DASH ffmpeg: {}\nCMAF ffmpeg: {}", dash.log().await, cmaf.log().await);
    assert!(
        dash_running && cmaf_running,
        "both encoders ran to the end of the checks: {logs}"
    );
    recording.abort();
    server.stop().await;
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ldash_meets_apples_low_latency_server_profile_over_http2_and_http3_for_both_ingests() {
    let Some(ffmpeg) = require_tool("ffmpeg") else {
        return;
    };
    let started = Instant::now();
    // ldash's default (a part per CMAF chunk), then parts grouping two chunks: one after the
    // other, so the timing rules do not measure two runs competing for the machine.
    let mut sessions = run(&ffmpeg, 0).await;
    sessions.extend(run(&ffmpeg, GROUPED_PART_TARGET_MS).await);

    let rules = rules();
    let judged: Vec<Vec<Verdict>> = rules
        .iter()
        .map(|rule| sessions.iter().map(|s| (rule.check)(s)).collect())
        .collect();

    // The measurements, per rule and session.
    for (rule, verdicts) in rules.iter().zip(&judged) {
        eprintln!("{} ({}): {}", rule.id, rule.source, rule.text);
        for (s, v) in sessions.iter().zip(verdicts) {
            let (mark, text) = match v {
                Verdict::Pass(t) => ("pass", t),
                Verdict::Fail(t) => ("FAIL", t),
                Verdict::NotApplicable(t) => ("n/a ", t),
            };
            eprintln!("    {mark} {}: {text}", s.label());
        }
    }

    let column = |verdicts: &[Verdict], keep: &dyn Fn(&Session) -> bool| {
        let picked: Vec<&Verdict> = sessions
            .iter()
            .zip(verdicts)
            .filter(|(s, _)| keep(s))
            .map(|(_, v)| v)
            .collect();
        cell(&picked)
    };
    let mut table = format!(
        "\n| rule | source | HTTP/2 | HTTP/3 | DASH ingest | CMAF ingest | parts of two chunks |\n{}\n",
        "| --- | --- | --- | --- | --- | --- | --- |"
    );
    for (rule, verdicts) in rules.iter().zip(&judged) {
        table.push_str(&format!(
            "| {}: {} | {} | {} | {} | {} | {} | {} |\n",
            rule.id,
            rule.text,
            rule.source,
            column(verdicts, &|s| s.part_target_ms == 0 && s.proto == Proto::H2Tls),
            column(verdicts, &|s| s.part_target_ms == 0 && s.proto == Proto::H3),
            column(verdicts, &|s| s.part_target_ms == 0 && s.path == IngestPath::Dash),
            column(verdicts, &|s| s.part_target_ms == 0 && s.path == IngestPath::Cmaf),
            column(verdicts, &|s| s.part_target_ms > 0),
        ));
    }
    eprintln!("{table}");
    eprintln!("the whole check took {:.1?}", started.elapsed());

    let mut failures = Vec::new();
    for (rule, verdicts) in rules.iter().zip(&judged) {
        let bent = BENT.iter().find(|(id, _)| *id == rule.id).map(|(_, why)| why);
        for (s, v) in sessions.iter().zip(verdicts) {
            if let Verdict::Fail(evidence) = v {
                match bent {
                    Some(why) => eprintln!("BENT {} on purpose, {}: {why}", rule.id, s.label()),
                    None => failures.push(format!("{} ({}), {}:\n  {evidence}", rule.id, rule.source, s.label())),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} rule checks failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
