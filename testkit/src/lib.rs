//! What the integration tests (`rjob-tests`) and the benchmark (`rjob-bench`) share: the
//! command line of an `rjob-agent` started for them, and waiting for a condition.
//!
//! A crate of its own, with nothing but std, so that the benchmark (a release build) does not
//! compile the test harness's gRPC, TLS and certificate dependencies for two functions.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How often [`wait_for`] tries its condition.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds or `timeout` passes; true when it held.
pub fn wait_for(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for_every(POLL, timeout, cond)
}

/// [`wait_for`], trying `cond` every `every` (for conditions that are costly to check).
pub fn wait_for_every(every: Duration, timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Whether something accepts TCP connections on `addr` (one try, at most 200 ms).
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until something accepts TCP connections on `addr`; true when it did within `timeout`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    wait_for(timeout, || listening(addr))
}

/// The files and address of one agent. The certificate directory holds what
/// `rjob pki issue-agent --out DIR` writes: `agent.crt`, `agent.key` and `ca.crt`.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    pub listen: SocketAddr,
    pub cert_dir: PathBuf,
    pub spool: PathBuf,
    pub policy: PathBuf,
    /// `--config`: a config file of the agent's own, so that `/etc/rjob/agent.toml` never
    /// leaks in; `None` leaves the flag out.
    pub config: Option<PathBuf>,
}

impl AgentSetup {
    /// `rjob-agent` (from `bin_dir`) with this setup's flags. The caller adds what is its own
    /// (more flags, environment, standard streams) and spawns it.
    pub fn command(&self, bin_dir: &Path) -> Command {
        let mut cmd = self.without_listen(bin_dir);
        cmd.arg("--listen").arg(self.listen.to_string());
        cmd
    }

    /// `rjob-agent` that only dials out to `connect` (`--connect`, no `--listen`: it opens no
    /// port of its own).
    pub fn dial_out_command(&self, bin_dir: &Path, connect: &str) -> Command {
        let mut cmd = self.without_listen(bin_dir);
        cmd.arg("--connect").arg(connect);
        cmd
    }

    fn without_listen(&self, bin_dir: &Path) -> Command {
        let mut cmd = Command::new(bin_dir.join("rjob-agent"));
        cmd.arg("--cert")
            .arg(self.cert_dir.join("agent.crt"))
            .arg("--key")
            .arg(self.cert_dir.join("agent.key"))
            .arg("--client-ca")
            .arg(self.cert_dir.join("ca.crt"))
            .arg("--spool-dir")
            .arg(&self.spool)
            .arg("--policy")
            .arg(&self.policy);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_the_setups_files() {
        let setup = AgentSetup {
            listen: SocketAddr::from(([127, 0, 0, 2], 4000)),
            cert_dir: PathBuf::from("/d"),
            spool: PathBuf::from("/d/spool"),
            policy: PathBuf::from("/p.toml"),
            config: Some(PathBuf::from("/c.toml")),
        };
        let cmd = setup.command(Path::new("/bin"));
        assert_eq!(cmd.get_program(), "/bin/rjob-agent");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "--cert",
                "/d/agent.crt",
                "--key",
                "/d/agent.key",
                "--client-ca",
                "/d/ca.crt",
                "--spool-dir",
                "/d/spool",
                "--policy",
                "/p.toml",
                "--config",
                "/c.toml",
                "--listen",
                "127.0.0.2:4000"
            ]
        );
    }

    #[test]
    fn wait_for_says_whether_the_condition_held() {
        let mut tries = 0;
        assert!(wait_for(Duration::from_secs(5), || {
            tries += 1;
            tries == 3
        }));
        assert!(!wait_for(Duration::ZERO, || false));
    }
}
