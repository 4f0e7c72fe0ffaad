//! When a live stream counts as ended although its encoder never said so (it was killed, or lost its
//! connection for good): the stream has received no upload for a number of segment durations. Pure
//! arithmetic over instants the caller passes in (the live index, which owns the clock), so the rule
//! is tested without waiting. Nothing here knows where the instants come from.

use std::time::{Duration, Instant};

/// The shortest segment duration the rule counts with: a stream announcing tiny (or zero) segments
/// must not end between two of ffmpeg's uploads.
const MIN_SEGMENT: Duration = Duration::from_millis(500);

/// The end-of-stream rule: ended after `after_segments` segment durations without an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRule {
    /// Segment durations without any upload before the stream is ended (0: never).
    pub after_segments: u32,
}

impl EndRule {
    /// How long a stream whose segments last `segment` may go without an upload; None: forever.
    pub fn quiet_bound(&self, segment: Duration) -> Option<Duration> {
        (self.after_segments > 0).then(|| segment.max(MIN_SEGMENT).saturating_mul(self.after_segments))
    }

    /// The instant a stream last written at `last_upload` ends, unless it is written again.
    pub fn ends_at(&self, last_upload: Instant, segment: Duration) -> Option<Instant> {
        self.quiet_bound(segment)
            .and_then(|bound| last_upload.checked_add(bound))
    }

    /// Whether a stream last written at `last_upload` has ended at `now`.
    pub fn has_ended(&self, last_upload: Instant, segment: Duration, now: Instant) -> bool {
        self.ends_at(last_upload, segment).is_some_and(|end| now >= end)
    }
}

/// Whether an upload of segment `number` starts a new run of the encoder: a restarted encoder
/// numbers from its first segment again (`start`, the template's startNumber; ffmpeg restarts at 1),
/// below the newest already stored (`newest`, from uploads that arrived earlier). Only the first
/// number counts: a lower number in mid-stream is uploads of one run overtaking each other (an
/// encoder catching up over several connections), not a restart, and must not drop the run.
/// Re-uploading the newest segment is a retry, not a new run.
pub fn starts_new_run(number: u64, newest: Option<u64>, start: u64) -> bool {
    number <= start && newest.is_some_and(|newest| number < newest)
}

/// The presentation duration of an ended stream for `MPD@mediaPresentationDuration`: the end of the
/// last complete media (`media_end`: decode time plus duration of its last chunk, as ticks and the
/// track's timescale), less the template's presentation time offset (ticks and the template's
/// timescale), after the period's start.
pub fn presentation_duration(period_start: Duration, media_end: (u64, u64), offset: (u64, u64)) -> Option<Duration> {
    let seconds = |(ticks, timescale): (u64, u64)| (timescale > 0).then(|| ticks as f64 / timescale as f64);
    let media = seconds(media_end)? - seconds(offset).unwrap_or(0.0);
    let media = Duration::try_from_secs_f64(media).ok()?;
    period_start.checked_add(media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ends_after_the_quiet_bound_and_not_before() {
        let rule = EndRule { after_segments: 3 };
        let t0 = Instant::now();
        let segment = Duration::from_secs(1);
        assert!(!rule.has_ended(t0, segment, t0));
        assert!(!rule.has_ended(t0, segment, t0 + Duration::from_millis(2999)));
        assert!(rule.has_ended(t0, segment, t0 + Duration::from_secs(3)));
        assert_eq!(rule.ends_at(t0, segment), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn tiny_segments_count_as_half_a_second_and_zero_segments_means_never() {
        let t0 = Instant::now();
        let rule = EndRule { after_segments: 4 };
        assert_eq!(rule.quiet_bound(Duration::ZERO), Some(Duration::from_secs(2)));
        let never = EndRule { after_segments: 0 };
        assert_eq!(never.ends_at(t0, Duration::from_secs(1)), None);
        assert!(!never.has_ended(t0, Duration::from_secs(1), t0 + Duration::from_secs(86_400)));
    }

    #[test]
    fn numbers_going_backwards_start_a_new_run() {
        assert!(starts_new_run(1, Some(12), 1));
        assert!(!starts_new_run(13, Some(12), 1), "the next segment");
        assert!(!starts_new_run(12, Some(12), 1), "a retry of the newest");
        assert!(!starts_new_run(1, None, 1), "the first segment");
        assert!(!starts_new_run(11, Some(12), 1), "segment 12 overtook 11: the same run");
        assert!(starts_new_run(5, Some(40), 5), "a run starting at startNumber 5");
    }

    #[test]
    fn presentation_duration_counts_from_the_period_start_less_the_offset() {
        let d = presentation_duration(Duration::from_secs(10), (90_000 * 5, 90_000), (1000, 1000));
        assert_eq!(d, Some(Duration::from_secs(14)));
        let before = presentation_duration(Duration::ZERO, (5, 1), (10, 1));
        assert_eq!(before, None, "media before the offset");
        assert_eq!(
            presentation_duration(Duration::ZERO, (5, 0), (0, 1)),
            None,
            "no timescale"
        );
    }
}
