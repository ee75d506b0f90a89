//! Test harness: real `rjob-agent` processes on distinct loopback addresses, with
//! certificates made by the real `rjob pki`, driven by the real `rjob` binary.
//!
//! The binaries come from the workspace's target directory; once per test process the
//! harness checks that they are newer than their sources and builds them when they are not
//! ([`fresh`]).
//!
//! - [`fleet`]: the CA and the agents;
//! - [`daemon`]: `rjob serve` and the job commands that talk to it;
//! - [`disk`]: full disks on demand (a tmpfs, filled);
//! - [`raw`]: a raw gRPC client of an agent, for hostile requests;
//! - [`users`]: real users and PAM services (root);
//! - [`Proxy`]: a TCP proxy a test can cut.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

mod daemon;
pub mod disk;
mod fleet;
pub mod fresh;
pub mod pg;
mod proxy;
pub mod raw;
pub mod users;
pub use daemon::Daemon;
pub use fleet::{Agent, Fleet, Pki};
pub use fresh::bin_dir;
pub use proxy::Proxy;
/// Polls a condition until it holds or a timeout passes (shared with the benchmark).
pub use rjob_testkit::wait_for;

/// One global timeout for every condition the tests wait for.
pub const WAIT: Duration = Duration::from_secs(30);

/// Path of a workspace binary (`rjob`, `rjob-agent`), fresh ([`fresh`]).
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing after building it", path.display());
    path
}

/// A free TCP port on `ip` (bound and released; the agent binds it right after).
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The agents' run-as policy in tests: the test controller may run as the user the tests run
/// as (root in CI, named explicitly as a policy must for root). Tests of credentials write
/// their own policies.
pub fn test_policy() -> String {
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    format!("[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"{me}\"]\ndefault = \"{me}\"\n")
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Output of an `rjob` run, for assertions.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn of(output: Output) -> Ran {
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Lines of `host` on stdout (text format), without the label.
    pub fn lines_of(&self, host: &str) -> Vec<String> {
        let prefix = format!("{host}: ");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a command to its end and captures what it printed.
pub fn ran(cmd: &mut Command) -> Ran {
    match cmd.output() {
        Ok(out) => Ran::of(out),
        Err(e) => Ran {
            code: -1,
            stdout: String::new(),
            stderr: format!("cannot run {cmd:?}: {e}"),
        },
    }
}

/// Whether a process exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
