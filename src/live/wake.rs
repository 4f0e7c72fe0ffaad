//! The folders' change channels, owned by the driver: the state says which folder changed or went
//! ([`Wake`], taken after every event), and whoever waits on a folder (a blocked playlist request,
//! a download waiting for its segment to be indexed) holds a receiver from here. The counter only
//! grows while the state knows the folder, so a snapshot taken at a count is never newer than what
//! a waiter that read a higher count asks for.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::state::Wake;

/// A folder's change counter.
pub(super) type Changes = Arc<watch::Sender<u64>>;

/// The change channel of every folder that changed or is waited on.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    folders: HashMap<String, Changes>,
}

impl Wakes {
    /// The sender of `folder`'s counter (created if new), for the driver to bump on every chunk
    /// without taking the index lock.
    pub(super) fn sender(&mut self, folder: &str) -> Changes {
        Arc::clone(
            self.folders
                .entry(folder.to_owned())
                .or_insert_with(|| Arc::new(watch::channel(0).0)),
        )
    }

    /// A receiver of `folder`'s counter.
    pub(super) fn subscribe(&mut self, folder: &str) -> watch::Receiver<u64> {
        self.sender(folder).subscribe()
    }

    /// Whether a request waits on `folder`.
    pub(super) fn watched(&self, folder: &str) -> bool {
        self.folders.get(folder).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Carries out the state's wake-ups: a changed folder's waiters look again; a folder the state
    /// forgot has its channel closed (after a last change), so its waiters give up.
    pub(super) fn send(&mut self, wakes: Vec<Wake>) {
        for wake in wakes {
            match wake {
                Wake::Changed(folder) => bump(&self.sender(&folder)),
                Wake::Gone(folder) => {
                    if let Some(tx) = self.folders.remove(&folder) {
                        bump(&tx);
                    }
                }
            }
        }
    }

    /// Drops the channels of folders the state does not know and no request waits on.
    pub(super) fn prune(&mut self, known: impl Fn(&str) -> bool) {
        self.folders
            .retain(|folder, tx| known(folder) || tx.receiver_count() > 0);
    }
}

/// One more change of a folder.
pub(super) fn bump(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n += 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_lives_while_its_folder_is_known_or_waited_on_and_closes_when_the_folder_goes() {
        let mut wakes = Wakes::default();
        let mut waiting = wakes.subscribe("live");
        wakes.send(vec![Wake::Changed("live".into())]);
        assert_eq!(*waiting.borrow_and_update(), 1, "a change wakes the folder's waiters");
        assert!(wakes.watched("live"));
        wakes.prune(|_| false);
        assert!(wakes.watched("live"), "not dropped while a request waits on it");
        wakes.send(vec![Wake::Gone("live".into())]);
        assert!(!wakes.watched("live"));
        assert_eq!(*waiting.borrow_and_update(), 2, "the last change reaches the waiters");
        assert!(
            waiting.has_changed().is_err(),
            "then the channel is closed: the waiters give up"
        );
        // A folder a request waited on, the state never knew: its channel goes with the request.
        let request = wakes.subscribe("nothing");
        wakes.prune(|_| false);
        assert!(wakes.watched("nothing"));
        drop(request);
        wakes.prune(|_| false);
        assert!(wakes.folders.is_empty());
    }
}
