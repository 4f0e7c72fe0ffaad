//! The minimum upload rate: an upload (a `PUT`, a `POST`, a CMAF ingest track) that delivers fewer
//! than `bytes` in a window of `window`, after the first window (lengthened by `grace`), is cut, so
//! that a client trickling a byte now and then cannot hold an upload slot for ever (the idle
//! timeout alone lets a byte every 29 s through).
//!
//! [`Pace`] is the rule, pure: bytes and `now` in, a verdict out. [`Paced`] applies it to a request
//! body: the body fails with [`TooSlow`] as soon as a window closes short, woken by a timer even
//! while the client sends nothing. What happens to what was already stored is the caller's, as for
//! any upload that fails midway (see [`crate::store`]: an aborted upload's readers get an error, a
//! CMAF ingest track's open segment is finished with its whole chunks).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The rule (`--upload-min-bytes`, `--upload-rate-window`, `--upload-rate-grace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes each window must bring; 0 turns the rule off.
    pub bytes: u64,
    /// The window.
    pub window: Duration,
    /// Added to the first window: an encoder's first bytes may take a keyframe interval or two.
    pub grace: Duration,
}

impl MinRate {
    /// No minimum.
    pub const OFF: MinRate = MinRate {
        bytes: 0,
        window: Duration::from_secs(30),
        grace: Duration::ZERO,
    };
}

/// Why an upload was cut: the window that closed short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the upload was cut: it sent {got} bytes in {window_secs} s, and at least {wanted} bytes every {window_secs} s are needed (--upload-min-bytes)"
)]
pub struct TooSlow {
    /// Bytes received in the window.
    pub got: u64,
    /// Bytes the window needed.
    pub wanted: u64,
    /// The window's length, in seconds.
    pub window_secs: u64,
}

/// One upload's standing against a [`MinRate`].
#[derive(Debug, Clone)]
pub struct Pace {
    rule: MinRate,
    /// When the current window closes.
    closes: Instant,
    /// Bytes received in it.
    got: u64,
}

/// How far away "never" is, for a rule that is off (a day: a timer that never fires in practice).
const NEVER: Duration = Duration::from_secs(86_400);

impl Pace {
    /// An upload that started at `start`.
    pub fn new(rule: MinRate, start: Instant) -> Pace {
        let window = rule.window.max(Duration::from_secs(1));
        Pace {
            rule: MinRate { window, ..rule },
            closes: start + rule.grace + window,
            got: 0,
        }
    }

    /// When the current window closes (far away when the rule is off).
    pub fn deadline(&self) -> Instant {
        if self.rule.bytes == 0 {
            return Instant::now() + NEVER;
        }
        self.closes
    }

    /// `n` bytes arrived at `now`. Err when a window that closed before them was short.
    pub fn received(&mut self, n: u64, now: Instant) -> Result<(), TooSlow> {
        self.check(now)?;
        self.got = self.got.saturating_add(n);
        Ok(())
    }

    /// Closes every window that ended by `now`; Err at the first that was short (an empty window
    /// after a full one is short too, so this loops at most twice).
    pub fn check(&mut self, now: Instant) -> Result<(), TooSlow> {
        if self.rule.bytes == 0 {
            return Ok(());
        }
        while now >= self.closes {
            if self.got < self.rule.bytes {
                return Err(TooSlow {
                    got: self.got,
                    wanted: self.rule.bytes,
                    window_secs: self.rule.window.as_secs(),
                });
            }
            self.got = 0;
            self.closes += self.rule.window;
        }
        Ok(())
    }
}

pin_project_lite::pin_project! {
    /// A request body held to a [`MinRate`]: it fails with [`TooSlow`] (boxed; downcast it) when
    /// a window closes short, whether or not the client is sending.
    pub struct Paced<B> {
        #[pin]
        inner: B,
        // Boxed, so that a paced body is Unpin whenever its inner body is.
        timer: Pin<Box<Sleep>>,
        pace: Pace,
        failed: bool,
    }
}

impl<B> Paced<B> {
    /// `inner`, starting now.
    pub fn new(inner: B, rule: MinRate) -> Paced<B> {
        let pace = Pace::new(rule, Instant::now());
        Paced {
            inner,
            timer: Box::pin(tokio::time::sleep_until(pace.deadline())),
            pace,
            failed: false,
        }
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Err(slow) = this.pace.received(n, Instant::now()) {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(slow))));
                }
                this.timer.as_mut().reset(this.pace.deadline());
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        // Nothing from the client: the timer judges the window that is closing. A window that
        // passes moves the deadline a window on, so this runs at most twice.
        while this.timer.as_mut().poll(cx).is_ready() {
            if let Err(slow) = this.pace.check(Instant::now()) {
                *this.failed = true;
                return Poll::Ready(Some(Err(Box::new(slow))));
            }
            this.timer.as_mut().reset(this.pace.deadline());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: MinRate = MinRate {
        bytes: 1000,
        window: Duration::from_secs(30),
        grace: Duration::from_secs(10),
    };

    #[test]
    fn a_steady_encoder_is_never_cut() {
        let t0 = Instant::now();
        let mut pace = Pace::new(RULE, t0);
        // 100 bytes every 0.1 s for ten minutes (an audio track sends far more).
        for step in 0..6000u64 {
            let now = t0 + Duration::from_millis(100 * step);
            assert_eq!(pace.received(100, now), Ok(()), "at {step}");
        }
    }

    #[test]
    fn the_first_window_gets_the_grace_and_a_pause_inside_a_window_passes() {
        let t0 = Instant::now();
        let mut pace = Pace::new(RULE, t0);
        // Nothing for 35 s (a slow start), then enough before the first window closes at 40 s.
        assert_eq!(pace.check(t0 + Duration::from_secs(35)), Ok(()));
        assert_eq!(pace.received(1000, t0 + Duration::from_secs(39)), Ok(()));
        assert_eq!(pace.deadline(), t0 + Duration::from_secs(40));
        // A 25 s pause, then data again before the second window closes at 70 s.
        assert_eq!(pace.received(1000, t0 + Duration::from_secs(65)), Ok(()));
        assert_eq!(pace.check(t0 + Duration::from_secs(70)), Ok(()));
    }

    #[test]
    fn a_trickle_is_cut_when_its_window_closes() {
        let t0 = Instant::now();
        let mut pace = Pace::new(RULE, t0);
        // A byte every 20 s: the idle timeout never fires, the rate rule does, at 40 s.
        assert_eq!(pace.received(1, t0 + Duration::from_secs(20)), Ok(()));
        assert_eq!(
            pace.check(t0 + Duration::from_secs(40)),
            Err(TooSlow {
                got: 1,
                wanted: 1000,
                window_secs: 30
            })
        );
    }

    #[test]
    fn an_empty_window_after_a_full_one_is_short() {
        let t0 = Instant::now();
        let mut pace = Pace::new(RULE, t0);
        assert_eq!(pace.received(5000, t0 + Duration::from_secs(1)), Ok(()));
        // The next bytes come after two windows: the second one was empty.
        assert!(pace.received(5000, t0 + Duration::from_secs(75)).is_err());
    }

    #[test]
    fn zero_bytes_turns_the_rule_off() {
        let t0 = Instant::now();
        let mut pace = Pace::new(MinRate::OFF, t0);
        assert_eq!(pace.check(t0 + Duration::from_secs(10_000)), Ok(()));
    }
}
