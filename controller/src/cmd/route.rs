//! A plain `rjob invoke -H ...` goes through the daemon when some of its hosts can only be
//! reached that way: they dialled in to it (`rjob-agent --connect`, the session
//! `@connected`). The daemon runs the fan-out, each of those hosts over its dialled-in
//! connection and the others dialled from the daemon, and streams the output back: the same
//! printing, summary, exit status and Ctrl-C as a direct invoke ([`crate::invoke::run_via`]).
//!
//! A daemon is never started for it: with none running, or none that any of the hosts
//! dialled in to, the invoke dials every host itself, as always.

use std::collections::HashSet;
use std::path::Path;

use crate::cli::InvokeArgs;
use crate::daemon::client::{connect_running, DaemonClient};
use crate::hosts::Host;
use crate::invoke::Via;
use crate::request::host_list;
use crate::UsageError;

/// The name of the built-in session of the agents that dialled in.
const CONNECTED: &str = "@connected";

/// Runs `args` through the daemon of `state_dir` when some of its hosts dialled in to it:
/// `None` when they did not (or no daemon runs), and the invoke is the caller's to run.
pub async fn invoke(args: &InvokeArgs, state_dir: &Path) -> Option<anyhow::Result<u8>> {
    let (hosts, users) = match host_list(args) {
        Ok(listed) => listed,
        Err(e) => return Some(Err(e.into())),
    };
    let client = dialled_in_daemon(&hosts, state_dir).await?;
    tracing::debug!("some hosts dialled in to the daemon: the invoke goes through it");
    let via = Via::Daemon {
        client,
        session: String::new(),
    };
    Some(
        crate::invoke::run_via(args, hosts, users, via)
            .await
            .map_err(|e: UsageError| e.into()),
    )
}

/// The running daemon of `state_dir`, if any of `hosts` (by name) dialled in to it.
async fn dialled_in_daemon(hosts: &[Host], state_dir: &Path) -> Option<DaemonClient> {
    let mut client = connect_running(state_dir).await.ok()??;
    let connected = super::session::session_hosts(&mut client, CONNECTED).await.ok()?;
    let names: HashSet<&str> = connected.iter().map(|h| h.name.as_str()).collect();
    hosts
        .iter()
        .any(|h| names.contains(h.name.as_str()))
        .then_some(client)
}
