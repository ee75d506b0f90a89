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
            fleet.add_agent(ip, &tweak)?;
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

    fn add_agent(&mut self, ip: Ipv4Addr, tweak: &impl Fn(&mut Command)) -> Result<()> {
        let dir = self.tmp.path().join(format!("agent-{ip}"));
        self.pki
            .issue_agent(&format!("agent-{ip}"), &ip.to_string(), &dir)?;
        let addr = SocketAddr::from((ip, free_port(ip)));
        let spool = dir.join("spool");
        let log = dir.join("agent.log");
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
            .arg(&spool)
            .arg("--kill-grace")
            .arg("1s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
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
