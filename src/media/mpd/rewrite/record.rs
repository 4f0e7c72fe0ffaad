//! Where the low-latency rewrite edits an MPD, noted during the parser's one pass. This is the walk
//! the streaming rewriter made over the document (kept in `streaming` for tests), with its output
//! replaced by byte positions: the same cursor (period and set indexes as it counted them, the
//! Representation in force), the same rules for where ServiceDescription, Latency and UTCTiming go,
//! and a note of every piece of markup its writer spelled differently from the input. What depends
//! on a request (observations, the clock URL, the end of the stream) is left to the splice.

use std::ops::Range;
use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Writer;

use super::{Edit, Edits, Repairs, RootRepair, Site, Tag};
use crate::media::mpd::parse::Element;
use crate::media::mpd::xsd::{format_duration, parse_duration};
use crate::media::mpd::{Mpd, SegmentTemplate};

/// Children of MPD that come before ServiceDescription in the schema.
const BEFORE_SERVICE: [&str; 5] = [
    "ProgramInformation",
    "BaseURL",
    "Location",
    "PatchLocation",
    "ServiceDescription",
];
/// Children of ServiceDescription that come before Latency.
const BEFORE_LATENCY: [&str; 1] = ["Scope"];

/// When a site recorded on the way is kept: some depend on what the rest of the document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    /// The MPD has no ServiceDescription.
    NoService,
    /// Its first ServiceDescription has no Latency.
    ServiceWithoutLatency,
}

/// Notes the rewrite's edit sites while the parser reads an MPD.
pub(crate) struct Recorder<'a> {
    source: &'a [u8],
    /// Whether the MPD is treated as live: from its first root element, unless the parser knows it.
    dynamic: Option<bool>,
    sites: Vec<(Site, When)>,
    /// Index of the Period being read, as the rewrite counts them (children of MPD).
    period: Option<usize>,
    /// Index of the AdaptationSet being read within its Period.
    set: Option<usize>,
    /// The id of the Representation being read.
    rep: Option<String>,
    /// Inside an encoder's UTCTiming, which the rewrite drops: where its start tag begins.
    dropping: Option<usize>,
    /// The place for a new ServiceDescription (before the first child of MPD after it) is noted.
    service_placed: bool,
    /// ldash's UTCTiming is placed.
    utc_placed: bool,
    /// Inside a ServiceDescription whose Latency and PlaybackRate are not placed yet.
    filling: bool,
    /// The MPD's first ServiceDescription (a child of MPD): None before one is seen, then whether
    /// it has a Latency.
    service: Option<bool>,
    /// Inside that first ServiceDescription.
    in_service: bool,
    /// Reused to spell an event as quick-xml's writer does.
    scratch: Vec<u8>,
}

impl<'a> Recorder<'a> {
    /// A recorder for `source`, whose first `bom` bytes are a byte order mark the reader skipped.
    /// `dynamic` fixes whether the MPD is live; None takes it from the first root element.
    pub fn new(source: &'a [u8], bom: usize, dynamic: Option<bool>) -> Self {
        let mut recorder = Recorder {
            source,
            dynamic,
            sites: Vec::new(),
            period: None,
            set: None,
            rep: None,
            dropping: None,
            service_placed: false,
            utc_placed: false,
            filling: false,
            service: None,
            in_service: false,
            scratch: Vec::new(),
        };
        if bom > 0 {
            // The streaming rewriter's reader dropped the mark and its writer never wrote one.
            recorder.push(0..bom, Edit::Respell(Box::default()), When::Always);
        }
        recorder
    }

    /// Whether the sites are recorded for a live MPD.
    pub fn dynamic(&self) -> bool {
        self.dynamic == Some(true)
    }

    /// A start tag (`<a>` or `<a/>`); `stack` holds the local names of the open elements above it
    /// and `model_dynamic` the model's type so far.
    pub fn element(&mut self, e: &Element<'_>, stack: &[String], model_dynamic: bool) {
        let depth = stack.len();
        self.note_service(e.name, depth, e.empty);
        if depth == 0 && self.dynamic.is_none() {
            self.dynamic = Some(model_dynamic);
        }
        if self.dropping.is_some() {
            return;
        }
        let dynamic = self.dynamic();
        if dynamic && depth == 1 && e.name == "UTCTiming" {
            // ldash's own replaces it. Nothing is placed before an element that is dropped.
            if e.empty {
                self.push(e.span.clone(), Edit::Drop, When::Always);
            } else {
                self.dropping = Some(e.span.start);
            }
            return;
        }
        if dynamic {
            self.before_child(e.name, depth, e.span.start);
        }
        let parent = stack.last().map(String::as_str);
        let edit = self.adjust(e, parent, depth);
        self.enter(e.name, parent);
        if dynamic && depth == 1 && e.name == "ServiceDescription" {
            if e.empty {
                let name = e.start.name().as_ref().to_owned();
                self.push(e.span.clone(), Edit::OpenService(name), When::ServiceWithoutLatency);
            } else {
                self.filling = true;
            }
        }
        // A start tag not edited is written as read (quick-xml keeps its bytes between < and >).
        if let Some(edit) = edit {
            self.push(e.span.clone(), edit, When::Always);
        }
        if e.empty {
            self.leave(e.name);
        }
    }

    /// An end tag, of element `name`, with `depth` elements still open after it.
    pub fn end(&mut self, name: &str, depth: usize, event: &Event<'_>, span: Range<usize>) {
        if depth == 1 {
            self.in_service = false;
        }
        if let Some(start) = self.dropping {
            if depth == 1 {
                self.dropping = None;
                self.push(start..span.end, Edit::Drop, When::Always);
            }
            return;
        }
        if self.filling && depth == 1 && name == "ServiceDescription" {
            self.push(
                span.start..span.start,
                Edit::ServiceChildren,
                When::ServiceWithoutLatency,
            );
            self.filling = false;
        }
        if self.dynamic() && depth == 0 && name == "MPD" {
            self.place_utc(span.start);
        }
        self.leave(name);
        self.respell(event, span);
    }

    /// Any other event (text, comment, declaration...).
    pub fn other(&mut self, event: &Event<'_>, span: Range<usize>) {
        if self.dropping.is_none() {
            self.respell(event, span);
        }
    }

    /// The sites, once the whole MPD is read into `model`.
    pub fn finish(self, model: &Mpd) -> Edits {
        let longest = model
            .representations()
            .filter_map(|r| r.template.as_ref().and_then(SegmentTemplate::segment_duration))
            .max();
        let repairs = Repairs {
            minimum_update_period: format_duration(
                longest.or(model.max_segment_duration).unwrap_or(Duration::from_secs(2)),
            ),
            time_shift_buffer_depth: format_duration(longest.map_or(Duration::from_secs(30), |s| s.saturating_mul(10))),
            min_buffer_time: format_duration(longest.unwrap_or(Duration::from_secs(1))),
        };
        let service = self.service;
        let sites = self
            .sites
            .into_iter()
            .filter(|(_, when)| match when {
                When::Always => true,
                When::NoService => service.is_none(),
                When::ServiceWithoutLatency => service == Some(false),
            })
            .map(|(site, _)| site)
            .collect();
        Edits {
            len: self.source.len(),
            sites,
            repairs,
        }
    }

    fn push(&mut self, span: Range<usize>, edit: Edit, when: When) {
        self.sites.push((Site { span, edit }, when));
    }

    /// Follows the first ServiceDescription child of MPD, and whether it holds a Latency.
    fn note_service(&mut self, name: &str, depth: usize, empty: bool) {
        if depth == 1 && name == "ServiceDescription" && self.service.is_none() {
            self.service = Some(false);
            self.in_service = !empty;
        } else if self.in_service && depth == 2 && name == "Latency" {
            self.service = Some(true);
        }
    }

    /// Insertions that go before a child element: ServiceDescription, Latency, UTCTiming.
    fn before_child(&mut self, name: &str, depth: usize, at: usize) {
        if depth == 1 && !self.service_placed && !BEFORE_SERVICE.contains(&name) {
            self.push(at..at, Edit::NewService, When::NoService);
            self.service_placed = true;
        }
        if depth == 2 && self.filling && !BEFORE_LATENCY.contains(&name) {
            self.push(at..at, Edit::ServiceChildren, When::ServiceWithoutLatency);
            self.filling = false;
        }
        if depth == 1 && name == "LeapSecondInformation" {
            self.place_utc(at);
        }
    }

    fn place_utc(&mut self, at: usize) {
        if !self.utc_placed {
            self.push(at..at, Edit::Utc, When::Always);
            self.utc_placed = true;
        }
    }

    /// The attribute edit a start tag may need: MPD, Representation or SegmentTemplate.
    fn adjust(&mut self, e: &Element<'_>, parent: Option<&str>, depth: usize) -> Option<Edit> {
        let dynamic = self.dynamic();
        let has = |key: &str| e.attrs.contains_key(key);
        match e.name {
            "MPD" if depth == 0 && dynamic => {
                let duration = |key: &str| e.attrs.get(key).and_then(|d| parse_duration(d));
                let repair = RootRepair {
                    minimum_update_period: duration("minimumUpdatePeriod").is_some_and(|d| d > Duration::from_secs(30)),
                    time_shift_buffer_depth: duration("timeShiftBufferDepth").is_none_or(|d| d.is_zero()),
                    min_buffer_time: duration("minBufferTime").is_some_and(|d| d.is_zero()),
                };
                Some(Edit::Root {
                    tag: Tag::of(e),
                    repair,
                })
            }
            "Representation" if parent == Some("AdaptationSet") => {
                let id = e.attrs.get("id").cloned().unwrap_or_default();
                self.rep = Some(id.clone());
                let bandwidth = !has("bandwidth");
                // A codecs string that may need completing from the init segment.
                let codecs = e.attrs.get("codecs").is_some_and(|c| !c.contains('.'));
                (bandwidth || codecs).then(|| Edit::Representation {
                    tag: Tag::of(e),
                    period: self.period.unwrap_or(0),
                    set: self.set.unwrap_or(0),
                    id,
                    bandwidth,
                })
            }
            "SegmentTemplate" if dynamic => {
                let rep = match parent {
                    Some("Representation") => Some(self.rep.clone().unwrap_or_default()),
                    Some("AdaptationSet") => None,
                    _ => return None,
                };
                let (has_offset, has_complete) = (has("availabilityTimeOffset"), has("availabilityTimeComplete"));
                (!(has_offset && has_complete)).then(|| Edit::Availability {
                    tag: Tag::of(e),
                    period: self.period.unwrap_or(0),
                    set: self.set.unwrap_or(0),
                    rep,
                    has_offset,
                    has_complete,
                })
            }
            _ => None,
        }
    }

    fn enter(&mut self, name: &str, parent: Option<&str>) {
        match (name, parent) {
            ("Period", Some("MPD")) => {
                self.period = Some(self.period.map_or(0, |p| p + 1));
                self.set = None;
            }
            ("AdaptationSet", Some("Period")) => self.set = Some(self.set.map_or(0, |s| s + 1)),
            _ => {}
        }
    }

    fn leave(&mut self, name: &str) {
        if name == "Representation" {
            self.rep = None;
        }
    }

    /// Notes `event` when quick-xml's writer spells it other than the input does (`</a >` as
    /// `</a>`, `<!DOCTYPE  a>` as `<!DOCTYPE a>`): the streaming rewriter wrote every event through
    /// that writer, so a changed MPD has always come out so spelled.
    fn respell(&mut self, event: &Event<'_>, span: Range<usize>) {
        self.scratch.clear();
        if Writer::new(&mut self.scratch).write_event(event.borrow()).is_err() {
            return;
        }
        if self.source.get(span.clone()) != Some(self.scratch.as_slice()) {
            let spelled = self.scratch.as_slice().into();
            self.push(span, Edit::Respell(spelled), When::Always);
        }
    }
}
