//! The low-latency rewrite of an MPD: a UTCTiming to ldash's clock in place of the encoder's,
//! availabilityTimeOffset and availabilityTimeComplete from the observed chunking, a
//! ServiceDescription (Latency, PlaybackRate), a bandwidth where the encoder wrote none, and repairs
//! of what ffmpeg writes (minimumUpdatePeriod, timeShiftBufferDepth, minBufferTime, and
//! mediaPresentationDuration once the stream has ended). Every other byte is kept as uploaded.
//!
//! An MPD is parsed once per upload but served on every GET, so the parser records where these
//! edits go ([`Recorder`]) and [`Mpd::rewrite`] only splices: it copies the bytes between the
//! recorded sites and writes the few values that depend on the request or on the ingest. The output
//! is byte for byte what the streaming rewriter before it wrote (quick-xml's reader into its writer
//! on every GET, kept in `streaming` to test against), down to how that writer spelled a rebuilt
//! start tag.

mod record;
#[cfg(test)]
mod streaming;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use quick_xml::events::attributes::Attribute;

use super::parse::Element;
use super::{completed_codecs, format_duration, parse_duration, Latency, Mpd, MpdError, Observed, ServiceDefaults};

pub(crate) use record::Recorder;

/// The inputs of a rewrite.
#[derive(Debug, Clone)]
pub struct Rewrite<'a> {
    /// Absolute URL of the server clock (http-iso).
    pub clock_url: &'a str,
    /// ServiceDescription values.
    pub service: &'a ServiceDefaults,
    /// Observations keyed by (period index, adaptation set index, representation id).
    pub observed: &'a HashMap<(usize, usize, String), Observed>,
    /// The live stream has ended without a final MPD (its encoder went quiet): the presentation's
    /// duration so far, written as `mediaPresentationDuration` so players stop at its end instead
    /// of waiting for segments that will never come.
    pub ended: Option<Duration>,
    /// A DVR window: how far back players may seek (what ldash keeps of the stream, at most the
    /// window), written as `timeShiftBufferDepth` where it is longer than the encoder's.
    pub time_shift: Option<Duration>,
}

/// Parses `mpd` and rewrites it for low latency ([`parse`](fn@super::parse) then [`Mpd::rewrite`]), for
/// callers that keep no parsed model. Returns the input unchanged when nothing needed changing.
pub fn rewrite<'m>(mpd: &'m [u8], rewrite: &Rewrite<'_>) -> Result<Cow<'m, [u8]>, MpdError> {
    super::parse(mpd)?.rewrite(mpd, rewrite)
}

impl Mpd {
    /// This MPD rewritten for low latency. `bytes` must be the ones the model was parsed from: the
    /// rewrite splices them at the positions the parser recorded instead of reading them again
    /// (other bytes are refused with [`MpdError::NotParsedFrom`] when their length shows it).
    /// Returns them unchanged (borrowed) when nothing needed changing.
    pub fn rewrite<'b>(&self, bytes: &'b [u8], rewrite: &Rewrite<'_>) -> Result<Cow<'b, [u8]>, MpdError> {
        let edits = self
            .edits
            .as_ref()
            .filter(|edits| edits.len == bytes.len())
            .ok_or(MpdError::NotParsedFrom)?;
        let mut splice = Splice {
            model: self,
            rewrite,
            repairs: &edits.repairs,
            out: Vec::with_capacity(bytes.len() + 512),
            changed: false,
        };
        let mut at = 0;
        for site in &edits.sites {
            let kept = bytes.get(at..site.span.start).ok_or(MpdError::NotParsedFrom)?;
            splice.out.extend_from_slice(kept);
            let source = bytes.get(site.span.clone()).ok_or(MpdError::NotParsedFrom)?;
            splice.edit(&site.edit, source);
            at = site.span.end;
        }
        if !splice.changed {
            return Ok(Cow::Borrowed(bytes));
        }
        splice
            .out
            .extend_from_slice(bytes.get(at..).ok_or(MpdError::NotParsedFrom)?);
        Ok(Cow::Owned(splice.out))
    }
}

/// Where the rewrite edits the bytes one model was parsed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Edits {
    /// Length of those bytes: a cheap guard against others (callers keep a model with its bytes, as
    /// the live index caches both by ETag).
    len: usize,
    /// In document order; spans do not overlap.
    sites: Vec<Site>,
    /// The values MPD@ repairs write, which depend on the whole model (its longest segment).
    repairs: Repairs,
}

/// One edit: the bytes at `span` (none, for an insertion) are replaced.
#[derive(Debug, Clone, PartialEq)]
struct Site {
    span: Range<usize>,
    edit: Edit,
}

#[derive(Debug, Clone, PartialEq)]
enum Edit {
    /// An encoder's UTCTiming, dropped for ldash's.
    Drop,
    /// ldash's ServiceDescription, in an MPD that has none.
    NewService,
    /// Latency and PlaybackRate, into a ServiceDescription that has no Latency.
    ServiceChildren,
    /// `<ServiceDescription .../>` without a Latency, opened to take them; its qualified name.
    OpenService(String),
    /// ldash's UTCTiming.
    Utc,
    /// An MPD start tag: mediaPresentationDuration once ended, and the repairs it needs.
    Root { tag: Tag, repair: RootRepair },
    /// A Representation with no bandwidth (`bandwidth`: the measured one, else a placeholder) or
    /// whose codecs may need completing from its init segment ([`super::completed_codecs`]).
    Representation {
        tag: Tag,
        period: usize,
        set: usize,
        id: String,
        bandwidth: bool,
    },
    /// A SegmentTemplate of an AdaptationSet (`rep` None) or Representation, which takes
    /// availabilityTimeOffset and availabilityTimeComplete when the ingest is chunked.
    Availability {
        tag: Tag,
        period: usize,
        set: usize,
        rep: Option<String>,
        has_offset: bool,
        has_complete: bool,
    },
    /// Markup quick-xml's writer spelled other than the input; written only when the MPD changes.
    Respell(Box<[u8]>),
}

/// Which of the MPD element's attributes need repairing (ffmpeg's values that hold players back).
#[derive(Debug, Clone, Copy, PartialEq)]
struct RootRepair {
    /// Over 30 s: players would not see new segments for that long.
    minimum_update_period: bool,
    /// Missing or zero.
    time_shift_buffer_depth: bool,
    /// Zero.
    min_buffer_time: bool,
}

/// The values written by [`RootRepair`].
#[derive(Debug, Clone, Default, PartialEq)]
struct Repairs {
    minimum_update_period: String,
    time_shift_buffer_depth: String,
    min_buffer_time: String,
}

/// A start tag whose attributes the rewrite may change, kept to be written anew when it does.
#[derive(Debug, Clone, PartialEq)]
struct Tag {
    /// Qualified name.
    name: String,
    /// (qualified name, value as written, still escaped), in order.
    attrs: Vec<(String, String)>,
    empty: bool,
}

impl Tag {
    fn of(e: &Element<'_>) -> Tag {
        let attrs = e
            .start
            .attributes()
            .flatten()
            .map(|a| (a.key.as_ref().to_owned(), a.value.into_owned()))
            .collect();
        Tag {
            name: e.start.name().as_ref().to_owned(),
            attrs,
            empty: e.empty,
        }
    }
}

/// A rewrite being written.
struct Splice<'r> {
    model: &'r Mpd,
    rewrite: &'r Rewrite<'r>,
    repairs: &'r Repairs,
    out: Vec<u8>,
    /// Something other than spelling changed: otherwise the input is served as it is.
    changed: bool,
}

impl Splice<'_> {
    /// Writes `edit` in place of `source`, the bytes at its span.
    fn edit(&mut self, edit: &Edit, source: &[u8]) {
        match edit {
            Edit::Drop => self.changed = true,
            Edit::NewService => {
                self.out.extend_from_slice(b"<ServiceDescription id=\"0\">");
                self.service_children();
                self.out.extend_from_slice(b"</ServiceDescription>");
            }
            Edit::ServiceChildren => self.service_children(),
            Edit::OpenService(name) => {
                // `<ServiceDescription id="0"/>` as `<ServiceDescription id="0">`, ours, the end tag.
                let inside = source.get(1..source.len().saturating_sub(2)).unwrap_or_default();
                self.out.push(b'<');
                self.out.extend_from_slice(inside);
                self.out.push(b'>');
                self.service_children();
                self.out.extend_from_slice(format!("</{name}>").as_bytes());
            }
            Edit::Utc => {
                let value = escaped(self.rewrite.clock_url);
                let utc = format!("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{value}\"/>");
                self.out.extend_from_slice(utc.as_bytes());
                self.changed = true;
            }
            Edit::Root { tag, repair } => {
                let changes = self.root_changes(tag, repair);
                self.tag(tag, &changes, source);
            }
            Edit::Representation {
                tag,
                period,
                set,
                id,
                bandwidth,
            } => {
                let observed = self.observed(*period, *set, id);
                let mut changes = Vec::new();
                if *bandwidth {
                    let measured = observed.and_then(|o| o.bandwidth).filter(|b| *b > 0);
                    changes.push(("bandwidth", measured.unwrap_or(1_000_000).to_string()));
                }
                let declared = tag.attrs.iter().find(|(k, _)| k == "codecs").map(|(_, v)| v.as_str());
                let from_init = observed.and_then(|o| o.codecs.as_deref());
                if let Some(full) = declared.and_then(|d| completed_codecs(d, from_init)) {
                    changes.push(("codecs", full.to_owned()));
                }
                self.tag(tag, &changes, source);
            }
            Edit::Availability {
                tag,
                period,
                set,
                rep,
                has_offset,
                has_complete,
            } => {
                let mut changes = Vec::new();
                if self.chunked(*period, *set, rep.as_deref()) {
                    if !has_offset {
                        if let Some(ato) = self.ato(*period, *set, rep.as_deref()) {
                            changes.push(("availabilityTimeOffset", format!("{ato:.3}")));
                        }
                    }
                    if (*has_offset || !changes.is_empty()) && !has_complete {
                        changes.push(("availabilityTimeComplete", "false".into()));
                    }
                }
                self.tag(tag, &changes, source);
            }
            Edit::Respell(spelled) => self.out.extend_from_slice(spelled),
        }
    }

    fn root_changes(&self, tag: &Tag, repair: &RootRepair) -> Vec<(&'static str, String)> {
        let mut changes = Vec::new();
        if let Some(duration) = self.rewrite.ended {
            changes.push(("mediaPresentationDuration", format_duration(duration)));
        }
        let repairs = self.repairs;
        if repair.minimum_update_period {
            changes.push(("minimumUpdatePeriod", repairs.minimum_update_period.clone()));
        }
        // The depth the MPD has (the encoder's, or the repair of a missing or zero one): a DVR
        // window only ever lengthens it, so players never lose segments the encoder still lists.
        let depth = if repair.time_shift_buffer_depth {
            Some(repairs.time_shift_buffer_depth.as_str())
        } else {
            tag.attrs
                .iter()
                .find(|(k, _)| k == "timeShiftBufferDepth")
                .map(|(_, v)| v.as_str())
        };
        let longer = self
            .rewrite
            .time_shift
            .filter(|dvr| depth.and_then(parse_duration).is_none_or(|depth| *dvr > depth));
        if let Some(dvr) = longer {
            changes.push(("timeShiftBufferDepth", format_duration(dvr)));
        } else if repair.time_shift_buffer_depth {
            changes.push(("timeShiftBufferDepth", repairs.time_shift_buffer_depth.clone()));
        }
        if repair.min_buffer_time {
            changes.push(("minBufferTime", repairs.min_buffer_time.clone()));
        }
        changes
    }

    /// The start tag with `changes` replacing or following its attributes (written as quick-xml's
    /// writer did: one space before each, double quotes, the others' values as written), or as it
    /// is when there are none.
    fn tag(&mut self, tag: &Tag, changes: &[(&'static str, String)], source: &[u8]) {
        if changes.is_empty() {
            self.out.extend_from_slice(source);
            return;
        }
        self.changed = true;
        let mut pending: Vec<&(&str, String)> = changes.iter().collect();
        self.out.push(b'<');
        self.out.extend_from_slice(tag.name.as_bytes());
        for (key, value) in &tag.attrs {
            match pending.iter().position(|(k, _)| k == key) {
                Some(at) => {
                    let (k, v) = pending.remove(at);
                    self.attribute(k, &escaped(v));
                }
                None => self.attribute(key, value),
            }
        }
        for (k, v) in pending {
            self.attribute(k, &escaped(v));
        }
        self.out.extend_from_slice(if tag.empty { b"/>" } else { b">" });
    }

    fn attribute(&mut self, key: &str, value: &str) {
        self.out.push(b' ');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"=\"");
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    fn service_children(&mut self) {
        let s = self.rewrite.service;
        let l = s.latency.unwrap_or_else(|| {
            let longest = self.rewrite.observed.values().filter_map(|o| o.chunk_duration).max();
            longest.map_or(Latency::UNOBSERVED, Latency::for_chunk)
        });
        let (target, min, max) = (l.target.as_millis(), l.min.as_millis(), l.max.as_millis());
        let children = format!(
            "<Latency target=\"{target}\" min=\"{min}\" max=\"{max}\"/><PlaybackRate min=\"{:.2}\" max=\"{:.2}\"/>",
            s.playback_rate_min, s.playback_rate_max
        );
        self.out.extend_from_slice(children.as_bytes());
        self.changed = true;
    }

    fn observed(&self, period: usize, set: usize, rep: &str) -> Option<&Observed> {
        self.rewrite.observed.get(&(period, set, rep.to_owned()))
    }

    /// The ATO for a template at (period, set, rep or every rep of the set): the segment duration
    /// less the longest chunk, the smallest over the representations.
    fn ato(&self, period: usize, set: usize, rep: Option<&str>) -> Option<f64> {
        let set_model = self.model.periods.get(period)?.adaptation_sets.get(set)?;
        let mut best: Option<f64> = None;
        for r in set_model
            .representations
            .iter()
            .filter(|r| rep.is_none_or(|id| id == r.id))
        {
            let template = r.template.as_ref()?;
            let segment = template.segment_duration()?;
            let seen = self.observed(period, set, &r.id)?;
            if !seen.chunked {
                return None;
            }
            let chunk = seen.chunk_duration?;
            let ato = segment.saturating_sub(chunk).as_secs_f64();
            best = Some(best.map_or(ato, |b| b.min(ato)));
        }
        best
    }

    /// Whether any of the representations at (period, set, rep or all) was seen chunked.
    fn chunked(&self, period: usize, set: usize, rep: Option<&str>) -> bool {
        let Some(set_model) = self.model.periods.get(period).and_then(|p| p.adaptation_sets.get(set)) else {
            return false;
        };
        set_model
            .representations
            .iter()
            .filter(|r| rep.is_none_or(|id| id == r.id))
            .any(|r| self.observed(period, set, &r.id).is_some_and(|o| o.chunked))
    }
}

/// `value` escaped for an attribute, as quick-xml escapes one it is given as text.
fn escaped(value: &str) -> Cow<'_, str> {
    Attribute::from(("", value)).value
}
