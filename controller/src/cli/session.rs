//! `rjob session`'s command line (New-PSSession, Get-PSSession, Remove-PSSession).

use clap::{Args, Subcommand};

use crate::choices::OutputFormat;

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Open a session: the daemon dials these agents once and keeps the connections open
    /// (reconnecting when one ends); `rjob invoke --session NAME` then runs over them without
    /// a handshake. Sessions belong to the daemon that made them, in its memory
    New(SessionNewArgs),
    /// List the daemon's sessions: hosts, connected and disconnected counts, age
    List(SessionListArgs),
    /// Close a session's connections and forget it
    Remove {
        /// The session's name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct SessionNewArgs {
    /// The session's name (letters, digits, '.', '_', '-')
    pub name: String,
    /// Hosts: as `rjob invoke -H` takes them (ranges, :port, @group); may be repeated
    #[arg(
        short = 'H',
        long = "hosts",
        value_name = "HOSTS",
        required_unless_present = "hosts_file"
    )]
    pub hosts: Vec<String>,
    /// File with one host (or range) per line; `#` starts a comment
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<std::path::PathBuf>,
    /// Leave out these hosts or groups; may be repeated
    #[arg(short = 'x', long = "exclude", value_name = "LIST")]
    pub exclude: Vec<String>,
    /// Never more than this many dials at once (the first ones and the reconnects); 0 means
    /// the default, 32
    #[arg(long, short = 't', value_name = "N", default_value_t = crate::cli::DEFAULT_THROTTLE_LIMIT, value_parser = crate::cli::parse_throttle_limit)]
    pub throttle_limit: u32,
    /// Give up on a host that does not answer (TCP and TLS) within this time
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub connect_timeout: std::time::Duration,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct SessionListArgs {
    /// Only these sessions [default: all]
    pub names: Vec<String>,
    /// Show each host with its state (and why it is disconnected)
    #[arg(long)]
    pub hosts: bool,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
