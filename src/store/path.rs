//! What a stored path may look like. Every path that reaches the store, from a request or from the
//! files found under the root, passes [`validate`], so nothing outside the root is ever read or written.

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
}
