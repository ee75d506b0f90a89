//! What the other daemons sharing the store change, as the store tells of it
//! ([`JobStore::subscribe`](crate::store::JobStore::subscribe); PostgreSQL's LISTEN): the
//! jobs' waiters and followers here wake ([`super::Changes`]), a stop or suspend sent to
//! another daemon reaches the children running here, and a job another daemon removed is
//! stopped here. With SQLite (one daemon) nothing is heard.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Manager;
use crate::child::Desired;
use crate::store::Notice;

impl Manager {
    /// Starts hearing the other daemons' changes.
    pub(super) fn hear_peers(self: &Arc<Self>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.store.subscribe(tx);
        let manager: Weak<Manager> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(notice) = rx.recv().await {
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                manager.heard(notice).await;
            }
        });
    }

    async fn heard(self: &Arc<Self>, notice: Notice) {
        tracing::trace!(?notice, "heard from another daemon");
        match notice {
            Notice::Changed(ids) => {
                for id in ids {
                    self.changes.bump(id);
                }
            }
            Notice::Flags(id) => {
                self.apply_stored_flags(id).await;
                self.changes.bump(id);
                // A resume makes suspended children claimable again.
                self.kick(id);
            }
            Notice::Claimable(ids) => {
                for id in ids {
                    self.kick(id);
                }
            }
            Notice::Removed(id) => {
                // Its runs are stopped; what they still write of it is let go by the store.
                if let Some(tx) = self.active().get(&id) {
                    tracing::info!(job = id, "another daemon removed a job running here: stopping it");
                    tx.send_if_modified(|d| !std::mem::replace(&mut d.stop, true));
                }
                self.changes.removed(id);
                self.kicks().forget(id);
            }
            Notice::Resync => {
                let running: Vec<i64> = self.active().keys().copied().collect();
                for id in running {
                    self.apply_stored_flags(id).await;
                }
                self.changes.bump_all();
            }
        }
    }

    /// Job `id`'s flags as stored, applied to its children running here (a stop is never
    /// taken back).
    async fn apply_stored_flags(&self, id: i64) {
        if !self.active().contains_key(&id) {
            return;
        }
        let job = match self.store.job(id).await {
            Ok(Some(job)) => job,
            Ok(None) => return, // removed: its own notice follows
            Err(e) => {
                tracing::warn!(job = id, error = %e, "another daemon's stop or suspend could not be read");
                return;
            }
        };
        if let Some(tx) = self.active().get(&id) {
            tx.send_if_modified(|d| {
                let want = Desired {
                    stop: d.stop || job.stop_requested,
                    suspend: job.suspended,
                };
                if want == *d {
                    return false;
                }
                tracing::info!(
                    job = id,
                    stop = want.stop,
                    suspend = want.suspend,
                    "a stop or suspend from another daemon"
                );
                *d = want;
                true
            });
        }
    }
}
