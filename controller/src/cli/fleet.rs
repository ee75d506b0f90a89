//! The fleet commands' arguments: `rjob hosts`, `rjob config`, `rjob completions`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{parse_duration, parse_throttle_limit, OutputFormat, DEFAULT_THROTTLE_LIMIT};

/// Selecting hosts: `-H` lists (hosts, ranges, @groups), `--hosts-file`, `-x`.
#[derive(Debug, Args)]
pub struct HostsArgs {
    /// Hosts and groups: web[01-20],db1:8443,@web; may be repeated
    #[arg(value_name = "HOSTS", required_unless_present = "hosts_file")]
    pub hosts: Vec<String>,
    /// File with one host (or range, or @group) per line; `#` starts a comment
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// Leave out these hosts or groups (-x @canary,web03)
    #[arg(short = 'x', long = "exclude", value_name = "LIST")]
    pub exclude: Vec<String>,
    /// Print the folded form (web[01-20],db[1-2]) instead of one host a line
    #[arg(long)]
    pub fold: bool,
    /// Also show each host's port, run-as user and variables
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print each effective setting and where it came from (default, file, env, flag)
    Show(ConfigShowArgs),
}

/// The settings `rjob invoke` takes, to show how flags would change them.
#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    #[arg(long, short = 't', value_name = "N", env = "RJOB_THROTTLE_LIMIT", hide_env_values = true, default_value_t = DEFAULT_THROTTLE_LIMIT, value_parser = parse_throttle_limit)]
    pub throttle_limit: u32,
    #[arg(long, value_name = "DURATION", env = "RJOB_CONNECT_TIMEOUT", hide_env_values = true, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    #[arg(long = "color", value_name = "WHEN", value_enum, env = "RJOB_COLOR", hide_env_values = true, default_value_t = crate::colour::ColorChoice::Auto)]
    pub color: crate::colour::ColorChoice,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
