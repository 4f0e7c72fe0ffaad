//! SHA-256 of bodies, whole or as their chunks arrive: how a reader proves it got the exact bytes.

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(bytes);
    digest.finish()
}

/// A body's length and SHA-256, computed as its chunks arrive.
pub struct Sha256 {
    context: ring::digest::Context,
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Sha256 {
        Sha256 {
            context: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.context.update(chunk);
        self.len += chunk.len() as u64;
    }

    /// The bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.context.finish().as_ref());
        out
    }
}

/// The SHA-256 of chunks taken together.
pub fn sha256_of<B: AsRef<[u8]>>(chunks: &[B]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for chunk in chunks {
        digest.update(chunk.as_ref());
    }
    digest.finish()
}
