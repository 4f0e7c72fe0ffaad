//! CMAF ingest (DASH-IF live media ingest, interface 1), the pure part: an encoder POSTs each track
//! of a channel as one long fragmented-MP4 stream to `{channel}/Streams({track})`, and ldash packages
//! it. [`TrackReader`] turns a track's bytes into its init segment and whole CMAF chunks (checked);
//! [`Channel`] decides where each chunk goes (which segment, when a segment starts, which old ones
//! go) on a timeline shared by the channel's tracks, and writes the channel's DASH manifest
//! ([`Channel::manifest`]). The driver ([`crate::packager`]) stores what they decide; from there the
//! live index serves the segments while they grow, rewrites the manifest for low latency and
//! generates the LL-HLS playlists, exactly as for an encoder that writes DASH itself.
//!
//! No I/O and no clock reads: the time comes in as an argument.

mod channel;
mod manifest;
mod reader;
mod restore;
#[cfg(test)]
mod tests;

pub use channel::{Channel, PackageOptions, Placement, Step};
pub use manifest::{init_name, parse_init_name, parse_segment_name, segment_name, MANIFEST, PACKAGED};
pub use reader::{TrackEvent, TrackReader};
pub use restore::Stored;

use crate::media::cmaf::CmafError;

/// Why a track was refused. Each says what was wrong, in words an encoder's operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The bytes are not a fragmented MP4 (CMAF) stream.
    #[error("not a CMAF track: {0}")]
    NotCmaf(String),
    /// A box could not be read.
    #[error("not a CMAF track: {0}")]
    Cmaf(#[from] CmafError),
    /// A fragment came before any `moov`, or the body ended before one.
    #[error("no init segment: a CMAF track starts with ftyp and moov")]
    NoInit,
    /// The init segment does not hold exactly one track.
    #[error("a CMAF track holds one track; this init segment holds {0}")]
    Tracks(usize),
    /// The track's `mdhd` timescale is 0.
    #[error("the track's timescale is 0")]
    ZeroTimescale,
    /// A fragment's baseMediaDecodeTime is before the previous one's.
    #[error("decode time went back from {from} to {to}")]
    DecodeTimeBack {
        /// The previous fragment's decode time.
        from: u64,
        /// This one's.
        to: u64,
    },
    /// An init segment or fragment exceeds the upload limit.
    #[error("a fragment larger than the upload limit ({limit} bytes)")]
    FragmentTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The body ended inside a box.
    #[error("the track ended inside a fragment ({0} bytes of it received)")]
    Truncated(u64),
    /// The track name in `Streams(...)` is not usable.
    #[error("bad track name {0:?}: use letters, digits, '.', '_' and '-'")]
    TrackName(String),
}

/// The representation id of track `name` from `Streams({name})`: the name without its extension
/// (`video.cmfv` is `video`).
pub fn representation_id(name: &str) -> Result<String, IngestError> {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let usable = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if stem.is_empty() || stem.len() > 64 || !stem.chars().all(usable) || !name.chars().all(|c| usable(c) || c == '.') {
        return Err(IngestError::TrackName(name.to_owned()));
    }
    Ok(stem.to_owned())
}

/// The channel and track name of an ingest path `{channel}/Streams({track})`, if it is one.
pub fn track_path(path: &str) -> Option<(&str, &str)> {
    let (channel, last) = path.rsplit_once('/')?;
    let track = last.strip_prefix("Streams(")?.strip_suffix(')')?;
    (!channel.is_empty()).then_some((channel, track))
}
