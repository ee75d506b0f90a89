//! Test harness: real `rjob-agent` processes on distinct loopback addresses, with
//! certificates made by the real `rjob pki`, driven by the real `rjob` binary.
//!
//! The binaries come from the workspace's target directory: run
//! `cargo build --workspace --bins` before `cargo test` (the README's test command does).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

pub mod pg;
mod proxy;
pub mod raw;
pub use proxy::Proxy;

/// One global timeout for every condition the tests wait for.
pub const WAIT: Duration = Duration::from_secs(30);

/// Path of a workspace binary, next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// Polls `cond` until it holds or `timeout` passes; true when it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// A CA with the controller's identity, made by `rjob pki init`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn init(dir: &Path) -> Result<Pki> {
        run_ok(Command::new(bin("rjob")).arg("pki").arg("init").arg(dir))?;
        Ok(Pki { dir: dir.to_owned() })
    }

    /// Issues an agent certificate for `ip` into `out`.
    pub fn issue_agent(&self, name: &str, san: &str, out: &Path) -> Result<()> {
        run_ok(
            Command::new(bin("rjob"))
                .args(["pki", "issue-agent", name, "--san", san, "--ca-dir"])
                .arg(&self.dir)
                .arg("--out")
                .arg(out),
        )
    }
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().context("running a command")?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A running agent; killed when dropped.
pub struct Agent {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub spool: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ip:port`, as given to `rjob -H`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Resident memory of the agent process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// N agents on 127.0.0.2, 127.0.0.3, ..., each with its own certificate, spool and log,
/// plus the controller's identity.
pub struct Fleet {
    pub tmp: tempfile::TempDir,
    pub pki: Pki,
    pub agents: Vec<Agent>,
}

impl Fleet {
    pub fn start(n: usize) -> Result<Fleet> {
        Fleet::start_with(n, |_| {})
    }

    /// Starts `n` agents; `tweak` may add flags or environment to each agent's command.
    pub fn start_with(n: usize, tweak: impl Fn(&mut Command)) -> Result<Fleet> {
        Fleet::start_policy(n, &test_policy(), tweak)
    }

    /// Starts `n` agents with this run-as policy.
    pub fn start_policy(n: usize, policy: &str, tweak: impl Fn(&mut Command)) -> Result<Fleet> {
        let tmp = tempfile::Builder::new().prefix("rjob-test-").tempdir()?;
        let pki = Pki::init(&tmp.path().join("pki"))?;
        let mut fleet = Fleet {
            tmp,
            pki,
            agents: Vec::new(),
        };
        for i in 0..n {
            let octet = u8::try_from(2 + i).context("at most 250 agents")?;
            let ip = Ipv4Addr::new(127, 0, 0, octet);
            fleet.add_agent(ip, policy, &tweak)?;
        }
        for agent in &fleet.agents {
            if !wait_for(WAIT, || TcpStream::connect(agent.addr).is_ok()) {
                bail!(
                    "agent {} did not start listening: {}",
                    agent.addr,
                    agent.log_text()
                );
            }
        }
        Ok(fleet)
    }

    fn add_agent(&mut self, ip: Ipv4Addr, policy: &str, tweak: &impl Fn(&mut Command)) -> Result<()> {
        let dir = self.tmp.path().join(format!("agent-{ip}"));
        self.pki
            .issue_agent(&format!("agent-{ip}"), &ip.to_string(), &dir)?;
        let addr = SocketAddr::from((ip, free_port(ip)));
        let spool = dir.join("spool");
        let log = dir.join("agent.log");
        std::fs::write(dir.join("policy.toml"), policy)?;
        let mut cmd = agent_command(addr, &dir, &spool, &log)?;
        tweak(&mut cmd);
        let child = cmd.spawn().context("starting rjob-agent")?;
        self.agents.push(Agent {
            addr,
            dir,
            spool,
            log,
            child,
        });
        Ok(())
    }

    /// Kills agent `i` (`kill -9`) and starts it again on the same address and spool.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        let agent = &mut self.agents[i];
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        agent.child = agent_command(agent.addr, &agent.dir, &agent.spool, &agent.log)?
            .spawn()
            .context("restarting rjob-agent")?;
        let addr = agent.addr;
        if !wait_for(WAIT, || TcpStream::connect(addr).is_ok()) {
            bail!("agent {addr} did not come back");
        }
        Ok(())
    }

    /// The agents as a `-H` list.
    pub fn hosts(&self) -> String {
        self.agents.iter().map(Agent::host).collect::<Vec<_>>().join(",")
    }

    /// The `rjob` binary, with this fleet's identity.
    pub fn rjob(&self) -> Command {
        let mut cmd = Command::new(bin("rjob"));
        cmd.env("RJOB_IDENTITY", &self.pki.dir).stdin(Stdio::null());
        cmd
    }

    /// A scratch directory for the test's own files.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.tmp.path().join("scratch");
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}

fn agent_command(addr: SocketAddr, dir: &Path, spool: &Path, log: &Path) -> Result<Command> {
    let mut cmd = Command::new(bin("rjob-agent"));
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--cert")
        .arg(dir.join("agent.crt"))
        .arg("--key")
        .arg(dir.join("agent.key"))
        .arg("--client-ca")
        .arg(dir.join("ca.crt"))
        .arg("--spool-dir")
        .arg(spool)
        .arg("--kill-grace")
        .arg("1s")
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?);
    Ok(cmd)
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

/// A running `rjob serve`; killed when dropped.
pub struct Daemon {
    pub state_dir: PathBuf,
    identity: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon with its own state directory inside the fleet's temp dir.
    pub fn start(fleet: &Fleet) -> Result<Daemon> {
        let mut daemon = Daemon {
            state_dir: fleet.tmp.path().join("state"),
            identity: fleet.pki.dir.clone(),
            child: None,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&mut self) -> Result<()> {
        // The daemon refuses a state directory other users could enter.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.state_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("test-daemon.log"))?;
        // Ready once this daemon says so: a socket that accepts may still be the killed
        // daemon's, held for a moment by a run it was forking.
        let ready = |log: &str| log.matches("rjob daemon ready").count();
        let before = ready(&self.log_text());
        let child = Command::new(bin("rjob"))
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env("RJOB_IDENTITY", &self.identity)
            .env_remove("RJOB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting rjob serve")?;
        self.child = Some(child);
        let socket = self.state_dir.join("rjob.sock");
        if !wait_for(WAIT, || {
            ready(&self.log_text()) > before && std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }) {
            bail!("the daemon did not come up: {}", self.log_text());
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("test-daemon.log")).unwrap_or_default()
    }

    /// `kill -9`, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The `rjob` binary, talking to this daemon (it never starts one of its own).
    pub fn rjob(&self) -> Command {
        let mut cmd = Command::new(bin("rjob"));
        cmd.env("RJOB_IDENTITY", &self.identity)
            .env("RJOB_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null());
        cmd
    }

    /// `rjob invoke -H HOSTS --as-job --job-name NAME --script SCRIPT [EXTRA…]`.
    pub fn invoke_job(&self, hosts: &str, name: &str, script: &str, extra: &[&str]) -> Ran {
        ran(self
            .rjob()
            .args([
                "invoke",
                "-H",
                hosts,
                "--as-job",
                "--job-name",
                name,
                "--script",
                script,
            ])
            .args(extra))
    }

    /// `rjob jobs --output json` for one job.
    pub fn job(&self, job: &str) -> serde_json::Value {
        let out = ran(self.rjob().args(["jobs", job, "--output", "json"]));
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `job` is in `state`; true when it got there.
    pub fn wait_state(&self, job: &str, state: &str) -> bool {
        wait_for(WAIT, || self.job(job)["state"] == state)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Fleet {
    /// Starts `n` agents on 127.0.0.2, 127.0.0.3, … that all listen on one port, so that
    /// `rjob` labels them by address alone (as a real fleet on one port is labelled).
    pub fn start_one_port(n: usize) -> Result<Fleet> {
        let ips: Vec<Ipv4Addr> = (0..n)
            .map(|i| u8::try_from(2 + i).map(|o| Ipv4Addr::new(127, 0, 0, o)))
            .collect::<Result<_, _>>()
            .context("at most 250 agents")?;
        let port = (0..50)
            .map(|_| free_port(ips[0]))
            .find(|&p| p != 0 && ips.iter().all(|&ip| TcpListener::bind((ip, p)).is_ok()))
            .context("no port is free on every agent address")?;
        let tmp = tempfile::Builder::new().prefix("rjob-test-").tempdir()?;
        let pki = Pki::init(&tmp.path().join("pki"))?;
        let mut fleet = Fleet {
            tmp,
            pki,
            agents: Vec::new(),
        };
        let policy = test_policy();
        for ip in ips {
            let dir = fleet.tmp.path().join(format!("agent-{ip}"));
            fleet
                .pki
                .issue_agent(&format!("agent-{ip}"), &ip.to_string(), &dir)?;
            let addr = SocketAddr::from((ip, port));
            let (spool, log) = (dir.join("spool"), dir.join("agent.log"));
            std::fs::write(dir.join("policy.toml"), &policy)?;
            let child = agent_command(addr, &dir, &spool, &log)?
                .spawn()
                .context("starting rjob-agent")?;
            fleet.agents.push(Agent {
                addr,
                dir,
                spool,
                log,
                child,
            });
        }
        for agent in &fleet.agents {
            if !wait_for(WAIT, || TcpStream::connect(agent.addr).is_ok()) {
                bail!(
                    "agent {} did not start listening: {}",
                    agent.addr,
                    agent.log_text()
                );
            }
        }
        Ok(fleet)
    }

    /// The agents' port, when they share one ([`Fleet::start_one_port`]).
    pub fn port(&self) -> u16 {
        self.agents.first().map_or(0, |a| a.addr.port())
    }
}
