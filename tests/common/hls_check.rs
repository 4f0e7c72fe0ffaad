//! A strict reader of LL-HLS media playlists for conformance checks: every segment with its tags,
//! parts and position, the playlist-wide tags, and the tag-order mistakes it met on the way (the
//! draft's 4.4.4.9 and 4.4.5.2 ordering rules), so a test can judge a playlist rule by rule. It
//! does not judge values: that is the caller's table of rules.

use std::io::Read;

/// An attribute of an attribute list: the quoted string's contents, or the bare value.
pub fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                let next = quoted[end + 1..].strip_prefix(',').unwrap_or(&quoted[end + 1..]);
                (&quoted[..end], next)
            }
            None => match after.split_once(',') {
                Some((value, next)) => (value, next),
                None => (after, ""),
            },
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// One EXT-X-PART line.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    /// BYTERANGE: (length, offset); the offset may be implied (the end of the previous part).
    pub range: Option<(u64, Option<u64>)>,
    pub independent: bool,
    /// The line as written.
    pub line: String,
}

/// One media segment: its tags, its parts, and (once complete) its EXTINF and URI.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    /// Its media sequence number (MEDIA-SEQUENCE + SKIPPED-SEGMENTS + position).
    pub msn: u64,
    /// The URI line, or (while it grows) its parts' URI.
    pub uri: String,
    pub pdt: Option<String>,
    pub map: Option<String>,
    pub discontinuity: bool,
    pub parts: Vec<Part>,
    /// EXTINF's duration: the segment is complete.
    pub extinf: Option<f64>,
}

impl Segment {
    /// Where its parts end (the first byte after them).
    pub fn parts_end(&self) -> u64 {
        let mut end = 0;
        for part in &self.parts {
            if let Some((len, offset)) = part.range {
                end = offset.unwrap_or(end) + len;
            }
        }
        end
    }

    /// Its duration: EXTINF once complete, else the parts' so far.
    pub fn duration(&self) -> f64 {
        self.extinf
            .unwrap_or_else(|| self.parts.iter().map(|p| p.duration).sum())
    }
}

/// EXT-X-PRELOAD-HINT.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub kind: String,
    pub uri: String,
    pub start: Option<u64>,
    pub len: Option<u64>,
    pub line: String,
}

/// EXT-X-RENDITION-REPORT.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub uri: String,
    pub last_msn: Option<u64>,
    pub last_part: Option<u64>,
}

/// A media playlist as read.
#[derive(Debug, Clone, Default)]
pub struct MediaPlaylist {
    pub versions: Vec<u64>,
    pub target_duration: Option<u64>,
    pub server_control: Option<String>,
    pub part_target: Option<f64>,
    pub media_sequence: Option<u64>,
    pub skipped: Option<u64>,
    pub playlist_type: Option<String>,
    pub segments: Vec<Segment>,
    pub hints: Vec<Hint>,
    pub reports: Vec<Report>,
    pub endlist: bool,
    /// Tag-order mistakes, each with its line number and line.
    pub order: Vec<String>,
}

impl MediaPlaylist {
    /// A SERVER-CONTROL attribute.
    pub fn control(&self, name: &str) -> Option<&str> {
        attribute(self.server_control.as_deref()?, name)
    }

    /// A SERVER-CONTROL attribute as seconds.
    pub fn control_seconds(&self, name: &str) -> Option<f64> {
        self.control(name)?.parse().ok()
    }

    /// The live edge: the newest segment with a part (or complete), and the index of its newest part.
    pub fn edge(&self) -> Option<(u64, Option<u64>)> {
        let last = self.segments.last()?;
        Some((last.msn, last.parts.len().checked_sub(1).map(|p| p as u64)))
    }

    /// The segment of number `msn`, if listed.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    /// Whether it holds part `part` of segment `msn` (or, for a part past the last one of a
    /// complete segment, part 0 of the next; or a later segment), as section 6.2.5.2 asks of the
    /// answer to a blocking request.
    pub fn holds_part(&self, msn: u64, part: u64) -> bool {
        let later = |s: &Segment| s.msn > msn && (!s.parts.is_empty() || s.extinf.is_some());
        if self.segments.iter().any(later) {
            return true;
        }
        self.segment(msn).is_some_and(|s| (part as usize) < s.parts.len())
    }

    /// The complete segments' total duration.
    pub fn complete_duration(&self) -> f64 {
        self.segments.iter().filter_map(|s| s.extinf).sum()
    }
}

/// Reads a media playlist; Err when it cannot be read at all (no #EXTM3U, bad numbers).
pub fn parse_media(text: &str) -> Result<MediaPlaylist, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        other => return Err(format!("the first line is {other:?}, not #EXTM3U")),
    }
    let mut p = MediaPlaylist::default();
    let mut current = Segment::default();
    // Whether `current` has any tag yet (it opens at its first one).
    let mut open = false;
    let number = |line: &str, value: &str| -> Result<u64, String> {
        value.trim().parse().map_err(|_| format!("bad number in {line:?}"))
    };
    for (i, line) in lines {
        let at = |what: &str| format!("line {}: {what}: {line}", i + 1);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            // A segment's URI line.
            if current.extinf.is_none() {
                p.order.push(at("a URI line without EXTINF"));
            }
            if current.parts.iter().any(|part| part.uri != line) {
                p.order.push(at("the segment's parts name another URI"));
            }
            current.uri = line.to_owned();
            p.segments.push(std::mem::take(&mut current));
            open = false;
            continue;
        }
        let (tag, value) = line.split_once(':').unwrap_or((line, ""));
        let opens_segment = matches!(
            tag,
            "#EXT-X-PROGRAM-DATE-TIME" | "#EXT-X-MAP" | "#EXT-X-DISCONTINUITY" | "#EXT-X-KEY" | "#EXT-X-BYTERANGE"
        );
        if opens_segment && !current.parts.is_empty() {
            p.order.push(at("a parent segment's tag after its first EXT-X-PART"));
        }
        match tag {
            "#EXT-X-VERSION" => p.versions.push(number(line, value)?),
            "#EXT-X-TARGETDURATION" => p.target_duration = Some(number(line, value)?),
            "#EXT-X-SERVER-CONTROL" => p.server_control = Some(value.to_owned()),
            "#EXT-X-PART-INF" => {
                p.part_target = attribute(value, "PART-TARGET").and_then(|t| t.parse().ok());
            }
            "#EXT-X-MEDIA-SEQUENCE" => p.media_sequence = Some(number(line, value)?),
            "#EXT-X-PLAYLIST-TYPE" => p.playlist_type = Some(value.to_owned()),
            "#EXT-X-ENDLIST" => p.endlist = true,
            "#EXT-X-SKIP" => {
                if p.media_sequence.is_none() {
                    p.order.push(at("EXT-X-SKIP before EXT-X-MEDIA-SEQUENCE"));
                }
                if p.skipped.is_some() {
                    p.order.push(at("a second EXT-X-SKIP"));
                }
                if open || !p.segments.is_empty() {
                    p.order.push(at("EXT-X-SKIP after a segment"));
                }
                let skipped = attribute(value, "SKIPPED-SEGMENTS").ok_or(at("no SKIPPED-SEGMENTS"))?;
                p.skipped = Some(number(line, skipped)?);
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                current.pdt = Some(value.to_owned());
                open = true;
            }
            "#EXT-X-MAP" => {
                current.map = attribute(value, "URI").map(str::to_owned);
                open = true;
            }
            "#EXT-X-DISCONTINUITY" => {
                current.discontinuity = true;
                open = true;
            }
            "#EXT-X-PART" => {
                if current.extinf.is_some() {
                    p.order.push(at("an EXT-X-PART after its segment's EXTINF"));
                }
                let uri = attribute(value, "URI").ok_or(at("a part without URI"))?;
                let duration = attribute(value, "DURATION")
                    .and_then(|d| d.parse().ok())
                    .ok_or(at("a part without DURATION"))?;
                let range = match attribute(value, "BYTERANGE") {
                    Some(range) => Some(match range.split_once('@') {
                        Some((len, offset)) => (number(line, len)?, Some(number(line, offset)?)),
                        None => (number(line, range)?, None),
                    }),
                    None => None,
                };
                if current.parts.first().is_some_and(|first| first.uri != uri) {
                    p.order.push(at("parts of two segments under one segment"));
                }
                current.parts.push(Part {
                    uri: uri.to_owned(),
                    duration,
                    range,
                    independent: attribute(value, "INDEPENDENT") == Some("YES"),
                    line: line.to_owned(),
                });
                open = true;
            }
            "#EXTINF" => {
                let duration = value.split(',').next().unwrap_or("");
                current.extinf = Some(duration.trim().parse().map_err(|_| at("bad EXTINF"))?);
                open = true;
            }
            "#EXT-X-PRELOAD-HINT" => p.hints.push(Hint {
                kind: attribute(value, "TYPE").unwrap_or("").to_owned(),
                uri: attribute(value, "URI").unwrap_or("").to_owned(),
                start: attribute(value, "BYTERANGE-START").and_then(|s| s.parse().ok()),
                len: attribute(value, "BYTERANGE-LENGTH").and_then(|s| s.parse().ok()),
                line: line.to_owned(),
            }),
            "#EXT-X-RENDITION-REPORT" => p.reports.push(Report {
                uri: attribute(value, "URI").unwrap_or("").to_owned(),
                last_msn: attribute(value, "LAST-MSN").and_then(|s| s.parse().ok()),
                last_part: attribute(value, "LAST-PART").and_then(|s| s.parse().ok()),
            }),
            _ => {}
        }
    }
    if !current.parts.is_empty() {
        // The growing segment: parts only.
        current.uri = current.parts[0].uri.clone();
        p.segments.push(current);
    } else if current.extinf.is_some() {
        p.order.push("EXTINF at the end without its URI line".to_owned());
    }
    let first = p.media_sequence.unwrap_or(0) + p.skipped.unwrap_or(0);
    for (i, segment) in p.segments.iter_mut().enumerate() {
        segment.msn = first + i as u64;
    }
    Ok(p)
}

/// The media playlist URIs of a multivariant playlist: the variants' (in order), then the
/// renditions' of EXT-X-MEDIA.
pub fn media_uris(multivariant: &str) -> Vec<String> {
    let mut variants = Vec::new();
    let mut media = Vec::new();
    let mut lines = multivariant.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            if let Some(uri) = lines.next() {
                variants.push(uri.trim().to_owned());
            }
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-MEDIA:") {
            if let Some(uri) = attribute(attrs, "URI") {
                media.push(uri.to_owned());
            }
        }
    }
    variants.extend(media);
    variants
}

/// The text of a playlist response body, gunzipped when `encoding` says gzip.
pub fn body_text(encoding: &str, body: &[u8]) -> Result<String, String> {
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Ok(String::from_utf8_lossy(body).into_owned());
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(body)
        .read_to_string(&mut text)
        .map_err(|e| format!("a gzip body that does not inflate: {e}"))?;
    Ok(text)
}

/// Cache-Control's max-age, in seconds.
pub fn max_age(cache_control: &str) -> Option<u64> {
    cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.trim().parse().ok())
}

/// The payload of the first box of type `kind` among the boxes of `data` (ISO BMFF).
fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut rest = data;
    while rest.len() >= 8 {
        let size = u32::from_be_bytes(rest[..4].try_into().ok()?) as u64;
        let (header, size) = match size {
            1 => (16, u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)),
            0 => (8, rest.len() as u64),
            n => (8, n),
        };
        let size = usize::try_from(size).ok()?;
        if size < header || size > rest.len() {
            return None;
        }
        if &rest[4..8] == kind {
            return Some(&rest[header..size]);
        }
        rest = &rest[size..];
    }
    None
}

/// The payload at `path` of nested boxes.
fn nested<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    path.iter().try_fold(data, |inside, kind| child(inside, kind))
}

/// The first track's timescale, from an init segment (moov/trak/mdia/mdhd).
pub fn timescale(init: &[u8]) -> Option<u32> {
    let mdhd = nested(init, &[b"moov", b"trak", b"mdia", b"mdhd"])?;
    let at = if mdhd.first()? == &1 { 4 + 16 } else { 4 + 8 };
    Some(u32::from_be_bytes(mdhd.get(at..at + 4)?.try_into().ok()?))
}

/// The decode time of a media segment's first fragment (moof/traf/tfdt), in its timescale.
pub fn first_decode_time(segment: &[u8]) -> Option<u64> {
    let tfdt = nested(segment, &[b"moof", b"traf", b"tfdt"])?;
    if tfdt.first()? == &1 {
        Some(u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?))
    } else {
        Some(u32::from_be_bytes(tfdt.get(4..8)?.try_into().ok()?) as u64)
    }
}
