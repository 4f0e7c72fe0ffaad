//! The DVR window's rules (`--dvr-window`): which segments the window still keeps, which have aged
//! out of it, and how far back a live MPD may reach. Pure, like the rest of the state (the time is
//! an argument): the driver deletes what aged out ([`State::dvr_expired`]), the upload route
//! answers an encoder's DELETE of a kept segment without carrying it out ([`State::dvr_keeps`]),
//! and the MPD rewrite advertises the depth ([`State::dvr_depth`]).
//!
//! A segment's age counts from the start of its upload (for one found on disk at start, from when
//! it was written). It is kept for the window and two of its stream's longest segments more: a
//! player that starts at the far end of the advertised window asks for the segment there a moment
//! later, and it must still be there.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{longest_segment, numbered, Folder, State};
use crate::media::mpd::Mpd;
use crate::store::StorePath;

/// Whether a segment whose upload started at `started` is still kept at `now` by a DVR window of
/// `window`, `slack` included.
pub fn within(started: Instant, now: Instant, window: Duration, slack: Duration) -> bool {
    now.saturating_duration_since(started) <= window.saturating_add(slack)
}

impl Folder {
    /// What the folder's segments are kept beyond the window: two of its longest segments.
    fn dvr_slack(&self) -> Duration {
        self.mpds
            .values()
            .map(|(_, mpd)| longest_segment(mpd))
            .max()
            .unwrap_or(Duration::from_secs(1))
            .saturating_mul(2)
    }
}

impl State {
    /// Whether the DVR window keeps segment `path` at `now`: there is a window, the index holds
    /// `path` as a media segment (not an init segment nor a manifest), and it is young enough.
    pub fn dvr_keeps(&self, path: &StorePath, now: Instant) -> bool {
        let Some(window) = self.options.dvr_window else {
            return false;
        };
        let Some(f) = self.folders.get(path.folder()) else {
            return false;
        };
        f.segments
            .get(path.name())
            .is_some_and(|index| within(index.started, now, window, f.dvr_slack()))
    }

    /// The segments that aged out of the DVR window at `now`, each with the arrival of the
    /// version indexed (the driver deletes a path only if no later upload replaced it). None
    /// without a window: then only the encoder (and the TTL) removes segments.
    pub fn dvr_expired(&self, now: Instant) -> Vec<(StorePath, u64)> {
        let Some(window) = self.options.dvr_window else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        for (folder, f) in &self.folders {
            let slack = f.dvr_slack();
            let aged = f
                .segments
                .iter()
                .filter(|(_, index)| !within(index.started, now, window, slack));
            for (name, index) in aged {
                if let Ok(path) = StorePath::in_folder(folder, name) {
                    expired.push((path, index.arrival));
                }
            }
        }
        expired
    }

    /// How far back the live `mpd` of `folder` may reach at `now` with a DVR window: to the start
    /// of the oldest segment that every representation still has ([`State::oldest_kept`]), and no
    /// further than the window. None without a window, for a static MPD, or when no template says
    /// where its segments start (a SegmentTimeline lists its segments itself).
    pub fn dvr_depth(&self, folder: &str, mpd: &Mpd, now: SystemTime) -> Option<Duration> {
        let window = self.options.dvr_window?;
        if !mpd.dynamic {
            return None;
        }
        // A bound after now is nothing kept (or a clock ahead): no depth to write.
        let from = self.oldest_kept(folder, mpd)?;
        Some(now.duration_since(from).ok()?.min(window))
    }

    /// When the oldest segment that every representation of `mpd` still has starts, by their
    /// `$Number$` templates with a duration (a representation kept across Periods counts from its
    /// oldest Period): what a time view may reach back to. A representation whose oldest kept
    /// segment is in a Period with a SegmentTimeline does not bound it (the MPD lists those
    /// segments itself). None when nothing bounds it.
    pub fn oldest_kept(&self, folder: &str, mpd: &Mpd) -> Option<SystemTime> {
        let f = self.folders.get(folder)?;
        let ast = mpd.availability_start?;
        // The start of each representation's oldest segment, by representation id (None: in a
        // timeline, unknown here).
        let mut oldest: HashMap<&str, Option<SystemTime>> = HashMap::new();
        for period in &mpd.periods {
            let period_start = ast.checked_add(period.start.unwrap_or_default())?;
            for rep in period.adaptation_sets.iter().flat_map(|a| &a.representations) {
                let Some(template) = rep.template.as_ref() else {
                    continue;
                };
                let Some(first) = numbered(f, rep, template).map(|(n, _)| n).min() else {
                    continue;
                };
                let start = match template.segment_duration().filter(|_| !template.has_timeline) {
                    Some(duration) => {
                        let count = u32::try_from(first.saturating_sub(template.start_number)).ok()?;
                        Some(period_start.checked_add(duration.checked_mul(count)?)?)
                    }
                    None => None,
                };
                // Periods come in order: the first with a kept segment holds the oldest.
                oldest.entry(rep.id.as_str()).or_insert(start);
            }
        }
        if oldest.is_empty() {
            // Nothing kept: no time of the stream is there any more.
            return SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(253_402_300_799));
        }
        // Any representation unknown: no bound (a view then reaches what the MPD lists).
        let known: Option<Vec<SystemTime>> = oldest.into_values().collect();
        known?.into_iter().max()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::live::state::LiveOptions;
    use crate::media::mpd;

    const MPD: &str = r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
        availabilityStartTime="2026-01-01T00:00:00Z" timeShiftBufferDepth="PT4S">
      <Period id="0" start="PT0S"><AdaptationSet contentType="video">
        <Representation id="0" bandwidth="1000">
          <SegmentTemplate timescale="1000" duration="2000" startNumber="1"
            initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s"/>
        </Representation>
        <Representation id="1" bandwidth="1000">
          <SegmentTemplate timescale="1000" duration="2000" startNumber="1"
            initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s"/>
        </Representation>
      </AdaptationSet></Period></MPD>"#;

    fn state(window: Option<u64>) -> (State, Arc<Mpd>, StorePath) {
        let mut state = State::new(LiveOptions {
            dvr_window: window.map(Duration::from_secs),
            ..LiveOptions::default()
        });
        let path = StorePath::new("live/stream.mpd").expect("a path");
        let mpd = Arc::new(mpd::parse(MPD.as_bytes()).expect("the MPD parses"));
        state.manifest_parsed(&path, "v1", Arc::clone(&mpd), Instant::now());
        (state, mpd, path)
    }

    fn segment(state: &mut State, name: &str, arrival: u64, at: Instant) -> StorePath {
        let path = StorePath::new(&format!("live/{name}")).expect("a path");
        state.segment_started(&path, arrival, &[], at);
        path
    }

    #[test]
    fn a_segment_is_kept_for_the_window_and_two_segments_more() {
        let start = Instant::now();
        let window = Duration::from_secs(60);
        let slack = Duration::from_secs(4);
        assert!(within(start, start, window, slack));
        assert!(within(start, start + window + slack, window, slack));
        assert!(!within(
            start,
            start + window + slack + Duration::from_millis(1),
            window,
            slack
        ));
        assert!(
            within(start + window, start, window, slack),
            "a start after now is young"
        );
    }

    #[test]
    fn kept_segments_age_out_and_only_media_segments_are_kept() {
        let (mut state, _, _) = state(Some(60));
        let t0 = Instant::now();
        let old = segment(&mut state, "chunk-0-00001.m4s", 7, t0);
        let young = segment(&mut state, "chunk-0-00002.m4s", 8, t0 + Duration::from_secs(30));
        let at = t0 + Duration::from_secs(64);
        assert!(state.dvr_keeps(&old, at), "60 s and two 2 s segments");
        assert!(state.dvr_expired(at).is_empty());
        let at = t0 + Duration::from_secs(65);
        assert!(!state.dvr_keeps(&old, at));
        assert!(state.dvr_keeps(&young, at));
        assert_eq!(state.dvr_expired(at), vec![(old, 7)], "with its arrival");
        let init = StorePath::new("live/init-0.m4s").expect("a path");
        assert!(!state.dvr_keeps(&init, t0), "not indexed as a segment: deleted at once");
        let (mut off, _, _) = self::state(None);
        let path = segment(&mut off, "chunk-0-00001.m4s", 1, t0);
        assert!(!off.dvr_keeps(&path, t0), "no window: the encoder decides");
        assert!(off.dvr_expired(t0 + Duration::from_secs(86_400)).is_empty());
    }

    #[test]
    fn the_depth_reaches_the_oldest_segment_every_representation_has() {
        let (mut state, mpd, path) = state(Some(60));
        let ast = mpd.availability_start.expect("an availabilityStartTime");
        let t0 = Instant::now();
        assert_eq!(state.dvr_depth(path.folder(), &mpd, ast), None, "nothing indexed yet");
        for n in 3..=10 {
            segment(&mut state, &format!("chunk-0-{n:05}.m4s"), n, t0);
        }
        for n in 5..=10 {
            segment(&mut state, &format!("chunk-1-{n:05}.m4s"), n, t0);
        }
        // Segment 5 (the oldest both have) starts 8 s after availabilityStartTime.
        let now = ast + Duration::from_secs(21);
        assert_eq!(state.dvr_depth(path.folder(), &mpd, now), Some(Duration::from_secs(13)));
        let later = ast + Duration::from_secs(600);
        assert_eq!(
            state.dvr_depth(path.folder(), &mpd, later),
            Some(Duration::from_secs(60)),
            "never beyond the window"
        );
        let mut ended = Mpd::clone(&mpd);
        ended.dynamic = false;
        assert_eq!(state.dvr_depth(path.folder(), &ended, now), None, "static: no window");
        let (off, mpd, path) = self::state(None);
        assert_eq!(off.dvr_depth(path.folder(), &mpd, now), None);
    }
}
