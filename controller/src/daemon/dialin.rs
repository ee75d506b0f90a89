//! The agents that dialled in to this daemon (`rjob serve --agent-listen`,
//! `rjob-agent --connect`): a registry from host name (the name the agent's certificate
//! proved) to its live connection. Children of jobs use the registered connection instead
//! of dialling ([`crate::child::Target`]); `rjob daemon status` lists them (and sessions show
//! them as the built-in session `@connected`).
//!
//! The registry owns each connection's life: a connection is closed when its entry goes
//! (the agent dialled in again, so the older connection is dead to it) and its entry goes
//! when the connection ends. Accepting the connections is [`accept`].
//!
//! Interface for the rest of the daemon: [`DialIn::get`] (the live connection to a host, if
//! any), [`DialIn::list`] (names with connected-since), [`DialIn::gone_since`] (a host that
//! dialled in earlier and is not connected now), [`DialIn::wait_for`].

pub mod accept;
pub mod builtin;
pub mod publish;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::connect::Agent;

/// One agent connected now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    /// The host name its certificate proved (what `-H` names it by).
    pub name: String,
    /// When this connection was established (ms since the epoch).
    pub since_ms: i64,
    /// Where it came from.
    pub peer: SocketAddr,
}

struct Entry {
    id: u64,
    agent: Agent,
    since_ms: i64,
    peer: SocketAddr,
    /// Dropped with the entry: closes the connection.
    _close: oneshot::Sender<()>,
}

#[derive(Default)]
struct Table {
    connected: HashMap<String, Entry>,
    /// Hosts that dialled in earlier and are gone now, with since when (ms).
    gone: HashMap<String, i64>,
}

/// The registry; cheap to clone (one shared table).
#[derive(Clone)]
pub struct DialIn {
    inner: Arc<Inner>,
}

struct Inner {
    table: Mutex<Table>,
    next_id: AtomicU64,
    /// Bumped on every change, for [`DialIn::wait_for`].
    changed: watch::Sender<u64>,
    /// Where the daemon accepts agents, when it does (`--agent-listen`).
    listening: Mutex<Option<SocketAddr>>,
}

impl Default for DialIn {
    fn default() -> Self {
        DialIn {
            inner: Arc::new(Inner {
                table: Mutex::new(Table::default()),
                next_id: AtomicU64::new(1),
                changed: watch::channel(0).0,
                listening: Mutex::new(None),
            }),
        }
    }
}

impl std::fmt::Debug for DialIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialIn")
            .field("listening", &self.listening())
            .field("connected", &self.len())
            .finish()
    }
}

impl DialIn {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live connection to `name`, when it is dialled in.
    pub fn get(&self, name: &str) -> Option<Agent> {
        self.table().connected.get(name).map(|e| e.agent.clone())
    }

    /// The agents connected now, by name.
    pub fn list(&self) -> Vec<Connected> {
        let mut list: Vec<Connected> = self
            .table()
            .connected
            .iter()
            .map(|(name, e)| Connected {
                name: name.clone(),
                since_ms: e.since_ms,
                peer: e.peer,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// How many agents are connected now.
    pub fn len(&self) -> usize {
        self.table().connected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Since when `name` is gone, when it dialled in to this daemon earlier and is not
    /// connected now.
    pub fn gone_since(&self, name: &str) -> Option<i64> {
        let table = self.table();
        if table.connected.contains_key(name) {
            return None;
        }
        table.gone.get(name).copied()
    }

    /// Changes on every connect and disconnect.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Where the daemon accepts agents (`--agent-listen`), if it does.
    pub fn listening(&self) -> Option<SocketAddr> {
        *self.inner.listening.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_listening(&self, addr: SocketAddr) {
        *self.inner.listening.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// The connection to `name` once it is dialled in, waiting up to `timeout`.
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Option<Agent> {
        let mut changes = self.inner.changed.subscribe();
        let wait = async {
            loop {
                if let Some(agent) = self.get(name) {
                    return agent;
                }
                if changes.changed().await.is_err() {
                    // The registry is gone with the daemon: nothing will come.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Registers `agent` as `name`'s connection, replacing (and closing) an older one.
    /// Answers the entry's id, for [`DialIn::remove`].
    pub(crate) fn insert(
        &self,
        name: &str,
        agent: Agent,
        peer: SocketAddr,
        close: oneshot::Sender<()>,
    ) -> u64 {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            id,
            agent,
            since_ms: crate::clock::now_ms(),
            peer,
            _close: close,
        };
        let replaced = {
            let mut table = self.table();
            table.gone.remove(name);
            table.connected.insert(name.to_string(), entry)
        };
        if let Some(old) = replaced {
            tracing::info!(host = %name, old_peer = %old.peer, %peer, "the agent dialled in again; closing its older connection");
        }
        self.inner.changed.send_modify(|n| *n += 1);
        id
    }

    /// The connection with `id` to `name` is over: its entry goes (unless a newer
    /// connection replaced it already).
    pub(crate) fn remove(&self, name: &str, id: u64) {
        let removed = {
            let mut table = self.table();
            if table.connected.get(name).is_some_and(|e| e.id == id) {
                table.gone.insert(name.to_string(), crate::clock::now_ms());
                table.connected.remove(name)
            } else {
                None
            }
        };
        if removed.is_some() {
            self.inner.changed.send_modify(|n| *n += 1);
        }
    }
}
