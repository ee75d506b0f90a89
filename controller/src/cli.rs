//! Command-line structures (clap). Parsing only: the commands live in their own modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod daemon;
mod fleet;
mod rerun;
mod session;
pub use daemon::{DaemonCommand, DaemonStatusArgs};
pub use fleet::{CompletionsArgs, ConfigCommand, ConfigShowArgs, HostsArgs};
pub use rerun::RerunArgs;
pub use session::{SessionCommand, SessionListArgs, SessionNewArgs};

/// rjob: run script blocks on many Linux machines at once, as jobs.
///
/// Exit status: 0 when every host ran and exited 0; 1 when any host failed (its script
/// exited non-zero, it could not be reached, or it timed out); 2 for usage and configuration
/// errors; 3 when `rjob wait` timed out; 4 when `rjob wait` ended on a Suspended or
/// Disconnected job; 130 when Ctrl-C stopped `rjob invoke`.
#[derive(Debug, Parser)]
#[command(name = "rjob", version, propagate_version = true)]
pub struct Cli {
    /// Directory with the controller's identity: ca.crt, client.crt, client.key
    /// [env: RJOB_IDENTITY; default: $XDG_CONFIG_HOME/rjob/pki or ~/.config/rjob/pki]
    #[arg(long, global = true, value_name = "DIR")]
    pub identity: Option<PathBuf>,

    /// The daemon's state directory (job store, sockets, log)
    /// [env: RJOB_STATE_DIR; default: $XDG_STATE_HOME/rjob or ~/.local/state/rjob]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// The controller's config file (port, throttle_limit, connect_timeout, identity,
    /// inventory, output, color, [hosts."pattern"]); precedence: file < RJOB_* environment <
    /// flags [env: RJOB_CONFIG; default: $XDG_CONFIG_HOME/rjob/config.toml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Inventory of host groups for -H @group: rjob's TOML, an Ansible INI inventory or a
    /// ClusterShell groups YAML file [default: inventory or inventory.toml in
    /// $XDG_CONFIG_HOME/rjob]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "RJOB_INVENTORY",
        hide_env_values = true
    )]
    pub inventory: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a script block on many hosts and show their output live (Invoke-Command);
    /// with --as-job, as a background job kept by the daemon (Invoke-Command -AsJob)
    #[command(after_help = crate::status::INVOKE_HELP)]
    Invoke(InvokeArgs),
    /// Run a script block as a background job on this machine (Start-Job)
    Start(StartArgs),
    /// List jobs (Get-Job)
    Jobs(JobsArgs),
    /// Wait until jobs have finished (Wait-Job)
    #[command(after_help = crate::status::WAIT_HELP)]
    Wait(WaitArgs),
    /// Show a job's output: what came since the last receive (Receive-Job)
    Receive(ReceiveArgs),
    /// A new job with an earlier job's script, arguments, interpreter and settings, on its
    /// failed hosts (--failed, the default), its unreachable ones or all of them
    Rerun(RerunArgs),
    /// The daemon itself: its status, or a graceful stop
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Sessions: agents the daemon keeps connected, for `rjob invoke --session` (New-PSSession)
    #[command(subcommand)]
    Session(SessionCommand),
    /// A full-screen live view of one job: a row per host with its state, duration, exit code
    /// and last output line; / filters hosts, f shows only failed ones, Enter follows one
    /// host's output, q quits. Never consumes output (as receive --keep)
    Watch(WatchArgs),
    /// Stop jobs: running children are killed, queued ones never start (Stop-Job)
    Stop(JobRefs),
    /// Suspend jobs: SIGSTOP to every run's process group; queued children wait (Suspend-Job)
    Suspend(JobRefs),
    /// Resume suspended jobs: SIGCONT (Resume-Job)
    Resume(JobRefs),
    /// Remove jobs and their stored output (Remove-Job)
    Remove(RemoveArgs),
    /// Run the daemon that keeps background jobs, in the foreground. Job commands start one
    /// in the background when none is running.
    Serve(ServeArgs),
    /// Make the certificates for mutual TLS
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Print the hosts a host expression selects, one a line, and exit (nodeset -e,
    /// ansible --list-hosts)
    Hosts(HostsArgs),
    /// The controller's settings
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: `source <(rjob completions bash)`
    Completions(CompletionsArgs),
    /// Write man pages (rjob.1, rjob-invoke.1, ...) into DIR
    Man {
        /// Directory to write the pages to (created if missing)
        dir: PathBuf,
    },
    /// Print the JSON Schema of the --output json records (all of them, or one:
    /// output, result, state, group, host, job, wait, started, certificate, session)
    Schema {
        /// One record's schema alone
        record: Option<String>,
    },
    /// Job names, one a line, for completion scripts
    #[command(name = "__complete-jobs", hide = true)]
    CompleteJobs,
    /// Inventory groups, one a line, for completion scripts
    #[command(name = "__complete-groups", hide = true)]
    CompleteGroups,
}

pub use crate::choices::OutputFormat;

/// What to run: shared by `invoke` and `start`.
#[derive(Debug, Args)]
pub struct ScriptArgs {
    /// The script block to run
    #[arg(long, short = 's', value_name = "TEXT", conflicts_with = "file")]
    pub script: Option<String>,
    /// A local script file whose content is run (remote hosts need no copy)
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Interpreter for the script, from those the agents allow
    #[arg(long, value_name = "NAME", default_value = "sh", value_parser = clap::builder::PossibleValuesParser::new(crate::choices::KNOWN_INTERPRETERS))]
    pub shell: String,
    /// Kill the script (its whole process tree) when it runs longer than this
    /// [default: the agent's default]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Environment variable for the script, NAME=VALUE; may be repeated
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory [default: the run user's home; for `rjob start`, the current
    /// directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Feed this local file to the script's standard input
    #[arg(long, value_name = "FILE")]
    pub stdin_file: Option<PathBuf>,
    /// Run as this user (the agents' policy decides who may) [default: the policy's default]
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Ask for the user's password (no echo), once for every host
    #[arg(long, requires = "user", conflicts_with_all = ["password_file", "password_stdin"])]
    pub ask_password: bool,
    /// Read the user's password from this file (its first line)
    #[arg(
        long,
        value_name = "FILE",
        requires = "user",
        conflicts_with = "password_stdin"
    )]
    pub password_file: Option<PathBuf>,
    /// Read the user's password from standard input (its first line)
    #[arg(long, requires = "user", conflicts_with = "stdin_file")]
    pub password_stdin: bool,
    /// Arguments for the script: $1, $2, ... (after `--`)
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Hosts: comma-separated, with ranges such as web[01-20] or 10.0.0.[1-9], an optional
    /// :port (default 7443), and @group from the inventory (--inventory). May be repeated.
    #[arg(short = 'H', long = "hosts", value_name = "HOSTS")]
    pub hosts: Vec<String>,
    /// File with one host (or range) per line; `#` starts a comment
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// Leave out these hosts or groups (-x @canary,web03); may be repeated
    #[arg(short = 'x', long = "exclude", value_name = "LIST")]
    pub exclude: Vec<String>,
    /// Run on the hosts of this session, over the connections the daemon keeps open
    /// (`rjob session new`); the output, exit status and Ctrl-C are as without one
    #[arg(long, value_name = "NAME", conflicts_with_all = ["hosts", "hosts_file", "exclude", "list_hosts"])]
    pub session: Option<String>,
    /// Print the hosts that would run, one a line, and exit (nothing is contacted)
    #[arg(long)]
    pub list_hosts: bool,
    #[command(flatten)]
    pub script: ScriptArgs,
    /// Never more than this many hosts in flight at once, or N% of the hosts (at least 1);
    /// 0 means the default, 32 (as in PowerShell)
    #[arg(long, short = 't', value_name = "N|N%", env = "RJOB_THROTTLE_LIMIT", hide_env_values = true, default_value_t = crate::budget::Amount::Count(DEFAULT_THROTTLE_LIMIT), value_parser = parse_throttle_amount)]
    pub throttle_limit: crate::budget::Amount,
    /// Error budget: once more than N hosts (or N% of them) have failed, start no more; those
    /// in flight finish, the rest end "Skipped: error budget of N reached" (exit status 5)
    #[arg(long, value_name = "N|N%", value_parser = crate::budget::parse_max_errors)]
    pub max_errors: Option<crate::budget::Amount>,
    /// Give up on a host that does not answer (TCP and TLS) within this time
    #[arg(long, value_name = "DURATION", env = "RJOB_CONNECT_TIMEOUT", hide_env_values = true, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: std::time::Duration,
    /// Output format
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Run as a background job kept by the daemon; print its Id and Name and return at once
    #[arg(long)]
    pub as_job: bool,
    /// Write output lines as they came, control characters included. Without it, output to
    /// a terminal shows control characters other than tab as visible escapes (\e, \r, \x07)
    #[arg(long, conflicts_with = "as_job")]
    pub raw: bool,
    /// Name of the background job [default: JobN]
    #[arg(long, value_name = "NAME", requires = "as_job")]
    pub job_name: Option<String>,
    /// No progress line on stderr (it is shown only on a terminal, with text output)
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Gather: print identical outputs once, under their folded host set, largest set first,
    /// at the end (clush -b, dshbak -c). With --output json, adds one "group" record per set
    #[arg(long = "gather", short = 'b', conflicts_with_all = ["as_job", "sort"])]
    pub gather: bool,
    /// Print the output at the end, host by host in host order (clush -L)
    #[arg(long, short = 'L', conflicts_with = "as_job")]
    pub sort: bool,
    /// Colour host labels, stderr marks, failures and state counts [NO_COLOR and
    /// CLICOLOR_FORCE are honoured in auto]
    #[arg(long = "color", value_name = "WHEN", value_enum, env = "RJOB_COLOR", hide_env_values = true, default_value_t = crate::colour::ColorChoice::Auto)]
    pub color: crate::colour::ColorChoice,
    /// Also write each host's output to DIR/HOST.out, DIR/HOST.err and DIR/HOST.json (its
    /// result record); existing files are refused unless --force
    #[arg(long, value_name = "DIR", conflicts_with = "as_job")]
    pub output_dir: Option<PathBuf>,
    /// With --output-dir: overwrite files that are already there
    #[arg(long, requires = "output_dir")]
    pub force: bool,
    /// After the summary, list the N hosts that ran longest, with their durations
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slowest: usize,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub script: ScriptArgs,
    /// Name of the job [default: JobN]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Output format of the job's Id and Name
    #[arg(long, short = 'o', value_enum, env = "RJOB_OUTPUT", hide_env_values = true, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

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
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA and the controller's client identity in DIR
    Init {
        /// Directory to create (it becomes an identity directory)
        dir: PathBuf,
        /// Common name of the controller's client certificate
        #[arg(long, default_value = "rjob-controller")]
        client_name: String,
    },
    /// Issue an agent (server) certificate: writes OUT/agent.crt, OUT/agent.key, OUT/ca.crt;
    /// with --hosts, one per host, in OUT/HOST/
    IssueAgent {
        /// The agent's name (certificate common name)
        #[arg(required_unless_present_any = ["hosts", "hosts_file"], conflicts_with_all = ["hosts", "hosts_file"])]
        name: Option<String>,
        /// Host name or IP address the controller dials this agent by; may be repeated
        #[arg(long, value_name = "HOST_OR_IP", required_unless_present_any = ["hosts", "hosts_file"])]
        san: Vec<String>,
        /// One certificate per host: web[01-40],db1 or @group (its name is its CN and SAN)
        #[arg(long, short = 'H', value_name = "HOSTS", conflicts_with = "san")]
        hosts: Vec<String>,
        /// One certificate per host of this file (one host, range or @group a line)
        #[arg(long, value_name = "FILE", conflicts_with = "san")]
        hosts_file: Option<PathBuf>,
        /// Directory with ca.crt and ca.key [default: the identity directory]
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
        /// Output directory [default: CA_DIR/agents/NAME; with --hosts, CA_DIR/agents]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List every certificate of a CA directory (CA, client, agents/*, clients/*) with its
    /// expiry, soonest first
    List {
        /// The directory [default: the identity directory]
        dir: Option<PathBuf>,
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Issue another client identity: writes OUT/client.crt, OUT/client.key, OUT/ca.crt
    IssueClient {
        /// The client's name (certificate common name)
        name: String,
        /// Directory with ca.crt and ca.key [default: the identity directory]
        #[arg(long, value_name = "DIR")]
        ca_dir: Option<PathBuf>,
        /// Output directory [default: CA_DIR/clients/NAME]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The throttle limit without `--throttle-limit`, or with `--throttle-limit 0` (PowerShell's).
pub const DEFAULT_THROTTLE_LIMIT: u32 = 32;

/// Most hosts in flight at once that `--throttle-limit` takes.
const MAX_THROTTLE_LIMIT: u32 = 100_000;

pub fn parse_throttle_limit(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Ok(DEFAULT_THROTTLE_LIMIT),
        Ok(n) if n <= MAX_THROTTLE_LIMIT => Ok(n),
        _ => Err(format!(
            "expected a whole number from 0 to {MAX_THROTTLE_LIMIT} (0 means the default, {DEFAULT_THROTTLE_LIMIT})"
        )),
    }
}

/// `--throttle-limit` of `rjob invoke`: a count as [`parse_throttle_limit`] takes, or N% of
/// the hosts.
pub fn parse_throttle_amount(s: &str) -> Result<crate::budget::Amount, String> {
    match crate::budget::Amount::parse(s, MAX_THROTTLE_LIMIT)? {
        crate::budget::Amount::Count(n) => {
            parse_throttle_limit(&n.to_string()).map(crate::budget::Amount::Count)
        }
        percent => Ok(percent),
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: write a duration like 500ms, 30s, 10m or 2h"))
}

/// A job store: a PostgreSQL URL, or a SQLite file (no other scheme).
pub fn parse_store(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty: give a postgres:// URL or a SQLite file".to_string());
    }
    if crate::store::postgres::is_postgres_url(s) || !s.contains("://") {
        return Ok(s.to_string());
    }
    Err("not a job store: give a postgres:// URL (postgres://user@host/db, postgres:///db?host=/socket/dir) or a SQLite file".to_string())
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE".to_string()),
    }
}
