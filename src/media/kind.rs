//! What a stored file is, by its extension: the one place that classifies paths, for the live
//! index (what to follow), the routes (Content-Type, caching, how uploads replace) and LL-HLS.

/// The kinds of file ldash treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A DASH manifest (`.mpd`): parsed by the live index, rewritten for low latency.
    Mpd,
    /// An HLS playlist (`.m3u8`): generated from the MPD, or served as uploaded.
    Playlist,
    /// A media segment or init segment (CMAF and MP4 names, MPEG-TS, raw AAC): followed chunk by
    /// chunk, and immutable once complete.
    Media,
    /// Anything else (the play page's files, text, JSON, ...).
    Other,
}

/// Media extensions, lower case: CMAF/ISO BMFF (`.m4s`, `.mp4`, `.m4v`, `.m4a`, `.cmfv`, `.cmfa`,
/// `.cmft`), MPEG-TS and raw AAC.
const MEDIA: [&str; 9] = ["m4s", "mp4", "m4v", "m4a", "cmfv", "cmfa", "cmft", "ts", "aac"];

impl FileKind {
    /// The kind of `path` (case-insensitive).
    pub fn of(path: &str) -> FileKind {
        let ext = extension(path);
        match ext.as_deref() {
            Some("mpd") => FileKind::Mpd,
            Some("m3u8") => FileKind::Playlist,
            Some(e) if MEDIA.contains(&e) => FileKind::Media,
            _ => FileKind::Other,
        }
    }

    /// Manifests and playlists change while a stream is live.
    pub fn is_manifest(self) -> bool {
        matches!(self, FileKind::Mpd | FileKind::Playlist)
    }
}

/// The lower-case extension of the file name in `path`, if it has one.
pub fn extension(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_one_kind() {
        assert_eq!(FileKind::of("live/stream.mpd"), FileKind::Mpd);
        assert_eq!(FileKind::of("live/STREAM.MPD"), FileKind::Mpd);
        assert_eq!(FileKind::of("live/stream_0.m3u8"), FileKind::Playlist);
        for media in [
            "a.m4s", "a.mp4", "a.m4v", "a.m4a", "a.cmfv", "a.cmfa", "a.cmft", "a.ts", "a.aac",
        ] {
            assert_eq!(FileKind::of(media), FileKind::Media, "{media}");
        }
        assert_eq!(FileKind::of("a.txt"), FileKind::Other);
        assert_eq!(
            FileKind::of("folder.m4s/readme"),
            FileKind::Other,
            "the folder's name does not count"
        );
        assert_eq!(FileKind::of("noext"), FileKind::Other);
        assert!(FileKind::Mpd.is_manifest() && FileKind::Playlist.is_manifest());
        assert!(!FileKind::Media.is_manifest());
    }
}
