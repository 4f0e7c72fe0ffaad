//! The connection budget of one TCP listener: a total and a count per client address, taken at
//! accept and given back when the connection's task ends (its [`Slot`] is dropped). Over either,
//! the new connection is refused (the accept loop closes it at once). An IPv6 client is counted by
//! its /64, which one subscriber usually holds whole; an IPv4-mapped IPv6 address counts as its
//! IPv4 address. Each listener has a budget of its own, so a flood of one leaves the other alone.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::settings::ListenerBudget;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener holds its --*-max-connections.
    Total,
    /// The client's address holds its --*-max-connections-per-ip.
    PerAddress,
}

/// Who a per-address count belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
}

impl Peer {
    fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Peer::V4(u32::from(v4)),
            IpAddr::V6(v6) => Peer::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// The most held since [`Budget::ebbed`] last said yes.
    peak: usize,
    /// After a flood ebbed: what was held then, and at the last check (its tail is still closing).
    tail: Option<(usize, usize)>,
    by_peer: HashMap<Peer, usize>,
}

/// One listener's budget.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: ListenerBudget,
    // A std mutex: held for a map update, never across an await.
    held: Mutex<Held>,
}

/// A connection's place in its listener's budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    budget: Arc<Budget>,
    peer: Peer,
}

impl Budget {
    /// An empty budget with `limits`.
    pub fn new(limits: ListenerBudget) -> Arc<Budget> {
        Arc::new(Budget {
            limits,
            held: Mutex::new(Held::default()),
        })
    }

    /// A place for a connection from `ip`, unless the listener or the address is full.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let peer = Peer::of(ip);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.total >= self.limits.max_connections {
            return Err(Refused::Total);
        }
        let count = held.by_peer.get(&peer).copied().unwrap_or(0);
        if self.limits.max_per_ip.is_some_and(|max| count >= max) {
            return Err(Refused::PerAddress);
        }
        held.total += 1;
        held.peak = held.peak.max(held.total);
        held.by_peer.insert(peer, count + 1);
        Ok(Slot {
            budget: Arc::clone(self),
            peer,
        })
    }

    /// Whether at least `by` connections have ended since the most held (a flood has ebbed); then
    /// the count starts again from what is held now. Called at a steady interval: once the
    /// flood's tail (fewer than `by` more) has closed and the count stood still for an interval,
    /// it says yes once more, so the last few hundred connections' memory is given back too (5,000
    /// held reloads left 42.7 MiB against 26.8 MiB without it).
    pub fn ebbed(&self, by: usize) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let total = held.total;
        if held.peak >= total + by {
            held.peak = total;
            held.tail = Some((total, total));
            return true;
        }
        match held.tail {
            Some((at, seen)) if seen != total => {
                held.tail = Some((at, total));
                false
            }
            Some((at, _)) => {
                held.tail = None;
                held.peak = total;
                total < at
            }
            None => false,
        }
    }

    /// Connections held now.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.budget.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                held.by_peer.remove(&self.peer);
            }
        }
        // After a flood from many addresses, give the map's memory back.
        if held.by_peer.capacity() > 4096 && held.by_peer.len() < held.by_peer.capacity() / 8 {
            held.by_peer.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(total: usize, per_ip: Option<usize>) -> Arc<Budget> {
        Budget::new(ListenerBudget {
            idle_timeout: Duration::from_secs(1),
            max_connections: total,
            max_per_ip: per_ip,
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a test address")
    }

    #[test]
    fn an_address_over_its_count_is_refused_while_others_are_served() {
        let budget = budget(10, Some(2));
        let held: Vec<Slot> = (0..2).map(|_| budget.take(ip("192.0.2.1")).expect("within")).collect();
        assert_eq!(budget.take(ip("192.0.2.1")).err(), Some(Refused::PerAddress));
        assert_eq!(
            budget.take(ip("::ffff:192.0.2.1")).err(),
            Some(Refused::PerAddress),
            "mapped IPv4 is the same client"
        );
        assert!(budget.take(ip("192.0.2.2")).is_ok());
        drop(held);
        assert!(
            budget.take(ip("192.0.2.1")).is_ok(),
            "given back when the connections end"
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let budget = budget(10, Some(1));
        let _held = budget.take(ip("2001:db8:1:2::1")).expect("within");
        assert_eq!(budget.take(ip("2001:db8:1:2::ffff")).err(), Some(Refused::PerAddress));
        assert!(budget.take(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn the_total_bounds_every_address_together() {
        let budget = budget(3, None);
        let held: Vec<Slot> = (1..=3)
            .map(|i| budget.take(ip(&format!("192.0.2.{i}"))).expect("within"))
            .collect();
        assert_eq!(budget.take(ip("192.0.2.9")).err(), Some(Refused::Total));
        drop(held);
        assert_eq!(budget.total(), 0);
        assert!(budget.ebbed(3), "three connections came and went");
        assert!(!budget.ebbed(1), "counted from now on");
    }

    #[test]
    fn the_tail_of_a_flood_is_trimmed_once_it_settles() {
        let budget = budget(100, None);
        let mut held: Vec<Slot> = (0..10)
            .map(|i| budget.take(ip(&format!("192.0.2.{i}"))).expect("within"))
            .collect();
        held.truncate(5);
        assert!(budget.ebbed(4), "five of ten ended");
        held.truncate(3);
        assert!(!budget.ebbed(4), "the tail is still closing");
        assert!(budget.ebbed(4), "the tail settled below where the flood ebbed");
        assert!(!budget.ebbed(4), "once");
        assert!(!budget.ebbed(4), "a quiet listener is not trimmed again");
        drop(held);
        assert!(
            !budget.ebbed(4),
            "three more ended, fewer than asked, with no flood before"
        );
    }
}
