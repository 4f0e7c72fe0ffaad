//! The XML Schema and DASH value types the MPD model reads and writes: xs:duration (parse and
//! format), xs:dateTime, and the SegmentTemplate identifiers (`$RepresentationID$`, `$Bandwidth$`,
//! `$Number%05d$`). Text in, values out: nothing here knows where in an MPD the text came from.

use std::time::{Duration, SystemTime};

use super::Representation;

/// Expands $RepresentationID$ and $Bandwidth$ (leaving $Number...$ and $$).
pub(super) fn identifiers(template: &str, rep: &Representation) -> String {
    template
        .replace("$RepresentationID$", &rep.id)
        .replace("$Bandwidth$", &rep.bandwidth.map(|b| b.to_string()).unwrap_or_default())
}

/// Splits at the `$Number$` / `$Number%0Nd$` identifier: (prefix, width, suffix), with `$$` undone.
pub(super) fn split_number(template: &str) -> Option<(String, usize, String)> {
    if template.contains("$Time") {
        return None;
    }
    let start = template.find("$Number")?;
    let rest = &template[start + "$Number".len()..];
    let end = rest.find('$')?;
    let format = &rest[..end];
    let width = match format.strip_prefix("%0").and_then(|f| f.strip_suffix('d')) {
        Some(width) => width.parse().ok()?,
        None if format.is_empty() => 0,
        None => return None,
    };
    let prefix = template[..start].replace("$$", "$");
    let suffix = rest[end + 1..].replace("$$", "$");
    Some((prefix, width, suffix))
}

/// `number` with leading zeros to `width` digits, as `%0Nd` asks.
pub(super) fn pad(number: u64, width: usize) -> String {
    format!("{number:0width$}")
}

/// Parses an xs:duration (`PT1.5S`, `P0Y0M0DT0H0M10.000S`, `PT2M`); years and months count as 365
/// and 30 days.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut seconds = 0.0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let factor = units.iter().find(|(u, _)| *u == c)?.1;
            seconds += number.parse::<f64>().ok()? * factor;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    take(
        date,
        &[
            ('Y', 365.0 * 86400.0),
            ('M', 30.0 * 86400.0),
            ('W', 7.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// Writes an xs:duration in seconds (`PT1S`, `PT0.2S`).
pub fn format_duration(duration: Duration) -> String {
    let text = format!("{:.3}", duration.as_secs_f64());
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("PT{text}S")
}

/// Parses an xs:dateTime (`2026-01-01T00:00:00Z`, fractions and offsets allowed).
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim().trim_end_matches('Z')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("PT1.5S"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("P0Y0M0DT0H1M0.000S"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("PT500S"), Some(Duration::from_secs(500)));
        assert_eq!(parse_duration("P1D"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1S"), None);
        assert_eq!(parse_duration("PTxS"), None);
        assert_eq!(
            parse_duration(&format!("PT{}S", "9".repeat(80))),
            None,
            "too large for a Duration: no panic"
        );
        assert_eq!(format_duration(Duration::from_millis(200)), "PT0.2S");
        assert_eq!(format_duration(Duration::from_secs(10)), "PT10S");
    }
}
