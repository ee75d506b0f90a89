//! The swarm itself: N agents in this one process, each the real agent library's service
//! (`AgentService`, its table of runs, policy and checks) behind its own certificate, served
//! over real mutual TLS and HTTP/2 (`serve_dialled`) on its own connection, dialled out with
//! the agent's own dialler (`rjob_agent::dialout`, backoff and all). Only the run's process
//! is a stand-in ([`ExitsZero`]): every run ends at once with status 0.
//!
//! Every agent is built first; the dials start together afterwards (at once, or when the
//! parent writes a line to stdin with `--wait-for-go`), so that the time to connect is not
//! the time to build. The process holds the agents until its stdin closes.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use rjob_agent::config::AgentConfig;
use rjob_agent::dialout::{Dialled, Dialler};
use rjob_agent::run::Outcome;
use rjob_agent::runner::RunSpec;
use rjob_agent::runs::{Runs, RunsOptions, StandIn};
use rjob_agent::service::AgentService;
use tokio::sync::{mpsc, watch};

use crate::swarm_certs::{agent_dir, agent_name};

/// The stand-in for every run's process: it "exits 0" at once.
pub struct ExitsZero;

impl StandIn for ExitsZero {
    fn outcome(&self, _: &RunSpec) -> Outcome {
        Outcome::Exited { code: 0 }
    }
}

/// What the swarm process is told.
pub struct SwarmArgs {
    pub agents: usize,
    /// The first agent's number.
    pub first: usize,
    pub connect: String,
    pub certs: PathBuf,
    pub wait_for_go: bool,
}

/// One agent, built, not yet dialling.
struct Built {
    dialler: Dialler,
}

/// Runs the swarm until stdin closes. Prints `ready N BUILD_SECONDS` once every agent is
/// built, `dialling` when the dials start.
pub fn main(args: SwarmArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(swarm(args))
}

async fn swarm(args: SwarmArgs) -> Result<()> {
    let spool = tempfile::Builder::new().prefix("rjob-swarm-spool-").tempdir()?;
    let policy = crate::swarm_certs::write_policy(spool.path())?;
    let (stop_tx, stopping) = watch::channel(false);
    let started = Instant::now();
    let stand_in: Arc<dyn StandIn> = Arc::new(ExitsZero);
    let mut built = Vec::with_capacity(args.agents);
    let mut serving = Vec::with_capacity(args.agents);
    for i in args.first..args.first + args.agents {
        let name = agent_name(i);
        let (agent, served) = build(
            &args.certs,
            &name,
            spool.path(),
            &policy,
            &stand_in,
            stopping.clone(),
        )
        .with_context(|| format!("setting up agent {name}"))?;
        built.push(agent);
        serving.push(served);
    }
    say(&format!(
        "ready {} {:.2}",
        args.agents,
        started.elapsed().as_secs_f64()
    ));
    let (go_tx, go) = tokio::sync::oneshot::channel::<()>();
    let wait_for_go = args.wait_for_go;
    let stdin = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::stdin().lock().lines();
        if wait_for_go {
            let _ = lines.next();
        }
        let _ = go_tx.send(());
        // Then hold until stdin closes.
        for line in lines {
            if line.is_err() {
                break;
            }
        }
    });
    let _ = go.await;
    let target = [args.connect.clone()];
    let diallers: Vec<_> = built.iter().flat_map(|b| b.dialler.spawn(&target)).collect();
    say("dialling");
    let _ = stdin.await;
    for d in &diallers {
        d.abort();
    }
    let _ = stop_tx.send(true);
    drop(built);
    for s in serving {
        s.abort();
    }
    Ok(())
}

/// A line to the parent; a parent that stopped reading is no reason to stop.
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Builds agent `name`: its config, table of runs (with the stand-in), service, TLS
/// acceptor, and the task serving its dialled connections.
fn build(
    certs: &Path,
    name: &str,
    spool: &Path,
    policy: &Path,
    stand_in: &Arc<dyn StandIn>,
    stopping: watch::Receiver<bool>,
) -> Result<(Built, tokio::task::JoinHandle<()>)> {
    let dir = agent_dir(certs, name);
    let mut config = AgentConfig::local(spool.join(name));
    config.cert = dir.join(rjob::pki::AGENT_CERT);
    config.key = dir.join(rjob::pki::AGENT_KEY);
    config.client_ca = dir.join(rjob::pki::CA_CERT);
    config.policy = Some(policy.to_path_buf());
    config.containment = rjob_agent::contain::Mode::Subreaper;
    config.max_concurrent_runs = 8;
    config.name = Some(name.to_string());
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = rjob_proto::tls::server_config(
        &read(&config.cert)?,
        &read(&config.key)?,
        &read(&config.client_ca)?,
    )
    .context("setting up TLS")?;
    let max_message =
        usize::try_from(config.max_script_bytes + config.max_stdin_bytes + (1 << 20)).unwrap_or(usize::MAX);
    let runs = Runs::open_with(&config.spool_dir, RunsOptions::of(&config))?.with_stand_in(stand_in.clone());
    let service = Arc::new(AgentService::new(config, Arc::new(runs))?);
    let (tx, dialled) = mpsc::channel::<Dialled>(1);
    let dialler = Dialler {
        name: name.to_string(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        connections: tx,
    };
    let served = tokio::spawn(rjob_agent::server::serve_dialled(
        service,
        max_message,
        dialled,
        stopping,
    ));
    Ok((Built { dialler }, served))
}
