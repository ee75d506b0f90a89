//! A network namespace behind a veth pair, where inbound TCP connections are dropped (a host
//! behind NAT or a firewall), with real agents inside. Everything it made (agents, the
//! namespace with its iptables rules, the veth pair) goes when it is dropped, also when the
//! test failed.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{bail, Context as _, Result};

/// Which of this process's namespaces this is (each has a /24 of its own).
static NEXT: AtomicU8 = AtomicU8::new(0);

pub struct Firewalled {
    pub name: String,
    veth: String,
    /// The host side's address (where the daemon listens for agents).
    pub host_ip: Ipv4Addr,
    /// The namespace side's address (where its agents listen, unreachable).
    pub inside_ip: Ipv4Addr,
    agents: Vec<Child>,
}

/// Runs a command; its failure is an error with what it printed.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Firewalled {
    /// Fails loudly without root: the test needs namespaces and iptables.
    pub fn create() -> Result<Firewalled> {
        if !nix::unistd::geteuid().is_root() {
            bail!("this test needs root (network namespaces, veth, iptables); run it as root");
        }
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = u8::try_from((pid % 100) * 2 + u32::from(n % 2)).unwrap_or(0);
        let mut ns = Firewalled {
            name: format!("rjt-dialout-{pid}-{n}"),
            // Interface names have at most 15 bytes.
            veth: format!("dialout{}{n}", pid % 100_000),
            host_ip: Ipv4Addr::new(10, 213, subnet, 1),
            inside_ip: Ipv4Addr::new(10, 213, subnet, 2),
            agents: Vec::new(),
        };
        ns.set_up()?;
        Ok(ns)
    }

    fn set_up(&mut self) -> Result<()> {
        let (ns, veth) = (self.name.clone(), self.veth.clone());
        let peer = format!("{veth}n");
        let (host, inside) = (format!("{}/24", self.host_ip), format!("{}/24", self.inside_ip));
        sh(&["ip", "netns", "add", &ns])?;
        sh(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        sh(&["ip", "link", "set", &peer, "netns", &ns])?;
        sh(&["ip", "addr", "add", &host, "dev", &veth])?;
        sh(&["ip", "link", "set", &veth, "up"])?;
        self.exec(&["ip", "addr", "add", &inside, "dev", &peer])?;
        self.exec(&["ip", "link", "set", &peer, "up"])?;
        self.exec(&["ip", "link", "set", "lo", "up"])?;
        // New TCP connections into the namespace are dropped; what the namespace opened
        // itself (established, related) comes back.
        self.exec(&["iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"])?;
        self.exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ])?;
        self.exec(&["iptables", "-A", "INPUT", "-p", "tcp", "-j", "DROP"])?;
        Ok(())
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Starts `agent` (an `rjob-agent` command line) inside the namespace; its stderr goes
    /// to `log`. It is killed before the namespace goes.
    pub fn spawn(&mut self, agent: &Command, log: &Path) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(agent.get_program())
            .args(agent.get_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?);
        self.agents
            .push(cmd.spawn().context("starting rjob-agent in the namespace")?);
        Ok(())
    }
}

impl Drop for Firewalled {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        // The namespace takes its iptables rules and its end of the veth pair with it; the
        // pair's other end goes with it, and is removed here in case it did not.
        let _ = sh(&["ip", "netns", "del", &self.name]);
        let _ = sh(&["ip", "link", "del", &self.veth]);
    }
}
