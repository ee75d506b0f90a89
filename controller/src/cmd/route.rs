//! Where a plain `rjob invoke -H ...` runs its fan-out. It goes through the daemon when some
//! of its hosts can only be reached that way: they dialled in to it (`rjob-agent --connect`,
//! the session `@connected`). The daemon runs the fan-out, each of those hosts over its
//! dialled-in connection and the others dialled from the daemon, and streams the output back:
//! the same printing, summary, exit status and Ctrl-C as a direct invoke
//! ([`crate::invoke::run_via`]).
//!
//! A daemon is never started for it: with none running, or none that any of the hosts
//! dialled in to, the invoke dials every host itself, as always.

use std::collections::HashSet;
use std::path::Path;

use crate::cli::InvokeArgs;
use crate::connect::Tls;
use crate::daemon::client::{connect_running, DaemonClient};
use crate::hosts::Host;
use crate::invoke::Via;
use crate::request::host_list;

/// The name of the built-in session of the agents that dialled in.
const CONNECTED: &str = "@connected";

/// `rjob invoke` (not `--session`, not `--as-job`): through the daemon of `state_dir` when
/// some of its hosts dialled in to it, else dialled from here with the identity `tls` loads.
pub async fn invoke(
    args: &InvokeArgs,
    state_dir: Option<&Path>,
    tls: impl FnOnce() -> anyhow::Result<Tls>,
) -> anyhow::Result<u8> {
    let (hosts, users) = host_list(args)?;
    let daemon = match state_dir {
        Some(dir) => dialled_in_daemon(&hosts, dir).await,
        None => None,
    };
    let via = match daemon {
        Some(client) => {
            tracing::debug!("some hosts dialled in to the daemon: the invoke goes through it");
            Via::Daemon {
                client,
                session: String::new(),
            }
        }
        None => Via::Direct(tls()?),
    };
    Ok(crate::invoke::run_via(args, hosts, users, via).await?)
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
