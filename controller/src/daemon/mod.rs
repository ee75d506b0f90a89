//! `rjob serve`: the controller daemon. It owns the jobs (in a SQLite store under the state
//! directory), serves the CLI on a Unix socket private to the user, and runs local jobs on an
//! embedded agent (the same code as `rjob-agent`) behind a second private socket.

pub mod admin;
pub mod client;
pub mod dialin;
pub mod health;
pub mod identity;
pub mod info;
pub mod invoke;
pub mod manager;
pub mod notices;
pub mod orphans;
pub mod retention;
pub mod saved_sessions;
pub mod service;
pub mod sessions;
pub mod statedir;
mod writer;

/// The receive session (its window is the CLI's too).
pub use manager::receive;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rjob_proto::v1::controller_server::ControllerServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::connect::Tls;

/// Environment variable naming the state directory.
pub const STATE_DIR_ENV: &str = "RJOB_STATE_DIR";

/// The state directory: `--state-dir`, then `$RJOB_STATE_DIR`, then `$XDG_STATE_HOME/rjob`,
/// then `~/.local/state/rjob`.
pub fn state_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("rjob"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".local/state/rjob"))
        .context("no state directory: pass --state-dir DIR, set RJOB_STATE_DIR, or set HOME")
}

/// Largest request on the daemon's sockets: a script (1 MiB) and stdin (4 MiB) with room.
const MAX_MESSAGE: usize = 6 << 20;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("rjob.sock")
}

/// The identity of the CLI user on the embedded agent's private socket.
pub const LOCAL_IDENTITY: &str = "local";

/// Who local jobs may run as: the daemon's own user, without a password; when the daemon runs
/// as root, any other user except root too, with that user's password (like `su`).
fn local_policy() -> anyhow::Result<rjob_agent::policy::Policy> {
    use rjob_agent::policy::{Policy, Rule};
    let me = rjob_agent::runner::RunUser::current()?;
    let mut allow = vec![Rule {
        identity: LOCAL_IDENTITY.into(),
        users: vec![me.name.clone()],
        groups: Vec::new(),
        password: false,
        default: Some(me.name.clone()),
    }];
    if me.uid == 0 {
        allow.push(Rule {
            identity: LOCAL_IDENTITY.into(),
            users: vec!["*".into()],
            groups: Vec::new(),
            password: true,
            default: None,
        });
    }
    Ok(Policy { allow })
}

/// Settings of the daemon.
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    /// The controller's identity for remote jobs; `None`: only local jobs.
    pub tls: Option<Tls>,
    /// Where the identity is looked for when `tls` is `None` (loaded once it is there).
    pub identity_dir: Option<PathBuf>,
    /// How long a child may stay Disconnected before it fails.
    pub reconnect_window: Duration,
    /// The job store (`rjob serve --store`); `None`: SQLite in the state directory.
    pub store: Option<String>,
    /// What retention removes (`--retention`, `--max-store-size`, `--force-retention`).
    pub retention: crate::store::retention::Policy,
    /// The time between retention sweeps.
    pub retention_interval: Duration,
    /// Where agents dial in (`rjob serve --agent-listen`); `None`: they do not.
    pub agent_listen: Option<std::net::SocketAddr>,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the daemon until `shutdown` resolves.
/// Takes the state directory's lock. A daemon that was just killed may leave it held for a
/// moment by a run it was starting (a forked child holds the lock's descriptor until its
/// exec closes it), so a held lock is tried again for a few seconds before it is refused.
async fn lock_state_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut file = statedir::open_private(&dir.join("daemon.lock"), false)?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, _)) if tokio::time::Instant::now() < deadline => {
                file = back;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => anyhow::bail!(
                "a daemon already runs for {}: stop it first (rjob serve)",
                dir.display()
            ),
        }
    }
}

pub async fn serve(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &config.state_dir;
    // The user's own, 0700, not a symlink (created so when missing): nobody else can read the
    // store or plant files in it. Every file in it is opened with O_NOFOLLOW, mode 0600.
    statedir::ensure_dir(dir)?;
    // One daemon per state directory, for its whole life: two would run jobs twice.
    let _lock = lock_state_dir(dir).await?;
    let socket = socket_path(dir);
    // Whatever is there (a stale socket, or something planted) goes; remove_file never
    // follows a symlink.
    let _ = std::fs::remove_file(&socket);

    let store = crate::store::open(dir, config.store.as_deref()).await?;
    let admin = Arc::new(admin::Admin::new(crate::store::location(
        dir,
        config.store.as_deref(),
    )));

    // The embedded agent for local jobs: same runner, spool, service and expiry as rjob-agent.
    let local_socket = dir.join("local-agent.sock");
    let local = rjob_agent::embedded::serve(rjob_agent::embedded::Embedding {
        socket: local_socket.clone(),
        config: rjob_agent::config::AgentConfig::local(dir.join("local-spool")),
        policy: local_policy()?,
        identity: LOCAL_IDENTITY.to_string(),
    })?;

    // Runs an earlier daemon gave up on are stopped once their agents answer.
    // Both follow the one identity: loaded once it exists, with no restart.
    let identity = Arc::new(identity::Identity::new(config.identity_dir, config.tls));
    let dialin = dialin::DialIn::default();
    let orphans = orphans::Orphans::open(dir, identity.clone(), Some(dialin.clone()));
    orphans.resume();
    let lost = store.lost_notice().map(str::to_string);
    // Bound before anything else is served: a port in use is an error at start.
    let agent_listener = match config.agent_listen {
        Some(addr) => Some(
            dialin::accept::bind(addr)
                .with_context(|| format!("listening for agents (--agent-listen) on {addr}"))?,
        ),
        None => None,
    };
    let shared_store = store.clone();
    let (saved_sessions, unreadable) = saved_sessions::SavedSessions::open(dir);
    if let Some(e) = unreadable {
        tracing::error!("{e}; starting with no sessions");
    }
    let manager = manager::Manager::new(
        store,
        identity,
        local_socket,
        config.reconnect_window,
        orphans,
        dialin.clone(),
        saved_sessions,
    );
    if let Some(lost) = lost {
        // Said once here, in the log, and by `rjob jobs` for as long as this daemon runs.
        tracing::error!("{lost}");
        manager.health().set_lost(lost);
    }
    let resumed = manager.recover().await?;
    sessions::reopen(&manager);
    dialin::publish::spawn(dialin.clone(), shared_store);
    retention::spawn(manager.clone(), config.retention, config.retention_interval);
    let _accepting = agent_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(listen = %addr, "accepting agents that dial in (rjob-agent --connect)");
        }
        dialin::builtin::register(
            manager.pool(),
            &dialin,
            crate::cli::DEFAULT_THROTTLE_LIMIT,
            crate::clock::now_ms(),
        );
        let manager = manager.clone();
        AbortOnDrop(dialin::accept::spawn(listener, dialin, move || manager.tls()))
    });
    manager.start_lease();

    let listener =
        UnixListener::bind(&socket).with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %socket.display(), resumed, "rjob daemon ready");
    let pool = manager.pool().clone();
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let serving = Server::builder()
        .layer(notices::layer(manager.health().clone()))
        .add_service(
            ControllerServer::new(service::ControllerService::new(manager, admin.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            tokio::select! {
                () = shutdown => {}
                () = admin.stop.notified() => {}
            }
            let _ = stopping_tx.send(());
        });
    // `rjob wait` and `receive --follow` streams would hold a graceful shutdown open: give
    // them a moment, then go. Remote runs go on and are picked up by the next daemon.
    tokio::select! {
        served = serving => served.context("serving")?,
        () = async {
            let _ = stopping.await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        } => {}
    }
    let _ = std::fs::remove_file(&socket);
    pool.close_all();
    local.stop(Duration::from_secs(6)).await;
    Ok(())
}
