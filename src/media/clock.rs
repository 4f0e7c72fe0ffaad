//! The glass-to-glass test source: video frames that carry their capture time in their pixels.
//!
//! Each frame's top rows hold the wall clock (milliseconds since the Unix epoch, modulo 2^32) as a
//! barcode of 32 black or white cells, and below it the same 32 bits inverted, so that a reader can
//! tell a clean read from a damaged one. The layout is proportional (a cell is 1/32 of the width, a
//! row 1/18 of the height), so a rendition scaled down by the encoder reads the same way. The play
//! page decodes it from a canvas and compares it with its own clock: on one machine (or machines
//! whose clocks agree) that is the latency a viewer sees, capture, encoder, origin and player
//! included.
//!
//! Pure code: the caller passes the time and owns the pacing and the output (`ldash-clock` writes
//! frames to standard output for ffmpeg; the benchmark feeds ffmpeg's standard input itself).

/// Cells in one barcode row.
pub const BITS: usize = 32;
/// The barcode rows are each this fraction of the frame's height.
pub const ROW_FRACTION: usize = 18;

const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Raw frames of one size in the yuv420p layout (ffmpeg `-f rawvideo -pix_fmt yuv420p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frames {
    /// Width in pixels: even, and at least 64.
    pub width: usize,
    /// Height in pixels: even, and at least 36.
    pub height: usize,
}

impl Frames {
    /// Frames of `width` x `height`, or None for a size the barcode cannot fit (odd, or too small).
    pub fn new(width: usize, height: usize) -> Option<Frames> {
        let fits =
            width >= 2 * BITS && height >= 2 * ROW_FRACTION && width.is_multiple_of(2) && height.is_multiple_of(2);
        fits.then_some(Frames { width, height })
    }

    /// Bytes of one frame: the luma plane and two chroma planes of a quarter of its size.
    pub fn frame_len(&self) -> usize {
        self.width * self.height * 3 / 2
    }

    fn row_height(&self) -> usize {
        self.height / ROW_FRACTION
    }

    /// Paints frame number `number`, captured at `stamp_ms` (milliseconds since the Unix epoch),
    /// into `frame` (`frame_len` bytes): the barcode on top, a moving picture below, so that the
    /// encoder has real work to do.
    pub fn paint(&self, frame: &mut [u8], number: u64, stamp_ms: u64) {
        let (w, h) = (self.width, self.height);
        let Some((luma, chroma)) = frame.get_mut(..self.frame_len()).map(|f| f.split_at_mut(w * h)) else {
            return;
        };
        chroma.fill(128);
        let code = stamp_ms as u32;
        let band = self.row_height();
        let shift = (number * 4) as usize;
        for (y, row) in luma.chunks_exact_mut(w).enumerate() {
            if y < 2 * band {
                let bits = if y < band { code } else { !code };
                for (x, px) in row.iter_mut().enumerate() {
                    let cell = (x * BITS / w).min(BITS - 1);
                    let on = bits >> (BITS - 1 - cell) & 1 == 1;
                    *px = if on { WHITE } else { BLACK };
                }
            } else {
                // A diagonal ramp that scrolls one way and a bar that sweeps the other.
                let bar = (number as usize * 8) % w;
                for (x, px) in row.iter_mut().enumerate() {
                    let ramp = ((x + y + shift) % 200) as u8 + 28;
                    *px = if x.abs_diff(bar) < 12 { WHITE } else { ramp };
                }
            }
        }
    }

    /// Reads the capture time (milliseconds modulo 2^32) back from a luma plane of this size:
    /// None when the inverted row does not match, i.e. the frame is damaged or not a clock frame.
    /// The play page does the same in JavaScript; this is its reference.
    pub fn read(&self, luma: &[u8]) -> Option<u32> {
        let band = self.row_height();
        let sample = |row: usize, cell: usize| -> Option<bool> {
            let x = (2 * cell + 1) * self.width / (2 * BITS);
            let y = row * band + band / 2;
            luma.get(y * self.width + x).map(|v| *v >= 128)
        };
        let (mut code, mut inverse) = (0u32, 0u32);
        for cell in 0..BITS {
            code = code << 1 | u32::from(sample(0, cell)?);
            inverse = inverse << 1 | u32::from(sample(1, cell)?);
        }
        (code == !inverse).then_some(code)
    }
}

/// The full capture time from its low 32 bits, taking the nearest candidate to `now_ms`.
pub fn unwrap_stamp(code: u32, now_ms: u64) -> u64 {
    let base = now_ms & !0xffff_ffff;
    let candidates = [base.wrapping_sub(1 << 32), base, base.wrapping_add(1 << 32)];
    candidates
        .into_iter()
        .map(|b| b | u64::from(code))
        .min_by_key(|c| c.abs_diff(now_ms))
        .unwrap_or(u64::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_painted_frame_reads_back_its_capture_time() {
        let frames = Frames::new(640, 360).expect("size");
        let mut frame = vec![0u8; frames.frame_len()];
        for (number, stamp) in [(0, 0u64), (1, 1_796_000_123_456), (77, u64::from(u32::MAX))] {
            frames.paint(&mut frame, number, stamp);
            assert_eq!(frames.read(&frame), Some(stamp as u32), "frame {number}");
        }
    }

    #[test]
    fn a_damaged_barcode_is_not_read() {
        let frames = Frames::new(320, 180).expect("size");
        let mut frame = vec![0u8; frames.frame_len()];
        frames.paint(&mut frame, 3, 1_796_000_123_456);
        // Turn the centre of the first cell of the top row to the other colour.
        let y = frames.row_height() / 2;
        let x = frames.width / (2 * BITS);
        frame[y * frames.width + x] = 255 - frame[y * frames.width + x];
        assert_eq!(frames.read(&frame), None);
    }

    #[test]
    fn sizes_the_barcode_cannot_fit_are_refused() {
        assert_eq!(Frames::new(63, 360), None);
        assert_eq!(Frames::new(641, 360), None);
        assert_eq!(Frames::new(640, 20), None);
        assert!(Frames::new(64, 36).is_some());
    }

    #[test]
    fn stamps_unwrap_to_the_nearest_time() {
        let now = 1_796_000_123_456u64;
        assert_eq!(unwrap_stamp((now - 700) as u32, now), now - 700);
        assert_eq!(unwrap_stamp((now + 5) as u32, now), now + 5);
        // Across a wrap of the low 32 bits.
        let now = (7u64 << 32) + 10;
        assert_eq!(unwrap_stamp(u32::MAX - 9, now), (7u64 << 32) - 10);
    }
}
