//! `rjob rerun`'s command line.

use std::path::PathBuf;

use clap::Args;

use crate::choices::OutputFormat;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["failed", "unreachable", "all"])))]
pub struct RerunArgs {
    /// The earlier job, by Id, Name or InstanceId
    pub job: String,
    /// Rerun on the hosts whose run failed (exited non-zero, was killed, timed out, refused),
    /// not on unreachable ones [the default]
    #[arg(long)]
    pub failed: bool,
    /// Rerun on the hosts that could not be reached (connect, TLS, connect timeout)
    #[arg(long)]
    pub unreachable: bool,
    /// Rerun on every host of the job
    #[arg(long)]
    pub all: bool,
    /// Name of the new job [default: JobN]
    #[arg(long, value_name = "NAME")]
    pub job_name: Option<String>,
    /// Ask for the run-as user's password again (no echo): it is never stored with a job
    #[arg(long, conflicts_with_all = ["password_file", "password_stdin"])]
    pub ask_password: bool,
    /// Read the run-as user's password from the first line of FILE
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Read the run-as user's password from the first line of standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Output format of the new job's Id and Name
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}
