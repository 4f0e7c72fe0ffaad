//! `?start=T` and `?end=U` on a generated playlist (docs/dvr.md): start-over (a playlist from T
//! that follows the live edge) and catch-up (T to U in the past, video on demand). Times are Unix
//! seconds (`1765152000`, `1765152000.5`) or RFC 3339 in UTC (`2026-12-08T00:00:00Z`, percent-encoded
//! or not).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::HttpError;
use crate::media::hls::Clip;

/// How far in the future a start may be (clocks of viewers and of the server differ a little).
const SKEW: Duration = Duration::from_secs(5);

/// A time view asked for in a query, with its canonical query string (what the URIs the view
/// writes carry on, so every playlist a player loads from it is the same view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeView {
    /// The interval.
    pub clip: Clip,
    /// `start=...` or `start=...&end=...`, in Unix seconds.
    pub query: String,
}

impl TimeView {
    /// The view `query` asks for at `now` (None when it has neither `start` nor `end`), or why it
    /// cannot be given (400).
    pub fn parse(query: Option<&str>, now: SystemTime) -> Result<Option<TimeView>, HttpError> {
        let mut start = None;
        let mut end = None;
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "start" => &mut start,
                "end" => &mut end,
                _ => continue,
            };
            let time = parse_time(value).map_err(|why| HttpError::BadRequest(format!("{key}: {why}")))?;
            *slot = Some(time);
        }
        if start.is_none() && end.is_none() {
            return Ok(None);
        }
        // An end alone: from the oldest segment kept.
        let from = start.unwrap_or(UNIX_EPOCH);
        if from > now + SKEW {
            return Err(HttpError::BadRequest(
                "start is in the future: a view starts at a time the stream has reached".to_owned(),
            ));
        }
        if end.is_some_and(|to| to <= from) {
            return Err(HttpError::BadRequest("end must be after start".to_owned()));
        }
        let mut canonical = format!("start={}", unix(from));
        if let Some(to) = end {
            canonical.push_str(&format!("&end={}", unix(to)));
        }
        Ok(Some(TimeView {
            clip: Clip { from, to: end },
            query: canonical,
        }))
    }
}

/// Unix seconds, with milliseconds when there are any.
fn unix(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    match since.subsec_millis() {
        0 => since.as_secs().to_string(),
        ms => format!("{}.{ms:03}", since.as_secs()),
    }
}

/// A time: Unix seconds (a fraction allowed) or RFC 3339 in UTC.
fn parse_time(raw: &str) -> Result<SystemTime, String> {
    let text = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "not UTF-8".to_owned())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty; give Unix seconds or an RFC 3339 time such as 2026-12-08T10:00:00Z".to_owned());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // Exact to the nanosecond (a float would turn .908 into .907999...).
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let not_seconds = || format!("'{text}' is not a number of seconds");
        if whole.is_empty() || fraction.contains('.') {
            return Err(not_seconds());
        }
        let seconds: u64 = whole.parse().map_err(|_| format!("'{text}' is out of range"))?;
        let digits = &fraction[..fraction.len().min(9)];
        let nanos: u32 = if digits.is_empty() {
            0
        } else {
            let value: u32 = digits.parse().map_err(|_| not_seconds())?;
            value * 10u32.pow(9 - digits.len() as u32)
        };
        // Up to the year 9999: a time a playlist can print.
        if seconds >= 253_402_300_800 {
            return Err(format!("'{text}' is out of range"));
        }
        return Ok(UNIX_EPOCH + Duration::new(seconds, nanos));
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|_| format!("'{text}' is neither Unix seconds nor an RFC 3339 time in UTC (2026-12-08T10:00:00Z)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_765_152_000)
    }

    #[test]
    fn start_and_end_take_unix_seconds_or_rfc_3339() {
        assert_eq!(TimeView::parse(None, now()).ok(), Some(None));
        assert_eq!(TimeView::parse(Some("_HLS_skip=YES"), now()).ok(), Some(None));
        let view = TimeView::parse(Some("start=1765151000&_HLS_msn=3"), now())
            .ok()
            .flatten()
            .expect("a view");
        assert_eq!(view.clip.from, UNIX_EPOCH + Duration::from_secs(1_765_151_000));
        assert_eq!(view.clip.to, None);
        assert_eq!(view.query, "start=1765151000");
        let view = TimeView::parse(Some("start=2025-12-07T23%3A50%3A00Z&end=1765151500.25"), now())
            .ok()
            .flatten()
            .expect("a view");
        assert_eq!(view.clip.from, UNIX_EPOCH + Duration::from_secs(1_765_151_400));
        assert_eq!(view.query, "start=1765151400&end=1765151500.250");
        assert_eq!(
            view.clip.to,
            Some(UNIX_EPOCH + Duration::from_millis(1_765_151_500_250))
        );
        let view = TimeView::parse(Some("start=1765151962.908"), now())
            .ok()
            .flatten()
            .expect("a view");
        assert_eq!(view.query, "start=1765151962.908", "exact, not a float's rounding");
        let view = TimeView::parse(Some("end=1765151500"), now())
            .ok()
            .flatten()
            .expect("a view");
        assert_eq!(view.clip.from, UNIX_EPOCH, "an end alone: from the oldest kept");
    }

    #[test]
    fn impossible_views_are_refused_with_a_reason() {
        for (query, why) in [
            ("start=", "empty"),
            ("start=yesterday", "neither Unix seconds"),
            ("start=1e9", "neither Unix seconds"),
            ("start=.5", "not a number"),
            ("start=1.2.3", "not a number"),
            ("start=99999999999999999999", "out of range"),
            ("start=1765152100", "in the future"),
            ("start=1765151000&end=1765151000", "after start"),
            ("start=1765151000&end=1765150000", "after start"),
            ("start=%FF", "UTF-8"),
        ] {
            match TimeView::parse(Some(query), now()) {
                Err(HttpError::BadRequest(text)) => assert!(text.contains(why), "{query}: {text}"),
                other => panic!("{query}: {other:?}"),
            }
        }
        assert!(
            TimeView::parse(Some("start=1765152003"), now()).is_ok(),
            "a few seconds of clock skew"
        );
    }
}
