//! Request paths: percent-decoded exactly once, then checked by the store's path rules.

use crate::store::{PathError, StorePath};

/// Decodes the part of a request path after the route prefix into a store path.
pub fn decode(raw: &str) -> Result<StorePath, PathError> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let path = String::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
    StorePath::new(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once() {
        assert_eq!(decode("live/a%20b.mpd").as_deref(), Ok("live/a b.mpd"));
        // %252e decodes once to %2e, a literal name, not a dot segment.
        assert_eq!(decode("live/%252e%252e/x").as_deref(), Ok("live/%2e%2e/x"));
    }

    #[test]
    fn encoded_attacks_are_refused() {
        assert_eq!(decode("%2e%2e/etc/passwd"), Err(PathError::DotSegment));
        assert_eq!(decode("a%2f%2fb"), Err(PathError::EmptySegment));
        assert_eq!(decode("a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(decode("a%5c..%5cb"), Err(PathError::Backslash));
        assert_eq!(decode("a%ffb"), Err(PathError::NotUtf8));
    }
}
