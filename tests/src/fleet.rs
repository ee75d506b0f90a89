//! Real agents for the tests: a CA made by `rjob pki`, and N `rjob-agent` processes on
//! distinct loopback addresses, each with its own certificate, spool, policy and log.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};
use rjob_testkit::{wait_listening, AgentSetup};

use crate::{bin, bin_dir, free_port, proc_status_kib, test_policy, WAIT};

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

    fn command(&self) -> Result<Command> {
        agent_command(self.addr, &self.dir, &self.spool, &self.log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
        let mut fleet = Fleet::empty()?;
        for ip in agent_ips(n)? {
            fleet.add_agent(SocketAddr::from((ip, free_port(ip))), policy, &tweak)?;
        }
        fleet.wait_listening()?;
        Ok(fleet)
    }

    /// Starts `n` agents on 127.0.0.2, 127.0.0.3, … that all listen on one port, so that
    /// `rjob` labels them by address alone (as a real fleet on one port is labelled).
    pub fn start_one_port(n: usize) -> Result<Fleet> {
        let ips = agent_ips(n)?;
        let port = (0..50)
            .map(|_| free_port(ips[0]))
            .find(|&p| p != 0 && ips.iter().all(|&ip| TcpListener::bind((ip, p)).is_ok()))
            .context("no port is free on every agent address")?;
        let mut fleet = Fleet::empty()?;
        let policy = test_policy();
        for ip in ips {
            fleet.add_agent(SocketAddr::from((ip, port)), &policy, &|_| {})?;
        }
        fleet.wait_listening()?;
        Ok(fleet)
    }

    /// A temp dir and a CA, no agents yet.
    fn empty() -> Result<Fleet> {
        let tmp = tempfile::Builder::new().prefix("rjob-test-").tempdir()?;
        let pki = Pki::init(&tmp.path().join("pki"))?;
        Ok(Fleet {
            tmp,
            pki,
            agents: Vec::new(),
        })
    }

    fn add_agent(&mut self, addr: SocketAddr, policy: &str, tweak: &dyn Fn(&mut Command)) -> Result<()> {
        let ip = addr.ip();
        let dir = self.tmp.path().join(format!("agent-{ip}"));
        self.pki
            .issue_agent(&format!("agent-{ip}"), &ip.to_string(), &dir)?;
        std::fs::write(dir.join("policy.toml"), policy)?;
        let (spool, log) = (dir.join("spool"), dir.join("agent.log"));
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

    /// Waits until every agent accepts connections.
    fn wait_listening(&self) -> Result<()> {
        for agent in &self.agents {
            if !wait_listening(agent.addr, WAIT) {
                bail!(
                    "agent {} did not start listening: {}",
                    agent.addr,
                    agent.log_text()
                );
            }
        }
        Ok(())
    }

    /// Kills agent `i` (`kill -9`) and starts it again on the same address and spool.
    pub fn restart_agent(&mut self, i: usize) -> Result<()> {
        let agent = &mut self.agents[i];
        let _ = agent.child.kill();
        let _ = agent.child.wait();
        agent.child = agent.command()?.spawn().context("restarting rjob-agent")?;
        let addr = agent.addr;
        if !wait_listening(addr, WAIT) {
            bail!("agent {addr} did not come back");
        }
        Ok(())
    }

    /// The agents as a `-H` list.
    pub fn hosts(&self) -> String {
        self.agents.iter().map(Agent::host).collect::<Vec<_>>().join(",")
    }

    /// The agents' port, when they share one ([`Fleet::start_one_port`]).
    pub fn port(&self) -> u16 {
        self.agents.first().map_or(0, |a| a.addr.port())
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

/// An agent's command line: the shared one ([`AgentSetup`]; certificates and policy in
/// `dir`), a short kill grace, its log on stderr.
fn agent_command(addr: SocketAddr, dir: &Path, spool: &Path, log: &Path) -> Result<Command> {
    let setup = AgentSetup {
        listen: addr,
        cert_dir: dir.to_owned(),
        spool: spool.to_owned(),
        policy: dir.join("policy.toml"),
        config: None,
    };
    let mut cmd = setup.command(bin_dir());
    cmd.arg("--kill-grace")
        .arg("1s")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?);
    Ok(cmd)
}

/// 127.0.0.2, 127.0.0.3, …: the addresses of `n` agents.
fn agent_ips(n: usize) -> Result<Vec<Ipv4Addr>> {
    (0..n)
        .map(|i| u8::try_from(2 + i).map(|o| Ipv4Addr::new(127, 0, 0, o)))
        .collect::<Result<_, _>>()
        .context("at most 250 agents")
}
