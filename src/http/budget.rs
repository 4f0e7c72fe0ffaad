//! Upload slots per uploader (`--max-uploads-per-peer`): one uploader may hold only so many of the
//! store's `--max-uploads` slots, so that one client with upload rights (trickling, or just many)
//! cannot take them all and starve every other encoder.
//!
//! Who an uploader is comes from [`Uploader::of`], the one seam to change when uploads carry stream
//! keys (a key's budget instead of its peer's). The map holds only uploaders with an upload in
//! progress: an entry goes when its last slot is given back, so it is bounded by the uploads
//! themselves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use super::ConnInfo;

/// Who an upload is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uploader {
    /// A peer: its IPv4 address, or the /64 prefix of its IPv6 address (one host commonly holds a
    /// whole /64, and would otherwise have 2^64 budgets).
    Peer(IpAddr),
}

impl Uploader {
    /// The uploader of a request. Today the peer; per stream key once uploads carry one.
    pub fn of(conn: &ConnInfo) -> Uploader {
        match conn.peer.ip().to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Uploader::Peer(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Uploader::Peer(v4),
        }
    }
}

impl std::fmt::Display for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uploader::Peer(IpAddr::V6(prefix)) => write!(f, "peer {prefix}/64"),
            Uploader::Peer(ip) => write!(f, "peer {ip}"),
        }
    }
}

/// The slots each uploader holds.
#[derive(Debug, Default)]
pub struct UploadBudget {
    /// Slots per uploader; None: no budget per uploader (only `--max-uploads`).
    limit: Option<usize>,
    held: Arc<Mutex<HashMap<Uploader, usize>>>,
}

/// Why an upload got no slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{uploader} already has {limit} uploads in progress, its share of the server's upload slots (--max-uploads-per-peer); retry when one ends"
)]
pub struct OverBudget {
    /// Who.
    pub uploader: String,
    /// The budget.
    pub limit: usize,
}

/// One slot of an uploader, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    held: Arc<Mutex<HashMap<Uploader, usize>>>,
    uploader: Uploader,
}

fn lock(held: &Mutex<HashMap<Uploader, usize>>) -> MutexGuard<'_, HashMap<Uploader, usize>> {
    // Every update is one counter change: a poisoned lock holds a usable map.
    held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl UploadBudget {
    /// `limit` slots per uploader; None (or a budget not below `total`, the server's slots): no
    /// budget per uploader.
    pub fn new(limit: Option<usize>, total: usize) -> UploadBudget {
        UploadBudget {
            limit: limit.filter(|l| *l < total),
            held: Arc::default(),
        }
    }

    /// A slot for `uploader`, or why not.
    pub fn take(&self, uploader: Uploader) -> Result<Slot, OverBudget> {
        if let Some(limit) = self.limit {
            let mut held = lock(&self.held);
            let count = held.entry(uploader.clone()).or_default();
            if *count >= limit {
                return Err(OverBudget {
                    uploader: uploader.to_string(),
                    limit,
                });
            }
            *count += 1;
        }
        Ok(Slot {
            held: Arc::clone(&self.held),
            uploader,
        })
    }

    /// Uploaders holding a slot now.
    pub fn uploaders(&self) -> usize {
        lock(&self.held).len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.uploader) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.uploader);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn from(addr: &str) -> Uploader {
        let peer: SocketAddr = addr.parse().expect("address");
        Uploader::of(&ConnInfo {
            peer,
            ..ConnInfo::default()
        })
    }

    #[test]
    fn one_uploader_gets_its_share_and_no_more_and_gets_it_back() {
        let budget = UploadBudget::new(Some(2), 256);
        let a = budget.take(from("10.0.0.1:1000")).expect("first");
        let _b = budget.take(from("10.0.0.1:1001")).expect("second");
        let refused = budget.take(from("10.0.0.1:1002")).expect_err("third is over");
        assert!(refused.to_string().contains("peer 10.0.0.1"), "{refused}");
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
    fn the_map_holds_only_uploaders_with_uploads() {
        let budget = UploadBudget::new(Some(4), 256);
        let slots: Vec<Slot> = (0..100)
            .map(|i| budget.take(from(&format!("10.0.{i}.1:1"))).expect("a slot"))
            .collect();
        assert_eq!(budget.uploaders(), 100);
        drop(slots);
        assert_eq!(budget.uploaders(), 0);
    }

    #[test]
    fn a_budget_not_below_the_total_is_no_budget() {
        let budget = UploadBudget::new(Some(8), 8);
        let _slots: Vec<Slot> = (0..20)
            .map(|_| budget.take(from("10.0.0.1:1")).expect("only --max-uploads limits"))
            .collect();
        assert_eq!(budget.uploaders(), 0, "nothing counted without a budget");
    }
}
