//! The agents that dialled in, as the built-in session `@connected`: `rjob session list`
//! shows them, and `rjob invoke --session @connected` runs on every one connected now.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rjob_proto::DEFAULT_PORT;

use super::DialIn;
use crate::connect::{Agent, ConnectError};
use crate::hosts::Host;
use crate::pool::{Connections, HostLink, Pool, Session};

/// The built-in session's name.
pub const CONNECTED: &str = "@connected";

impl Connections for DialIn {
    fn hosts(&self) -> Vec<HostLink> {
        self.list()
            .into_iter()
            .map(|c| HostLink {
                host: Host {
                    name: c.name,
                    port: DEFAULT_PORT,
                },
                connected: true,
                reason: String::new(),
            })
            .collect()
    }

    fn agent<'a>(&'a self, host: &'a Host, timeout: Duration) -> BoxFuture<'a, Result<Agent, ConnectError>> {
        Box::pin(async move {
            // An agent that dialled in is waited for (it dials again by itself), never dialled.
            self.wait_for(&host.name, timeout).await.ok_or_else(|| {
                ConnectError::Transport(format!(
                    "{} is not connected to this daemon now (its agent dials in by itself: rjob-agent --connect)",
                    host.name
                ))
            })
        })
    }

    /// The daemon keeps these connections: a user cannot close them.
    fn close(&self) {}
}

/// Adds `@connected` to `pool` (when the daemon accepts agents that dial in).
pub fn register(pool: &Pool, dialin: &DialIn, throttle_limit: u32, now_ms: i64) {
    let session = Session {
        name: CONNECTED.to_string(),
        conns: Arc::new(dialin.clone()),
        created_at_ms: now_ms,
        throttle_limit,
        builtin: true,
    };
    if let Err(e) = pool.insert(session) {
        tracing::error!(error = %e, "cannot add the built-in session {CONNECTED}");
    }
}
