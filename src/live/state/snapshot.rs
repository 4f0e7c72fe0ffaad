//! One state of one rendition, shared by every playlist request that wakes on the same change of
//! its folder: when a part completes, hundreds of blocked requests wake at once, and each would
//! otherwise take the index lock, rebuild the same snapshot and write the same text. A leaf: it
//! knows the playlist writer's types, nothing of the state that makes it ([`super::playlists`]).

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::media::hls::{self, Clip, Rendition, Report, Timing};
use crate::media::mpd::Mpd;

/// One rendition, the stream's timing, and the other renditions' reports.
pub(super) type View = (Rendition, Timing, Vec<Report>);

/// One rendition of a stream at one change of its folder, with its playlist text rendered once.
#[derive(Debug)]
pub struct Snapshot {
    /// The folder's change counter when the snapshot was taken (its state is at least that new).
    pub(super) version: u64,
    /// Whether the stream had ended then (which time alone can change).
    pub(super) ended: bool,
    /// The manifest it was made from.
    pub(super) mpd: Arc<Mpd>,
    rendition: Rendition,
    timing: Timing,
    reports: Vec<Report>,
    /// The rendered playlist, full and with EXT-X-SKIP.
    rendered: [OnceLock<Bytes>; 2],
}

impl Snapshot {
    pub(super) fn new(version: u64, ended: bool, mpd: Arc<Mpd>, (rendition, timing, reports): View) -> Snapshot {
        Snapshot {
            version,
            ended,
            mpd,
            rendition,
            timing,
            reports,
            rendered: Default::default(),
        }
    }

    /// The rendition as listed.
    pub fn rendition(&self) -> &Rendition {
        &self.rendition
    }

    /// The stream's LL-HLS timing.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The media playlist text (with EXT-X-SKIP when `skip`), written by the first request that
    /// asks and shared with every other.
    pub fn text(&self, skip: bool) -> Bytes {
        self.rendered[usize::from(skip)]
            .get_or_init(|| Bytes::from(hls::media_playlist(&self.rendition, &self.timing, &self.reports, skip)))
            .clone()
    }

    /// The time view `clip` of the rendition (docs/dvr.md), written for this request: None when
    /// no segment falls in it. Its rendition reports name the other renditions' views, `query`
    /// (`start=...&end=...`) appended, so a player switching renditions stays in the view.
    pub fn view(&self, clip: &Clip, query: &str, skip: bool, now: SystemTime) -> Option<(Rendition, Bytes)> {
        let view = self.rendition.clipped(clip, now)?;
        let reports: Vec<Report> = self
            .reports
            .iter()
            .map(|r| Report {
                uri: format!("{}?{query}", r.uri),
                edge: r.edge,
            })
            .collect();
        let text = hls::media_playlist(&view, &self.timing, &reports, skip);
        Some((view, Bytes::from(text)))
    }
}
