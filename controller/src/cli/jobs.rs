//! The command lines of the job commands: `rjob jobs`, `wait`, `watch`, `receive`, `stop`,
//! `suspend`, `resume` and `remove` (Get-Job, Wait-Job, Receive-Job, Stop-Job, ...).

use std::path::PathBuf;

use clap::Args;

use super::parse::parse_duration;
use crate::choices::OutputFormat;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Jobs by Id, Name (glob patterns such as 'patch-*' match names) or InstanceId
    /// [default: all]
    pub jobs: Vec<String>,
    /// Only jobs with this name; a glob pattern ('patch-*', 'web?', '[a-c]*') matches names
    #[arg(long)]
    pub name: Option<String>,
    /// Only jobs whose HasMoreData is this
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub has_more_data: Option<bool>,
    /// Only jobs with children in this state, and of them only those children (for example
    /// every Failed host of a job); shows the children
    #[arg(long, value_name = "STATE")]
    pub child_state: Option<String>,
    /// Only the N newest jobs (those created last)
    #[arg(long, value_name = "N")]
    pub newest: Option<usize>,
    /// Only jobs in this state (NotStarted, Running, Completed, Failed, Stopped, Suspended, ...)
    #[arg(long)]
    pub state: Option<String>,
    /// Only the job with this Id
    #[arg(long)]
    pub id: Option<u32>,
    /// Show each job's child jobs too
    #[arg(long)]
    pub children: bool,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Jobs by Id, Name (glob patterns such as 'patch-*' match names) or InstanceId
    #[arg(required_unless_present = "state")]
    pub jobs: Vec<String>,
    /// Every job in this state (with JOBs: those of them in this state)
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Return when any of the jobs has finished (default: all)
    #[arg(long)]
    pub any: bool,
    /// Wait through Suspended and Disconnected for a final state (Completed, Failed,
    /// Stopped). Without it, a Suspended or Disconnected job also ends the wait (exit 4)
    #[arg(long)]
    pub force: bool,
    /// Give up after this long (exit status 3), leaving the jobs running
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No progress line on stderr (it is shown only on a terminal, with text output)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job, by Id, Name or InstanceId
    pub job: String,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// The jobs, by Id, Name or InstanceId. Several are received one after the other, each
    /// line labelled JOB/HOST (JSON records get a "job" field)
    #[arg(required = true, value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Keep the output: the next receive returns it again
    #[arg(long)]
    pub keep: bool,
    /// Only this host's output
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Go on with live output until the job ends (--wait: Receive-Job -Wait). With
    /// --output json, also a {"type":"state",…} record each time a host's state changes
    #[arg(long, visible_alias = "wait")]
    pub follow: bool,
    /// With --wait: remove the job once it ended and all its output was delivered and
    /// confirmed (Receive-Job -AutoRemoveJob). Otherwise the job is kept, and stderr says so
    #[arg(long, requires = "follow", conflicts_with_all = ["keep", "host", "gather", "output_dir"])]
    pub auto_remove: bool,
    /// Write output lines as they came, control characters included. Without it, output to
    /// a terminal shows control characters other than tab as visible escapes (\e, \r, \x07)
    #[arg(long)]
    pub raw: bool,
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No progress line on stderr with --follow (it is shown only on a terminal, with text
    /// output)
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Gather: print identical outputs once, under their folded host set, largest set first,
    /// at the end (clush -b, dshbak -c). With --output json, adds one "group" record per set
    #[arg(long = "gather", short = 'b', conflicts_with = "host")]
    pub gather: bool,
    /// Colour host labels, stderr marks and failures [NO_COLOR and CLICOLOR_FORCE are
    /// honoured in auto]
    #[arg(long = "color", value_name = "WHEN", value_enum, env = "RJOB_COLOR", hide_env_values = true, default_value_t = crate::colour::ColorChoice::Auto)]
    pub color: crate::colour::ColorChoice,
    /// Also write each host's output to DIR/HOST.out, DIR/HOST.err and DIR/HOST.json (its
    /// result record); existing files are refused unless --force
    #[arg(long, value_name = "DIR", conflicts_with = "host")]
    pub output_dir: Option<PathBuf>,
    /// With --output-dir: overwrite files that are already there
    #[arg(long, requires = "output_dir")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct JobRefs {
    /// Jobs by Id, Name (glob patterns such as 'patch-*' match names) or InstanceId
    #[arg(required_unless_present = "state")]
    pub jobs: Vec<String>,
    /// Every job in this state (with JOBs: those of them in this state)
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Jobs by Id, Name (glob patterns such as 'patch-*' match names) or InstanceId
    #[arg(required_unless_present = "state")]
    pub jobs: Vec<String>,
    /// Every job in this state, e.g. `--state Completed` to clean up (with JOBs: those of
    /// them in this state)
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Stop a job that is still going, then remove it
    #[arg(long)]
    pub force: bool,
}
