//! `rjob serve`'s command line: the daemon, its job store, retention and dialled-in agents.

use clap::Args;

use super::parse::{parse_duration, parse_store};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How long a child may stay Disconnected (agent unreachable) before it fails
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub reconnect_window: std::time::Duration,
    /// The job store: a PostgreSQL URL (postgres://user@host/db, postgres:///db?host=/socket/dir)
    /// or a SQLite file [env: RJOB_STORE; config file: store; default: jobs.db in the state
    /// directory]
    #[arg(long, value_name = "URL", env = "RJOB_STORE", hide_env = true, value_parser = parse_store)]
    pub store: Option<String>,
    /// Remove finished jobs that ended longer ago than this (30d, 12h), checked at start and
    /// every minute; never one still going or with output not yet received [config file:
    /// retention]
    #[arg(long, value_name = "DURATION", value_parser = crate::store::retention::parse_age)]
    pub retention: Option<std::time::Duration>,
    /// Keep the job store under this size (10GiB, 500MB): the finished jobs that ended first
    /// go first, after those past --retention [config file: max_store_size]
    #[arg(long, value_name = "SIZE", value_parser = crate::store::retention::parse_size)]
    pub max_store_size: Option<u64>,
    /// Retention removes jobs with output not yet received too, and, when the store is still
    /// over --max-store-size after every finished job is gone, jobs still going (stopped
    /// first, oldest first) [config file: force_retention]
    #[arg(long)]
    pub force_retention: bool,
    /// The time between retention sweeps (for tests)
    #[arg(long, hide = true, value_name = "DURATION", env = "RJOB_RETENTION_INTERVAL", value_parser = parse_duration)]
    pub retention_interval: Option<std::time::Duration>,
    /// Accept agents that dial out (rjob-agent --connect) on this address; they are then
    /// addressed by their certificate name (-H web01) in every job
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub agent_listen: Option<std::net::SocketAddr>,
}

/// `--agent-listen`: an IP address and a port.
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| "not an address to listen on: write IP:PORT, like 0.0.0.0:7444 or [::]:7444".to_string())
}
