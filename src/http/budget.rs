//! Shares of what anonymous clients can hold, per client and in all: upload slots
//! (`--max-uploads-per-peer`: one client with upload rights, trickling or just many, cannot take all
//! of the store's `--max-uploads` and starve every other encoder), and requests held waiting for the
//! live edge (`--max-held-requests`, `--max-held-requests-per-peer`: blocking playlist reloads, early
//! segment requests and parts not yet complete, each cheap but multiplied by HTTP/2 and HTTP/3
//! streams into millions without a bound).
//!
//! Who a client is comes from [`Client::of`], the one seam to change when uploads carry stream keys
//! (a key's budget instead of its peer's). The map holds only clients with a slot: an entry goes
//! when its last slot is given back, so it is bounded by the slots themselves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ConnInfo;

/// Who a slot is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A peer: its IPv4 address, or the /64 prefix of its IPv6 address (one host commonly holds a
    /// whole /64, and would otherwise have 2^64 budgets).
    Peer(IpAddr),
}

impl Client {
    /// The client of a request. Today the peer; per stream key once uploads carry one.
    pub fn of(conn: &ConnInfo) -> Client {
        match conn.peer.ip().to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Client::Peer(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Client::Peer(v4),
        }
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Client::Peer(IpAddr::V6(prefix)) => write!(f, "peer {prefix}/64"),
            Client::Peer(ip) => write!(f, "peer {ip}"),
        }
    }
}

/// What a budget shares out; it names the options in the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Upload slots (the store bounds the total).
    Uploads,
    /// Requests held waiting for the live edge.
    Held,
}

/// The slots a budget has given out: per client, and in all.
#[derive(Debug, Default)]
struct Counts {
    per_client: HashMap<Client, usize>,
    total: usize,
}

/// Slots shared out per client, and in all.
#[derive(Debug)]
pub struct PeerBudget {
    kind: Kind,
    /// Slots per client; None: no share per client.
    per_client: Option<usize>,
    /// Slots in all; None: no total here.
    total: Option<usize>,
    counts: Arc<Mutex<Counts>>,
}

/// Why a client got no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// The client holds its share.
    #[error("{client} already has {limit} {}", share_text(*.kind))]
    Share {
        /// What was asked for.
        kind: Kind,
        /// Who.
        client: String,
        /// The share.
        limit: usize,
    },
    /// The server holds all it allows.
    #[error("{}", total_text(*.kind, *.limit))]
    Total {
        /// What was asked for.
        kind: Kind,
        /// The total.
        limit: usize,
    },
}

fn share_text(kind: Kind) -> &'static str {
    match kind {
        Kind::Uploads => {
            "uploads in progress, its share of the server's upload slots (--max-uploads-per-peer); retry when one ends"
        }
        Kind::Held => {
            "requests held waiting for the live edge, its share (--max-held-requests-per-peer); retry when one is answered"
        }
    }
}

fn total_text(kind: Kind, limit: usize) -> String {
    match kind {
        Kind::Uploads => format!("the server has {limit} uploads in progress, its limit; retry when one ends"),
        Kind::Held => format!(
            "the server holds {limit} requests waiting for the live edge, its limit (--max-held-requests); retry in a moment"
        ),
    }
}

/// One slot of a client, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    /// None: nothing was counted (a budget without limits).
    counts: Option<Arc<Mutex<Counts>>>,
    client: Client,
}

fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // Every update is one counter change: a poisoned lock holds usable counts.
    counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PeerBudget {
    /// Upload slots: `limit` per client; None (or a share not below `total`, the store's slots,
    /// which the store enforces): no share per client.
    pub fn uploads(limit: Option<usize>, total: usize) -> PeerBudget {
        PeerBudget::new(Kind::Uploads, limit.filter(|l| *l < total), None)
    }

    /// Held requests: `per_client` each, `total` in all (None: no such bound).
    pub fn held(per_client: Option<usize>, total: Option<usize>) -> PeerBudget {
        let per_client = per_client.filter(|l| total.is_none_or(|t| *l < t));
        PeerBudget::new(Kind::Held, per_client, total)
    }

    fn new(kind: Kind, per_client: Option<usize>, total: Option<usize>) -> PeerBudget {
        PeerBudget {
            kind,
            per_client,
            total,
            counts: Arc::default(),
        }
    }

    /// A slot for `client`, or why not.
    pub fn take(&self, client: Client) -> Result<Slot, OverBudget> {
        if self.per_client.is_none() && self.total.is_none() {
            return Ok(Slot { counts: None, client });
        }
        let mut counts = lock(&self.counts);
        if let Some(limit) = self.total.filter(|limit| counts.total >= *limit) {
            return Err(OverBudget::Total { kind: self.kind, limit });
        }
        let held = counts.per_client.entry(client.clone()).or_default();
        if let Some(limit) = self.per_client.filter(|limit| *held >= *limit) {
            if *held == 0 {
                counts.per_client.remove(&client);
            }
            return Err(OverBudget::Share {
                kind: self.kind,
                client: client.to_string(),
                limit,
            });
        }
        *held += 1;
        counts.total += 1;
        Ok(Slot {
            counts: Some(Arc::clone(&self.counts)),
            client,
        })
    }

    /// Clients holding a slot now.
    pub fn clients(&self) -> usize {
        lock(&self.counts).per_client.len()
    }

    /// Slots held now.
    pub fn held_now(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(counts) = &self.counts else { return };
        let mut counts = lock(counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_client.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn from(addr: &str) -> Client {
        let peer: SocketAddr = addr.parse().expect("address");
        Client::of(&ConnInfo {
            peer,
            ..ConnInfo::default()
        })
    }

    #[test]
    fn one_uploader_gets_its_share_and_no_more_and_gets_it_back() {
        let budget = PeerBudget::uploads(Some(2), 256);
        let a = budget.take(from("10.0.0.1:1000")).expect("first");
        let _b = budget.take(from("10.0.0.1:1001")).expect("second");
        let refused = budget.take(from("10.0.0.1:1002")).expect_err("third is over");
        assert!(refused.to_string().contains("peer 10.0.0.1"), "{refused}");
        assert!(refused.to_string().contains("--max-uploads-per-peer"), "{refused}");
        let _other = budget
            .take(from("10.0.0.2:1000"))
            .expect("another peer has its own share");
        drop(a);
        let _c = budget
            .take(from("10.0.0.1:1003"))
            .expect("a slot given back is taken again");
    }

    #[test]
    fn ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(from("[2001:db8::1]:1"), from("[2001:db8::ffff:2]:2"));
        assert_ne!(from("[2001:db8::1]:1"), from("[2001:db8:0:1::1]:1"));
        assert_eq!(from("[::ffff:10.0.0.1]:1"), from("10.0.0.1:2"));
    }

    #[test]
    fn the_map_holds_only_clients_with_slots() {
        let budget = PeerBudget::uploads(Some(4), 256);
        let slots: Vec<Slot> = (0..100)
            .map(|i| budget.take(from(&format!("10.0.{i}.1:1"))).expect("a slot"))
            .collect();
        assert_eq!(budget.clients(), 100);
        drop(slots);
        assert_eq!(budget.clients(), 0);
        assert_eq!(budget.held_now(), 0);
    }

    #[test]
    fn a_budget_not_below_the_total_is_no_budget() {
        let budget = PeerBudget::uploads(Some(8), 8);
        let _slots: Vec<Slot> = (0..20)
            .map(|_| budget.take(from("10.0.0.1:1")).expect("only --max-uploads limits"))
            .collect();
        assert_eq!(budget.clients(), 0, "nothing counted without a budget");
    }

    #[test]
    fn held_requests_are_bounded_per_client_and_in_all() {
        let budget = PeerBudget::held(Some(3), Some(5));
        let mut slots: Vec<Slot> = (0..3)
            .map(|_| budget.take(from("10.0.0.1:1")).expect("within the share"))
            .collect();
        let share = budget.take(from("10.0.0.1:1")).expect_err("over the share");
        assert!(share.to_string().contains("--max-held-requests-per-peer"), "{share}");
        slots.extend((0..2).map(|_| budget.take(from("10.0.0.2:1")).expect("within the total")));
        let total = budget.take(from("10.0.0.3:1")).expect_err("over the total");
        assert!(total.to_string().contains("--max-held-requests"), "{total}");
        assert_eq!(budget.clients(), 2, "a refused client leaves nothing in the map");
        slots.pop();
        let _again = budget.take(from("10.0.0.3:1")).expect("a slot given back");
        assert_eq!(budget.held_now(), 5);
    }
}
