//! ISO BMFF box primitives over fully buffered bytes: walking a payload's child boxes and reading
//! big-endian fields, every read bounds-checked into a [`CmafError`] instead of a panic.

use super::CmafError;

/// The child boxes of a fully buffered box payload.
pub(super) fn children(data: &[u8]) -> impl Iterator<Item = Result<([u8; 4], &[u8]), CmafError>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let size32 = be32(rest, 0, "box")?;
            let kind: [u8; 4] = rest
                .get(4..8)
                .ok_or(CmafError::Malformed("box"))?
                .try_into()
                .map_err(|_| CmafError::Malformed("box"))?;
            let (size, header) = match size32 {
                0 => (rest.len() as u64, 8),
                1 => (be64(rest, 8, "box")?, 16),
                n => (u64::from(n), 8),
            };
            if size < header as u64 || size > rest.len() as u64 {
                return Err(CmafError::Malformed("box"));
            }
            let size = size as usize;
            let body = &rest[header..size];
            Ok((kind, body, size))
        })();
        match parsed {
            Ok((kind, body, size)) => {
                rest = &rest[size..];
                Some(Ok((kind, body)))
            }
            Err(err) => {
                rest = &[];
                Some(Err(err))
            }
        }
    })
}

/// The version byte of a full box (0 when the payload is empty).
pub(super) fn version(body: &[u8]) -> u8 {
    body.first().copied().unwrap_or(0)
}

/// The big-endian u32 at `at`, or `what` is malformed.
pub(super) fn be32(data: &[u8], at: usize, what: &'static str) -> Result<u32, CmafError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(CmafError::Malformed(what))
}

/// The big-endian u64 at `at`, or `what` is malformed.
pub(super) fn be64(data: &[u8], at: usize, what: &'static str) -> Result<u64, CmafError> {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(CmafError::Malformed(what))
}
