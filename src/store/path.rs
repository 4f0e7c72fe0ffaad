//! What a stored path may look like, and the type that proves a path was checked: [`StorePath`] is
//! made only by validation ([`StorePath::new`], or [`StorePath::join`] and [`StorePath::sibling`],
//! which validate what they make), and the store's API takes it, so an unchecked path (from a
//! request, from the files found under the root, or built by the packager) cannot reach the store,
//! and nothing outside the root is ever read or written. Splitting a path into its folder and name
//! is written here once.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Longest accepted path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest accepted path segment (a file or folder name), in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing after the prefix.
    #[error("the path is empty")]
    Empty,
    /// Too long overall.
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// One name too long.
    #[error("a path segment is longer than {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong,
    /// `a//b`, a leading or a trailing '/'.
    #[error("the path has an empty segment (a leading, trailing or doubled '/')")]
    EmptySegment,
    /// `.` or `..`.
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
    /// A backslash, which some systems read as a separator.
    #[error("the path contains a backslash")]
    Backslash,
    /// NUL or another control character.
    #[error("the path contains a NUL or control character")]
    ControlCharacter,
    /// A name starting with '.': hidden files are not served (nor indexed after a restart).
    #[error("a path segment starts with '.' (hidden names are refused)")]
    Hidden,
    /// Not valid UTF-8 after percent-decoding.
    #[error("the path is not valid UTF-8 once percent-decoded")]
    NotUtf8,
}

/// A '/'-separated path relative to the store's root that passed [`validate`]: no empty, `.`, `..`
/// or hidden segment, no backslash or control character, within the length limits. Cheap to clone
/// (shared), and read as a `&str` through `Deref`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(Arc<str>);

impl StorePath {
    /// Checks `path` (decoded, '/'-separated, relative to the root).
    pub fn new(path: &str) -> Result<StorePath, PathError> {
        validate(path)?;
        Ok(StorePath(Arc::from(path)))
    }

    /// The path `{folder}/{name}` ("" is the root folder), checked.
    pub fn in_folder(folder: &str, name: &str) -> Result<StorePath, PathError> {
        if folder.is_empty() {
            StorePath::new(name)
        } else {
            StorePath::new(&format!("{folder}/{name}"))
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The folder: everything before the last '/', or "" at the root.
    pub fn folder(&self) -> &str {
        self.split().0
    }

    /// The file name: everything after the last '/'.
    pub fn name(&self) -> &str {
        self.split().1
    }

    /// The folder as a path of its own; None at the root.
    pub fn parent(&self) -> Option<StorePath> {
        // A prefix of a valid path that ends before a '/' is valid: its segments are.
        match self.folder() {
            "" => None,
            folder => Some(StorePath(Arc::from(folder))),
        }
    }

    /// `name` (one or more segments) under this path taken as a folder, checked.
    pub fn join(&self, name: &str) -> Result<StorePath, PathError> {
        StorePath::new(&format!("{self}/{name}"))
    }

    /// `name` in the same folder as this path, checked.
    pub fn sibling(&self, name: &str) -> Result<StorePath, PathError> {
        StorePath::in_folder(self.folder(), name)
    }

    fn split(&self) -> (&str, &str) {
        self.0.rsplit_once('/').unwrap_or(("", &self.0))
    }
}

impl Deref for StorePath {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StorePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StorePath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for StorePath {
    type Error = PathError;
    fn try_from(path: &str) -> Result<StorePath, PathError> {
        StorePath::new(path)
    }
}

impl std::str::FromStr for StorePath {
    type Err = PathError;
    fn from_str(path: &str) -> Result<StorePath, PathError> {
        StorePath::new(path)
    }
}

impl PartialEq<str> for StorePath {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for StorePath {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

/// Checks a decoded, '/'-separated path relative to the root.
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            s if s.len() > MAX_SEGMENT_BYTES => return Err(PathError::SegmentTooLong),
            s if s.starts_with('.') => return Err(PathError::Hidden),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass() {
        assert_eq!(validate("live/stream.mpd"), Ok(()));
        assert_eq!(validate("a/b/chunk-stream0-00001.m4s"), Ok(()));
        assert_eq!(validate("a/b..c"), Ok(()));
    }

    #[test]
    fn attacks_are_refused() {
        assert_eq!(validate(""), Err(PathError::Empty));
        assert_eq!(validate("../etc/passwd"), Err(PathError::DotSegment));
        assert_eq!(validate("a/./b"), Err(PathError::DotSegment));
        assert_eq!(validate("/etc/passwd"), Err(PathError::EmptySegment));
        assert_eq!(validate("a//b"), Err(PathError::EmptySegment));
        assert_eq!(validate("a/"), Err(PathError::EmptySegment));
        assert_eq!(validate("a\\..\\b"), Err(PathError::Backslash));
        assert_eq!(validate("a\0b"), Err(PathError::ControlCharacter));
        assert_eq!(validate("a\nb"), Err(PathError::ControlCharacter));
        assert_eq!(validate(&"a".repeat(2000)), Err(PathError::TooLong));
        assert_eq!(validate(&"a".repeat(300)), Err(PathError::SegmentTooLong));
        assert_eq!(validate(".ldash-tmp/1"), Err(PathError::Hidden));
        assert_eq!(validate("live/.x"), Err(PathError::Hidden));
    }

    #[test]
    fn a_store_path_splits_into_folder_and_name_and_joins_only_valid_paths() {
        let path = StorePath::new("live/ch/seg-1.m4s").expect("valid");
        assert_eq!((path.folder(), path.name()), ("live/ch", "seg-1.m4s"));
        let root = StorePath::new("top.mpd").expect("valid");
        assert_eq!((root.folder(), root.name()), ("", "top.mpd"));
        assert_eq!(path.sibling("init.m4s").expect("valid").as_str(), "live/ch/init.m4s");
        assert_eq!(root.sibling("other.mpd").expect("valid").as_str(), "other.mpd");
        let channel = StorePath::new("live/ch").expect("valid");
        assert_eq!(
            channel.join("manifest.mpd").expect("valid").as_str(),
            "live/ch/manifest.mpd"
        );
        assert_eq!(channel.join(".."), Err(PathError::DotSegment));
        assert_eq!(channel.join(""), Err(PathError::EmptySegment));
        assert_eq!(root.sibling("a\\b"), Err(PathError::Backslash));
        assert_eq!(path.parent(), Some(StorePath::new("live/ch").expect("valid")));
        assert_eq!(root.parent(), None);
        assert_eq!(StorePath::in_folder("", "x.m4s").expect("valid").as_str(), "x.m4s");
        assert_eq!(StorePath::new("../x"), Err(PathError::DotSegment));
    }
}
