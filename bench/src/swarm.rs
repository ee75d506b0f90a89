//! `rjob-bench swarm`: thousands of agents in one process, dialled out (issue 17).
//!
//! - `rjob-bench swarm --agents N --connect ADDR`: only the swarm ([`crate::swarm_agents`]),
//!   dialled out to a daemon someone else started (`rjob serve --agent-listen ADDR`, with
//!   the identity in `--certs DIR/pki`), held until stdin closes or Ctrl-C;
//! - `rjob-bench swarm --agents N` (no `--connect`): the measurement
//!   ([`crate::swarm_measure`]): the bench starts the daemon, then the swarm in a process of
//!   its own, and times the connects, the daemon's memory per agent and `invoke --as-job` of
//!   `true` to every agent, then `wait`; `bench/results/swarm.{md,json}`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

/// The first line of every swarm report: what is simulated, and what is not.
pub const STAND_IN_NOTE: &str = "SIMULATED SWARM: every agent is the real agent service (its own certificate, real mutual TLS and HTTP/2 on its own dialled-out connection), but all of them live in one process and the run's process spawn is replaced by a stand-in that exits 0 at once: no script runs.";

/// rjob-bench swarm: N agents in one process, dialled out to a daemon.
#[derive(Debug, Parser, Serialize)]
#[command(name = "rjob-bench swarm")]
pub struct SwarmOpts {
    /// How many agents
    #[arg(long, default_value_t = 1000)]
    pub agents: usize,
    /// Only run the swarm, dialled out to this daemon (`rjob serve --agent-listen ADDR`);
    /// without it the bench starts the daemon and measures
    #[arg(long, value_name = "ADDR")]
    pub connect: Option<String>,
    /// The first agent's number (`swarm00001` is 1): with --connect, agents FIRST..FIRST+N-1
    #[arg(long, default_value_t = 1)]
    pub first: usize,
    /// Certificates, kept across runs: DIR/pki (the controller's identity, CA) and
    /// DIR/agents/NAME
    #[arg(long, value_name = "DIR", default_value = "/var/tmp/rjob-bench-swarm")]
    pub certs: PathBuf,
    /// Runs (a fresh daemon and swarm each); medians are reported
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// `invoke --as-job` + `wait` of `true` to every agent, per run
    #[arg(long, default_value_t = 3)]
    pub invokes: usize,
    /// Daemons sharing one PostgreSQL store (a throwaway cluster), the swarm split across
    /// them; 1: one daemon on its own SQLite store
    #[arg(long, default_value_t = 1)]
    pub daemons: usize,
    /// Where the daemons listen for agents: 127.0.9.(RUN+1):PORT+DAEMON
    #[arg(long, default_value_t = 19443)]
    pub port: u16,
    /// Existing rjob binaries (default: build them next to this one)
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Where swarm.md and swarm.json go [default: bench/results]
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Wait for a line on stdin before dialling (used by the measurement)
    #[arg(long, hide = true)]
    pub wait_for_go: bool,
}

pub fn main(args: &[String]) -> ExitCode {
    let opts = SwarmOpts::parse_from(args);
    let (before, after) = crate::procs::raise_nofile_to(4 * opts.agents as u64 + 4096);
    let result = match &opts.connect {
        Some(addr) => {
            eprintln!("rjob-bench swarm: {STAND_IN_NOTE}");
            eprintln!("==> RLIMIT_NOFILE {before} -> {after}");
            crate::swarm_certs::ensure(&opts.certs, opts.first + opts.agents - 1).and_then(|_| {
                crate::swarm_agents::main(crate::swarm_agents::SwarmArgs {
                    agents: opts.agents,
                    first: opts.first,
                    connect: addr.clone(),
                    certs: opts.certs.clone(),
                    wait_for_go: opts.wait_for_go,
                })
            })
        }
        None => crate::procs::install_signal_thread().and_then(|()| crate::swarm_measure::run(&opts)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rjob-bench swarm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
