//! rjob, the controller: fans script blocks out to rjob agents and gathers their output.
//!
//! - [`cli`]: the command line (parsing only);
//! - [`choices`]: the values the command line chooses between (output format, interpreters);
//! - [`request`]: the run request (hosts, script, options) built from the command line;
//! - [`hosts`]: host lists and ranges;
//! - [`inventory`]: host groups (rjob TOML, Ansible INI, ClusterShell YAML) and `-H @group`;
//! - [`config`]: the controller's config file, merged under `RJOB_*` and flags;
//! - [`pki`]: certificates for mutual TLS;
//! - [`connect`]: the controller's TLS identity and dialling agents;
//! - [`backoff`]: retry delays (capped, jittered);
//! - [`child`]: one host's run (a child job), followed to its end;
//! - [`invoke`]: `rjob invoke`, the fan-out with a throttle limit;
//! - [`output`]: host-labelled lines, JSON records and the summary;
//! - [`progress`]: the progress line on a terminal's stderr;
//! - [`escape`]: control characters made visible on terminals;
//! - [`limits`]: size-checked reads of the files the command line names;
//! - [`checks`]: what the command line asks, checked before anything is read or contacted;
//! - [`state`]: job states and the parent-state rules;
//! - [`clock`], [`signals`], [`memory`]: the process's wall clock, stop signals and allocator;
//! - [`throttle`]: a child's throttle slot, given back while it waits at a busy agent;
//! - [`fanout`]: the throttled fan-out (invoke and the daemon), with its admission policy;
//! - [`budget`]: the error budget (`--max-errors`), a fan-out policy, and N|N% amounts;
//! - [`status`]: the exit statuses programs branch on;
//! - [`timestamp`]: timestamps as people read them;
//! - [`store`]: the job store, behind a trait, and its SQLite backend;
//! - [`daemon`]: `rjob serve` and the job manager;
//! - [`cmd`]: the job commands on the CLI side (start, jobs, wait, receive, stop, ...).

pub mod backoff;
pub mod budget;
pub mod checks;
pub mod child;
pub mod choices;
pub mod cli;
pub mod clock;
pub mod cmd;
pub mod colour;
pub mod config;
pub mod connect;
mod connect_alert;
pub mod daemon;
pub mod escape;
pub mod fanout;
pub mod flow;
pub mod gather;
pub mod hosts;
pub mod inventory;
pub mod invoke;
pub mod limits;
pub mod memory;
pub mod outcome;
pub mod outdir;
pub mod output;
pub mod password;
pub mod pki;
pub mod pool;
pub mod present;
pub mod progress;
pub mod receive_view;
pub mod records;
pub mod request;
pub mod signals;
pub mod spool;
pub mod state;
pub mod status;
pub mod store;
pub mod throttle;
pub mod timestamp;

/// Exit status when any host failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status for usage errors (as clap uses).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of `rjob wait` when its timeout passed first.
pub const EXIT_TIMEOUT: u8 = 3;
/// Exit status of `rjob wait` (without `--force`) when it ended on a Suspended or
/// Disconnected job.
pub const EXIT_PAUSED: u8 = 4;

/// A mistake in what the user asked for: reported in one line, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
