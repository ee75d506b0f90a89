//! The targets: N rjob agents and N sshd endpoints on distinct loopback addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use rjob_testkit::{wait_listening, AgentSetup};

use crate::procs::{self, Daemon};

/// `n` distinct loopback addresses: 127.0.0.2, 127.0.0.3, …, 127.0.0.254, 127.0.1.1, …
/// (skipping .0 and .255 in the last octet).
pub fn loopback_addrs(n: usize) -> Vec<Ipv4Addr> {
    let mut out = Vec::with_capacity(n);
    let mut i: u32 = 2;
    while out.len() < n {
        let (b, c) = ((i >> 8) & 0xff, i & 0xff);
        if c != 0 && c != 255 {
            out.push(Ipv4Addr::new(127, 0, b as u8, c as u8));
        }
        i += 1;
    }
    out
}

/// Agents with their own certificates (`rjob pki issue-agent`), one per address.
pub struct Agents {
    pub pki: PathBuf,
    pub addrs: Vec<SocketAddr>,
    pub daemons: Vec<Daemon>,
}

impl Agents {
    pub fn start(bin: &Path, dir: &Path, ips: &[Ipv4Addr], port: u16) -> Result<Agents> {
        Self::start_dialling(bin, dir, ips, port, None)
    }

    /// As [`Agents::start`]; with `connect`, every agent also dials out to that daemon
    /// (`rjob-agent --connect`), as well as listening.
    pub fn start_dialling(
        bin: &Path,
        dir: &Path,
        ips: &[Ipv4Addr],
        port: u16,
        connect: Option<SocketAddr>,
    ) -> Result<Agents> {
        let rjob = bin.join("rjob");
        let pki = dir.join("pki");
        procs::run_ok(Command::new(&rjob).arg("pki").arg("init").arg(&pki))?;
        // Certificates: a few processes at a time (each makes a key pair).
        let mut pending: Vec<std::process::Child> = Vec::new();
        for ip in ips {
            let out = dir.join(format!("agent-{ip}"));
            let child = Command::new(&rjob)
                .args([
                    "pki",
                    "issue-agent",
                    &format!("agent-{ip}"),
                    "--san",
                    &ip.to_string(),
                ])
                .arg("--ca-dir")
                .arg(&pki)
                .arg("--out")
                .arg(&out)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("rjob pki issue-agent")?;
            pending.push(child);
            if pending.len() >= 8 {
                for mut c in pending.drain(..) {
                    if !c.wait()?.success() {
                        bail!("rjob pki issue-agent failed");
                    }
                }
            }
        }
        for mut c in pending {
            if !c.wait()?.success() {
                bail!("rjob pki issue-agent failed");
            }
        }
        let mut agents = Agents {
            pki,
            addrs: Vec::new(),
            daemons: Vec::new(),
        };
        // Written once, before any agent starts (an agent reading it mid-write would deny all).
        std::fs::write(dir.join("agent.toml"), "")?;
        let me = nix_user();
        std::fs::write(
            dir.join("policy.toml"),
            format!("[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"{me}\"]\ndefault = \"{me}\"\n"),
        )?;
        for ip in ips {
            let d = dir.join(format!("agent-{ip}"));
            let addr = SocketAddr::from((*ip, port));
            // A config file of its own (empty), so /etc/rjob/agent.toml never leaks in; deny
            // by default: the benchmark's controller may run as the benchmark's user.
            let setup = AgentSetup {
                listen: addr,
                cert_dir: d.clone(),
                spool: d.join("spool"),
                policy: dir.join("policy.toml"),
                config: Some(dir.join("agent.toml")),
            };
            let mut cmd = setup.command(bin);
            cmd.env("RJOB_LOG", "warn");
            if let Some(to) = connect {
                cmd.arg("--connect").arg(to.to_string());
            }

            agents.daemons.push(Daemon::spawn(&mut cmd, d.join("agent.log"))?);
            agents.addrs.push(addr);
        }
        for (addr, daemon) in agents.addrs.iter().zip(agents.daemons.iter_mut()) {
            if !wait_listening(*addr, Duration::from_secs(30)) || daemon.exited() {
                bail!("agent {addr} did not start: {}", daemon.log_text());
            }
        }
        Ok(agents)
    }

    pub fn pids(&self, n: usize) -> Vec<u32> {
        self.daemons.iter().take(n).map(Daemon::pid).collect()
    }

    /// `-H` list of the first `n` agents.
    pub fn hosts(&self, n: usize) -> String {
        self.addrs
            .iter()
            .take(n)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// sshd endpoints, all on the same port: one sshd per `per_sshd` addresses (1: one per
/// host, as on a real fleet; OpenSSH listens on at most 16 per process), key authentication
/// from files made here, logins as `user`.
pub struct Sshds {
    pub dir: PathBuf,
    pub ips: Vec<Ipv4Addr>,
    pub port: u16,
    pub ssh_config: PathBuf,
    pub key: PathBuf,
    pub per_sshd: usize,
    pub user: String,
    pub daemons: Vec<Daemon>,
}

pub const SSHD: &str = "/usr/sbin/sshd";

impl Sshds {
    pub fn start(dir: &Path, ips: &[Ipv4Addr], port: u16, per_sshd: usize, user: &str) -> Result<Sshds> {
        std::fs::create_dir_all(dir)?;
        // sshd reads the authorized keys as the user who logs in.
        crate::ssh_user::open_to_others(dir)?;
        let host_key = dir.join("ssh_host_ed25519_key");
        let key = dir.join("id_ed25519");
        for k in [&host_key, &key] {
            procs::run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", "rjob-bench", "-f"])
                    .arg(k),
            )?;
        }
        std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys"))?;
        crate::ssh_user::readable_by_others(&dir.join("authorized_keys"))?;
        // sshd's privilege separation directory (the package makes it at boot or install).
        let _ = std::fs::create_dir_all("/run/sshd");
        let ssh_config = dir.join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host *\n  Port {port}\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
                 StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  GlobalKnownHostsFile /dev/null\n  \
                 BatchMode yes\n  LogLevel ERROR\n  ConnectTimeout 60\n",
                key = key.display()
            ),
        )?;
        let mut sshds = Sshds {
            dir: dir.to_owned(),
            ips: ips.to_vec(),
            port,
            ssh_config,
            key,
            per_sshd: per_sshd.clamp(1, 16),
            user: user.to_string(),
            daemons: Vec::new(),
        };
        for (g, group) in ips.chunks(sshds.per_sshd).enumerate() {
            let mut conf = String::new();
            for ip in group {
                conf.push_str(&format!("ListenAddress {ip}:{port}\n"));
            }
            conf.push_str(&format!(
                "HostKey {hk}\nPidFile none\nAuthorizedKeysFile {ak}\nStrictModes no\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nPermitRootLogin prohibit-password\nMaxStartups 4096\nMaxSessions 4096\n\
                 MaxAuthTries 20\nUseDNS no\nPrintMotd no\nPrintLastLog no\nLogLevel ERROR\n\
                 Subsystem sftp internal-sftp\n",
                hk = host_key.display(),
                ak = dir.join("authorized_keys").display()
            ));
            let path = dir.join(format!("sshd-{g}.conf"));
            std::fs::write(&path, conf)?;
            let mut cmd = Command::new(SSHD);
            cmd.arg("-D").arg("-e").arg("-f").arg(&path);
            sshds
                .daemons
                .push(Daemon::spawn(&mut cmd, dir.join(format!("sshd-{g}.log")))?);
        }
        for ip in ips {
            let addr = SocketAddr::from((*ip, port));
            if !wait_listening(addr, Duration::from_secs(30)) {
                let logs: String = sshds.daemons.iter().map(Daemon::log_text).collect();
                bail!("sshd on {addr} did not start: {logs}");
            }
        }
        // One real login proves the keys and the config before anything is timed.
        procs::run_ok(
            Command::new("ssh")
                .arg("-F")
                .arg(&sshds.ssh_config)
                .arg(ips[0].to_string())
                .arg("true"),
        )
        .context("a test login over ssh")?;
        Ok(sshds)
    }

    /// The sshd processes serving the first `n` addresses.
    pub fn pids(&self, n: usize) -> Vec<u32> {
        self.daemons
            .iter()
            .take(n.div_ceil(self.per_sshd))
            .map(Daemon::pid)
            .collect()
    }

    pub fn host_list(&self, n: usize) -> String {
        self.ips
            .iter()
            .take(n)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// An ansible inventory of the first `n` addresses.
    pub fn inventory(&self, n: usize) -> Result<PathBuf> {
        let path = self.dir.join(format!("inventory-{n}.ini"));
        let mut text = String::from("[targets]\n");
        for ip in self.ips.iter().take(n) {
            text.push_str(&format!("{ip}\n"));
        }
        text.push_str(&format!(
            "[targets:vars]\nansible_port={}\nansible_ssh_private_key_file={}\n\
             ansible_ssh_common_args='-F {}'\nansible_python_interpreter=/usr/bin/python3\nansible_user={}\n",
            self.port,
            self.key.display(),
            self.ssh_config.display(),
            self.user
        ));
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// The user the benchmark runs as (its effective user, which the agents run as too).
fn nix_user() -> String {
    std::process::Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string())
}
