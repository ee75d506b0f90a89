//! The agent embedded in another process (the controller daemon's agent for local jobs): the
//! same service, table of runs and expiry as `rjob-agent`, on a Unix socket private to the
//! process's user instead of mutual TLS. Callers on the socket count as one identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rjob_proto::v1::agent_server::AgentServer;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::config::AgentConfig;
use crate::policy::Policy;
use crate::runner::RunUser;
use crate::runs::{Runs, RunsOptions};
use crate::service::AgentService;

/// Largest request on the socket: a script (1 MiB) and stdin (4 MiB) with room.
const MAX_MESSAGE: usize = 6 << 20;

/// What an embedded agent serves, and for whom.
pub struct Embedding {
    /// The Unix socket to listen on (whatever is there is replaced; made 0600).
    pub socket: PathBuf,
    /// Limits, spool directory and retention: see [`AgentConfig::local`].
    pub config: AgentConfig,
    /// Who may run as whom.
    pub policy: Policy,
    /// The identity every caller on the socket has in the policy.
    pub identity: String,
}

/// A running embedded agent. Dropping it leaves the runs going; [`EmbeddedAgent::stop`] ends them.
pub struct EmbeddedAgent {
    runs: Arc<Runs>,
    serving: JoinHandle<()>,
    expiring: JoinHandle<()>,
}

/// Starts serving `embedding` in the background, with the expiry of ended runs nobody
/// received after the config's retention.
pub fn serve(embedding: Embedding) -> anyhow::Result<EmbeddedAgent> {
    use std::os::unix::fs::PermissionsExt;
    let Embedding {
        socket,
        config,
        policy,
        identity,
    } = embedding;
    let runs = Arc::new(Runs::open_with(&config.spool_dir, RunsOptions::of(&config))?);
    let expiring = keep_expiring(runs.clone(), config.retention);
    let service =
        AgentService::with_policy(config, runs.clone(), RunUser::current()?, policy, Some(identity));
    // remove_file never follows a symlink: a stale socket, or something planted, goes.
    let _ = std::fs::remove_file(&socket);
    let listener = bind_private(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", socket.display()))?;
    let serving = tokio::spawn(async move {
        let served = Server::builder()
            .add_service(AgentServer::new(service).max_decoding_message_size(MAX_MESSAGE))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the embedded agent stopped");
        }
    });
    Ok(EmbeddedAgent {
        runs,
        serving,
        expiring,
    })
}

fn bind_private(socket: &Path) -> anyhow::Result<UnixListener> {
    UnixListener::bind(socket).with_context(|| format!("listening on {}", socket.display()))
}

impl EmbeddedAgent {
    /// Stops every run still going (waiting up to `grace` for them to end) and the serving.
    pub async fn stop(self, grace: Duration) {
        self.runs.stop_all(grace).await;
        self.expiring.abort();
        self.serving.abort();
    }
}

/// How often ended runs are looked at for expiry, at most.
const EXPIRY_TICK: Duration = Duration::from_secs(60);

/// Removes, from now on, the ended runs whose output nobody received within `retention`
/// (looked at every minute, or sooner for a shorter retention).
pub fn keep_expiring(runs: Arc<Runs>, retention: Duration) -> JoinHandle<()> {
    let every = EXPIRY_TICK.min(retention).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            runs.expire(retention);
        }
    })
}
