//! The DASH manifest of a packaged channel, as an encoder that writes DASH would upload it: a
//! dynamic MPD with one SegmentTemplate (`$Number$`) per representation, video tracks in one
//! adaptation set and audio tracks in another. The low-latency parts (availabilityTimeOffset,
//! UTCTiming to ldash's clock, ServiceDescription) are added on every GET by the same rewrite as for
//! any uploaded MPD.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::channel::{Channel, Kind, Track};
use crate::media::mpd::format_duration;

/// The channel's manifest, in the channel's folder.
pub const MANIFEST: &str = "stream.mpd";

/// The file name of track `id`'s init segment.
pub fn init_name(id: &str) -> String {
    format!("init-{id}.m4s")
}

/// The file name of track `id`'s segment `number`.
pub fn segment_name(id: &str, number: u64) -> String {
    format!("chunk-{id}-{number:05}.m4s")
}

/// The media template: [`segment_name`] for every representation and number.
const MEDIA: &str = "chunk-$RepresentationID$-$Number%05d$.m4s";

/// Bits per second assumed before a track's first segment is measured.
const UNMEASURED: [(Kind, u64); 3] = [(Kind::Video, 2_000_000), (Kind::Audio, 128_000), (Kind::Other, 100_000)];

impl Channel {
    /// The manifest as of `now`, once the channel has a timeline (its first chunk); None before.
    pub fn manifest(&self, now: SystemTime) -> Option<String> {
        let anchor = self.anchor?;
        let d = self.options.segment_duration;
        // Complete segments in the window: the newest one grows.
        let window = d.saturating_mul(u32::try_from(self.options.window.saturating_sub(1)).unwrap_or(u32::MAX));
        let update = d.saturating_mul(2).max(Duration::from_secs(2));
        let head = format!(
            "type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
             minimumUpdatePeriod=\"{}\" minBufferTime=\"{}\" timeShiftBufferDepth=\"{}\" \
             maxSegmentDuration=\"{}\"",
            humantime::format_rfc3339_millis(anchor),
            humantime::format_rfc3339_millis(now.max(anchor)),
            format_duration(update),
            format_duration(d),
            format_duration(window),
            format_duration(d),
        );
        Some(self.document(&head, 1))
    }

    /// The manifest of the ended channel: static, from the oldest segment every track still has to
    /// the newest they all have. None before the first chunk.
    pub fn final_manifest(&self, now: SystemTime) -> Option<String> {
        let anchor = self.anchor?;
        let listed = || self.tracks.values().filter(|t| t.kind != Kind::Other);
        let first = listed().filter_map(|t| t.oldest).max()?;
        let last = listed().filter_map(|t| t.newest).min()?.max(first);
        let d = self.options.segment_duration;
        // From the start of segment `first` to the end of the shortest track.
        let end = listed()
            .map(|t| Duration::try_from_secs_f64(t.end as f64 / f64::from(t.timescale.max(1))).unwrap_or_default())
            .min()
            .unwrap_or_default();
        let start = d.saturating_mul(u32::try_from(first.saturating_sub(1)).unwrap_or(u32::MAX));
        let duration = end
            .saturating_sub(start)
            .min(d.saturating_mul(u32::try_from(last - first + 1).unwrap_or(u32::MAX)));
        let head = format!(
            "type=\"static\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
             mediaPresentationDuration=\"{}\" minBufferTime=\"{}\" maxSegmentDuration=\"{}\"",
            humantime::format_rfc3339_millis(anchor),
            humantime::format_rfc3339_millis(now.max(anchor)),
            format_duration(duration),
            format_duration(d),
            format_duration(d),
        );
        Some(self.document(&head, first))
    }

    /// The document, with `head` as the MPD element's attributes after its profiles, listing
    /// segments from `first` on.
    fn document(&self, head: &str, first: u64) -> String {
        let mut out = String::with_capacity(2048);
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
             <MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
             profiles=\"urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019\" \
             {head}>\n  <Period id=\"0\" start=\"PT0S\">\n"
        );
        for (set, (kind, content, mime)) in [(Kind::Video, "video", "video/mp4"), (Kind::Audio, "audio", "audio/mp4")]
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
                self.representation(&mut out, id, track, first);
            }
            out.push_str("    </AdaptationSet>\n");
        }
        out.push_str("  </Period>\n</MPD>\n");
        out
    }

    fn representation(&self, out: &mut String, id: &str, track: &Track, first: u64) {
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
        // Segment `first` starts at media time (first - 1) * duration.
        let offset = first.saturating_sub(1).saturating_mul(duration);
        let _ = write!(
            out,
            "        <SegmentTemplate timescale=\"{}\" duration=\"{duration}\" startNumber=\"{first}\"",
            track.timescale
        );
        if offset > 0 {
            let _ = write!(out, " presentationTimeOffset=\"{offset}\"");
        }
        let _ = writeln!(
            out,
            " initialization=\"{}\" media=\"{MEDIA}\"/>",
            init_name("$RepresentationID$")
        );
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
