//! The DASH manifest of a packaged channel, as an encoder that writes DASH would upload it: a
//! dynamic MPD with one SegmentTemplate (`$Number$`) per representation, video tracks in one
//! adaptation set and audio tracks in another. The low-latency parts (availabilityTimeOffset,
//! UTCTiming to ldash's clock, ServiceDescription) are added on every GET by the same rewrite as for
//! any uploaded MPD.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::channel::{Channel, Kind, Run, Track};
use crate::media::mpd::format_duration;

/// The channel's manifest, in the channel's folder.
pub const MANIFEST: &str = "stream.mpd";

/// What run `run`'s file names carry: nothing for the first, `.p{run}` before the extension for
/// the others (representation ids hold no '.', so names never collide).
fn run_suffix(run: u64) -> String {
    if run == 0 {
        String::new()
    } else {
        format!(".p{run}")
    }
}

/// The file name of track `id`'s init segment in run `run`.
pub fn init_name(id: &str, run: u64) -> String {
    format!("init-{id}{}.m4s", run_suffix(run))
}

/// The file name of track `id`'s segment `number`, of run `run`.
pub fn segment_name(id: &str, number: u64, run: u64) -> String {
    format!("chunk-{id}-{number:05}{}.m4s", run_suffix(run))
}

/// A name without its run suffix, and the run (0 without one).
fn without_run(stem: &str) -> Option<(&str, u64)> {
    match stem.rsplit_once(".p") {
        Some((rest, run)) if !run.is_empty() && run.bytes().all(|b| b.is_ascii_digit()) => {
            Some((rest, run.parse().ok()?))
        }
        _ => Some((stem, 0)),
    }
}

/// The track, number and run of a [`segment_name`]; None for any other name.
pub fn parse_segment_name(name: &str) -> Option<(&str, u64, u64)> {
    let stem = name.strip_prefix("chunk-")?.strip_suffix(".m4s")?;
    let (stem, run) = without_run(stem)?;
    let (id, digits) = stem.rsplit_once('-')?;
    if id.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id, digits.parse().ok()?, run))
}

/// The track and run of an [`init_name`]; None for any other name.
pub fn parse_init_name(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_prefix("init-")?.strip_suffix(".m4s")?;
    let (id, run) = without_run(stem)?;
    (!id.is_empty()).then_some((id, run))
}

/// The comment that marks a manifest the packager wrote (and may pick up again after a restart).
pub const PACKAGED: &str = "<!-- ldash: packaged from CMAF ingest -->";

/// Bits per second assumed before a track's first segment is measured.
pub(super) const UNMEASURED: [(Kind, u64); 3] =
    [(Kind::Video, 2_000_000), (Kind::Audio, 128_000), (Kind::Other, 100_000)];

/// One Period as written: its run, its start in the document, and its first segment.
#[derive(Debug, Clone, Copy)]
struct Listed {
    run: Run,
    start: Duration,
    first: u64,
    /// The run has ended: the last segment number of any track in it.
    last: Option<u64>,
}

impl Channel {
    /// The manifest as of `now`, once the channel has a timeline (its first chunk); None before.
    pub fn manifest(&self, now: SystemTime) -> Option<String> {
        let origin = self.origin?;
        let d = self.options.segment_duration;
        // Complete segments in the window: the newest one grows.
        let window = d.saturating_mul(u32::try_from(self.options.window.saturating_sub(1)).unwrap_or(u32::MAX));
        let update = d.saturating_mul(2).max(Duration::from_secs(2));
        let head = format!(
            "type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
             minimumUpdatePeriod=\"{}\" minBufferTime=\"{}\" timeShiftBufferDepth=\"{}\" \
             maxSegmentDuration=\"{}\"",
            humantime::format_rfc3339_millis(origin),
            humantime::format_rfc3339_millis(now.max(origin)),
            format_duration(update),
            format_duration(d),
            format_duration(window),
            format_duration(d),
        );
        // Every run that still has a segment in some track's window.
        let lowest = self.listed().filter_map(|t| t.oldest).min().unwrap_or(0);
        let periods = self.periods(lowest, |run, last| Listed {
            run,
            start: run.start,
            first: run.first,
            last,
        });
        Some(self.document(&head, &periods))
    }

    /// The manifest of the ended channel: static, from the oldest segment every track still has to
    /// the newest they all have. None before the first chunk.
    pub fn final_manifest(&self, now: SystemTime) -> Option<String> {
        let origin = self.origin?;
        let first = self.listed().filter_map(|t| t.oldest).max()?;
        let last = self.listed().filter_map(|t| t.newest).min()?.max(first);
        let d = self.options.segment_duration;
        let at = |run: &Run, number: u64| {
            run.start
                .saturating_add(d.saturating_mul(u32::try_from(number.saturating_sub(run.first)).unwrap_or(u32::MAX)))
        };
        // The presentation starts with segment `first`.
        let from = at(
            self.runs
                .iter()
                .rev()
                .find(|r| r.first <= first)
                .or(self.runs.first())?,
            first,
        );
        let periods = self.periods(first, |run, last| {
            let number = run.first.max(first);
            Listed {
                run,
                start: at(&run, number).saturating_sub(from),
                first: number,
                last,
            }
        });
        let last_run = periods.last()?;
        // To the end of the shortest track of the last run, and no further than its segment `last`.
        let run_media_start =
            d.saturating_mul(u32::try_from(last_run.run.local_first.saturating_sub(1)).unwrap_or(u32::MAX));
        let media = self
            .listed()
            .filter(|t| t.end > 0)
            .map(|t| Duration::try_from_secs_f64(t.end as f64 / f64::from(t.timescale.max(1))).unwrap_or_default())
            .min()
            .unwrap_or_default()
            .saturating_sub(run_media_start);
        let cap =
            d.saturating_mul(u32::try_from(last.saturating_add(1).saturating_sub(last_run.first)).unwrap_or(u32::MAX));
        let duration = last_run.start.saturating_add(media.min(cap));
        let head = format!(
            "type=\"static\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
             mediaPresentationDuration=\"{}\" minBufferTime=\"{}\" maxSegmentDuration=\"{}\"",
            humantime::format_rfc3339_millis(origin),
            humantime::format_rfc3339_millis(now.max(origin)),
            format_duration(duration),
            format_duration(d),
            format_duration(d),
        );
        Some(self.document(&head, &periods))
    }

    /// The tracks the manifest lists.
    fn listed(&self) -> impl Iterator<Item = &Track> {
        self.tracks.values().filter(|t| t.kind != Kind::Other)
    }

    /// The runs with segments numbered `lowest` or later, as `period` writes them (given the run's
    /// last segment number when it has ended).
    fn periods(&self, lowest: u64, period: impl Fn(Run, Option<u64>) -> Listed) -> Vec<Listed> {
        let ends = self.runs.iter().skip(1).map(|r| r.first).chain([u64::MAX]);
        self.runs
            .iter()
            .zip(ends)
            .filter(|(run, end)| *end > run.first && *end > lowest)
            .map(|(run, end)| period(*run, (end != u64::MAX).then(|| end - 1)))
            .collect()
    }

    /// The document, with `head` as the MPD element's attributes after its profiles.
    fn document(&self, head: &str, periods: &[Listed]) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{PACKAGED}\n\
             <MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
             profiles=\"urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019\" \
             {head}>"
        );
        for period in periods {
            let _ = writeln!(
                out,
                "  <Period id=\"{}\" start=\"{}\">",
                period.run.id,
                format_duration(period.start)
            );
            for (set, (kind, content, mime)) in
                [(Kind::Video, "video", "video/mp4"), (Kind::Audio, "audio", "audio/mp4")]
                    .into_iter()
                    .enumerate()
            {
                let tracks: Vec<(&String, &Track)> = self.tracks.iter().filter(|(_, t)| t.kind == kind).collect();
                if tracks.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "    <AdaptationSet id=\"{set}\" contentType=\"{content}\" mimeType=\"{mime}\" \
                     segmentAlignment=\"true\" startWithSAP=\"1\">"
                );
                for (id, track) in tracks {
                    self.representation(&mut out, id, track, period);
                }
                out.push_str("    </AdaptationSet>\n");
            }
            out.push_str("  </Period>\n");
        }
        out.push_str("</MPD>\n");
        out
    }

    fn representation(&self, out: &mut String, id: &str, track: &Track, period: &Listed) {
        let bandwidth = track.bandwidth.unwrap_or_else(|| {
            UNMEASURED
                .iter()
                .find(|(kind, _)| *kind == track.kind)
                .map_or(100_000, |(_, b)| *b)
        });
        let coding = &track.coding;
        let _ = write!(out, "      <Representation id=\"{id}\" bandwidth=\"{bandwidth}\"");
        if !coding.codecs.is_empty() {
            let _ = write!(out, " codecs=\"{}\"", escape(&coding.codecs));
        }
        if let Some((width, height)) = coding.size.filter(|(w, h)| *w > 0 && *h > 0) {
            let _ = write!(out, " width=\"{width}\" height=\"{height}\"");
        }
        if let Some(rate) = coding.sample_rate.filter(|r| *r > 0) {
            let _ = write!(out, " audioSamplingRate=\"{rate}\"");
        }
        out.push_str(">\n");
        if let Some(channels) = coding.channels.filter(|c| *c > 0 && track.kind == Kind::Audio) {
            let _ = writeln!(
                out,
                "        <AudioChannelConfiguration \
                 schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{channels}\"/>"
            );
        }
        let duration = (self.options.segment_duration.as_secs_f64() * f64::from(track.timescale)).round() as u64;
        // The period starts with segment `first`, which the run's timeline puts at media time
        // (local - 1) * duration.
        let offset = period
            .run
            .local(period.first)
            .saturating_sub(1)
            .saturating_mul(duration);
        let suffix = run_suffix(period.run.id);
        let _ = write!(out, "        <SegmentTemplate timescale=\"{}\"", track.timescale);
        // An ended run lists its segments (a SegmentTimeline): between its last segment and the
        // next Period's start the encoder was away, and a template with a duration would promise
        // segments there that never come (Shaka asked for one again and again).
        let timeline = period.last.map(|last| {
            let last = track.last_of_run.get(&period.run.id).copied().unwrap_or(last);
            last.saturating_sub(period.first)
        });
        if timeline.is_none() {
            let _ = write!(out, " duration=\"{duration}\"");
        }
        let _ = write!(out, " startNumber=\"{}\"", period.first);
        if offset > 0 {
            let _ = write!(out, " presentationTimeOffset=\"{offset}\"");
        }
        let _ = write!(
            out,
            " initialization=\"init-$RepresentationID${suffix}.m4s\" \
             media=\"chunk-$RepresentationID$-$Number%05d${suffix}.m4s\""
        );
        match timeline {
            None => out.push_str("/>\n"),
            Some(repeat) => {
                let _ = writeln!(
                    out,
                    ">\n          <SegmentTimeline><S t=\"{offset}\" d=\"{duration}\" r=\"{repeat}\"/></SegmentTimeline>\n\
                     \x20       </SegmentTemplate>"
                );
            }
        }
        out.push_str("      </Representation>\n");
    }
}

/// XML attribute escaping for the few values taken from the encoder's bytes.
fn escape(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}
