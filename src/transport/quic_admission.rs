//! Admission of QUIC connection attempts: above `--quic-retry-above` handshakes in progress a
//! client whose address is not yet validated gets a stateless Retry (ldash keeps nothing for it
//! until it echoes the token), and beyond the bounds on handshakes (in all and per validated peer)
//! and on connections an attempt is refused. The rule ([`verdict`]) is apart from quinn, so that it
//! is tested on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::metrics::QuicMeter;
use crate::settings::QuicLimits;

/// What becomes of a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Start the handshake.
    Accept,
    /// Answer with a stateless Retry: the client must echo its token from the address it claims.
    Retry,
    /// Refuse (CONNECTION_REFUSED), for the reason given.
    Refuse(&'static str),
}

/// How loaded the listener is when an attempt arrives.
#[derive(Debug, Clone, Copy)]
struct Load {
    connections: usize,
    handshakes: usize,
    /// Validated handshakes in progress from the attempt's IP address.
    peer_handshakes: usize,
}

/// The admission rule, apart from quinn: Retry costs a spoofed or silent source nothing but one
/// packet from ldash, so it comes before every bound a validated client is held to.
fn verdict(limits: &QuicLimits, load: Load, validated: bool) -> Verdict {
    if load.connections >= limits.max_connections {
        return Verdict::Refuse("QUIC connection limit reached");
    }
    if !validated && load.handshakes >= limits.retry_above {
        return Verdict::Retry;
    }
    if load.handshakes >= limits.max_handshakes {
        return Verdict::Refuse("QUIC handshake limit reached");
    }
    if validated && load.peer_handshakes >= limits.max_handshakes_per_peer {
        return Verdict::Refuse("QUIC handshake limit per peer reached");
    }
    Verdict::Accept
}

/// Counts connections and handshakes in progress, and decides each attempt. Only the accept loop
/// admits, so a count read there cannot be overtaken by another admission; slots are given back
/// from the connections' tasks when they are dropped.
#[derive(Debug)]
pub(super) struct Admission {
    limits: QuicLimits,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    /// Validated handshakes in progress by IP address; an address leaves the map when its count
    /// drops to zero, so the map never holds more than the handshakes in progress.
    validated_by_peer: Mutex<HashMap<IpAddr, usize>>,
    meter: QuicMeter,
}

impl Admission {
    pub(super) fn new(limits: QuicLimits, meter: QuicMeter) -> Self {
        Self {
            limits,
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            validated_by_peer: Mutex::new(HashMap::new()),
            meter,
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Never held across an await; a panic while holding it cannot leave a count half-changed.
        self.validated_by_peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides a connection attempt: the attempt with its slots when it may start its handshake;
    /// otherwise it is answered here (a Retry, or a refusal) and None is returned.
    pub(super) fn admit(self: &Arc<Self>, incoming: quinn::Incoming) -> Option<(quinn::Incoming, Slots)> {
        let (peer, validated) = (incoming.remote_address(), incoming.remote_address_validated());
        let load = Load {
            connections: self.connections.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            peer_handshakes: if validated {
                self.peers().get(&peer.ip()).copied().unwrap_or(0)
            } else {
                0
            },
        };
        match verdict(&self.limits, load, validated) {
            Verdict::Accept => {}
            Verdict::Retry => {
                match incoming.retry() {
                    Ok(()) => {
                        self.meter.retries.inc();
                    }
                    Err(err) => {
                        // Retried once already (quinn allows one Retry): refuse.
                        err.into_incoming().refuse();
                        self.meter.refused.inc();
                    }
                }
                return None;
            }
            Verdict::Refuse(why) => {
                tracing::debug!(%peer, "{why}: QUIC connection refused");
                incoming.refuse();
                self.meter.refused.inc();
                return None;
            }
        }
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.meter.connections.inc();
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        self.meter.handshakes.inc();
        let validated_peer = validated.then_some(peer.ip());
        if let Some(ip) = validated_peer {
            *self.peers().entry(ip).or_insert(0) += 1;
        }
        let slots = Slots {
            _connection: ConnectionSlot(Arc::clone(self)),
            handshake: HandshakeSlot {
                admission: Arc::clone(self),
                validated_peer,
            },
        };
        Some((incoming, slots))
    }
}

/// What an admitted attempt holds: its connection slot for its whole life, its handshake slot
/// until the HTTP/3 setup is done.
#[derive(Debug)]
pub(super) struct Slots {
    pub(super) _connection: ConnectionSlot,
    pub(super) handshake: HandshakeSlot,
}

/// A connection counted against `--quic-max-connections` while it lives.
#[derive(Debug)]
pub(super) struct ConnectionSlot(Arc<Admission>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.meter.connections.dec();
    }
}

/// A handshake counted against the handshake bounds while it lives.
#[derive(Debug)]
pub(super) struct HandshakeSlot {
    admission: Arc<Admission>,
    validated_peer: Option<IpAddr>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.handshakes.fetch_sub(1, Ordering::Relaxed);
        admission.meter.handshakes.dec();
        if let Some(peer) = self.validated_peer {
            let mut peers = admission.peers();
            if let Some(count) = peers.get_mut(&peer) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    peers.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: QuicLimits = QuicLimits {
        max_connections: 100,
        max_handshakes: 20,
        retry_above: 5,
        max_handshakes_per_peer: 3,
        handshake_timeout: Duration::from_secs(5),
    };

    fn load(connections: usize, handshakes: usize, peer_handshakes: usize) -> Load {
        Load {
            connections,
            handshakes,
            peer_handshakes,
        }
    }

    #[test]
    fn admission_retries_before_it_refuses_and_refuses_only_at_a_bound() {
        use Verdict::{Accept, Retry};
        let rows = [
            // (connections, handshakes, validated handshakes of the peer, validated, verdict)
            (0, 0, 0, false, Accept),
            (50, 4, 0, false, Accept),
            (50, 5, 0, false, Retry),
            (50, 5, 0, true, Accept),
            (50, 19, 2, true, Accept),
            (
                50,
                19,
                3,
                true,
                Verdict::Refuse("QUIC handshake limit per peer reached"),
            ),
            (50, 20, 0, true, Verdict::Refuse("QUIC handshake limit reached")),
            (50, 20, 0, false, Retry),
            (100, 0, 0, false, Verdict::Refuse("QUIC connection limit reached")),
            (100, 0, 0, true, Verdict::Refuse("QUIC connection limit reached")),
        ];
        for (connections, handshakes, peer, validated, expected) in rows {
            assert_eq!(
                verdict(&LIMITS, load(connections, handshakes, peer), validated),
                expected,
                "{connections} connections, {handshakes} handshakes, {peer} of the peer, validated {validated}"
            );
        }
    }

    #[test]
    fn retry_above_zero_means_every_unvalidated_client_is_retried() {
        let limits = QuicLimits {
            retry_above: 0,
            ..LIMITS
        };
        assert_eq!(verdict(&limits, load(0, 0, 0), false), Verdict::Retry);
        assert_eq!(verdict(&limits, load(0, 0, 0), true), Verdict::Accept);
    }
}
