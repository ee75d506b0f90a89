//! Keeps the store's registry of which agent is dialled in to which daemon up to date
//! ([`crate::store::JobStore::publish_agents`]), so that the daemons sharing a store leave a
//! child to the daemon its agent dialled in to. It publishes the whole list after every
//! change (a burst of connects coalesced into one write) and again under a new lease epoch.
//! A store of one daemon's own has nothing to share: nothing runs for it.

use std::sync::Arc;
use std::time::Duration;

use super::DialIn;
use crate::store::JobStore;

/// How long a burst of connects is gathered before one write.
const GATHER: Duration = Duration::from_millis(100);

/// How often the list is checked anyway (a new epoch after the lease lapsed, a failed write).
const RECHECK: Duration = Duration::from_secs(2);

/// Publishes `dialin`'s agents to `store` for the daemon's life.
pub fn spawn(dialin: DialIn, store: Arc<dyn JobStore>) {
    if store.epoch() == 0 {
        return; // one daemon's own store (SQLite)
    }
    tokio::spawn(async move {
        let mut changes = dialin.subscribe();
        let mut published: Option<(i64, Vec<String>)> = None;
        loop {
            let now = (store.epoch(), names(&dialin));
            if published.as_ref() != Some(&now) {
                match store.publish_agents(&now.1).await {
                    Ok(()) => {
                        tracing::debug!(agents = now.1.len(), "published the agents dialled in here");
                        published = Some(now);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing the agents dialled in here failed; trying again")
                    }
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return; // the registry went with the daemon
                    }
                    tokio::time::sleep(GATHER).await;
                }
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    });
}

fn names(dialin: &DialIn) -> Vec<String> {
    dialin.list().into_iter().map(|c| c.name).collect()
}
