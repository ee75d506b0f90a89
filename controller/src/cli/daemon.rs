//! `rjob daemon`'s command line.

use clap::{Args, Subcommand};

use crate::choices::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// The daemon's pid, uptime, store path and size, jobs by state, whether it has a
    /// controller identity, and the store's health
    Status(DaemonStatusArgs),
    /// Stop the daemon gracefully: children running on agents go on, and the next daemon
    /// (`rjob serve`) picks them up
    Stop,
}

#[derive(Debug, Args)]
pub struct DaemonStatusArgs {
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
