//! Command-line structures (clap). Parsing only: the commands live in their own modules.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod daemon;
mod fleet;
mod jobs;
mod parse;
mod rerun;
mod serve;
mod session;
pub use daemon::{DaemonCommand, DaemonStatusArgs};
pub use fleet::{CompletionsArgs, ConfigCommand, ConfigShowArgs, HostsArgs};
pub use jobs::{JobRefs, JobsArgs, ReceiveArgs, RemoveArgs, WaitArgs, WatchArgs};
use parse::parse_env;
pub use parse::{
    parse_duration, parse_store, parse_throttle_amount, parse_throttle_limit, DEFAULT_THROTTLE_LIMIT,
};
pub use rerun::RerunArgs;
pub use serve::ServeArgs;
pub use session::{SessionCommand, SessionListArgs, SessionNewArgs};

/// rjob: run script blocks on many Linux machines at once, as jobs.
///
/// Exit status: 0 when every host ran and exited 0; 1 when a script exited non-zero or was
/// killed; 2 for usage and configuration errors; 3 when `rjob wait` timed out; 4 when a host
/// was unreachable and none failed otherwise (`rjob invoke`), or `rjob wait` ended on a
/// Suspended or Disconnected job; 5 when the error budget stopped the fan-out; 130 after
/// Ctrl-C. `rjob invoke --help` and `rjob wait --help` give the details.
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
    /// Run as this user on every host (the agents' policy decides who may) [default: each
    /// host's user in the inventory or the config's [hosts."pattern"], else the policy's]
    #[arg(
        long,
        short = 'u',
        value_name = "USER",
        env = "RJOB_USER",
        hide_env_values = true
    )]
    pub user: Option<String>,
    /// Ask for the run-as user's password (no echo), once for every host; they must all run
    /// as one user
    #[arg(long, conflicts_with_all = ["password_file", "password_stdin"])]
    pub ask_password: bool,
    /// Read the run-as user's password from this file (its first line)
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    pub password_file: Option<PathBuf>,
    /// Read the run-as user's password from standard input (its first line)
    #[arg(long, conflicts_with = "stdin_file")]
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
