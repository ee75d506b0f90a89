//! The warm-ssh column: one ssh ControlMaster connection per host, opened (and
//! authenticated) before anything is timed and kept open (`ControlPersist`), then the runs
//! fanned out by pdsh's `exec` module as new sessions over those connections. The closest
//! ssh analogue of persistent agents and sessions.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::bench::Bench;

/// At most this many masters are being opened at once.
const OPENING_AT_ONCE: usize = 32;

impl Bench {
    /// The directory of the masters' sockets (`%h` below it).
    fn mux_dir(&self) -> PathBuf {
        self.cp_root.join("mux")
    }

    /// ssh options that make a connection reuse the host's master.
    fn mux_opts(&self) -> Vec<String> {
        vec![
            "-o".into(),
            format!("ControlPath={}/%h", self.mux_dir().display()),
            "-o".into(),
            "ControlMaster=no".into(),
        ]
    }

    /// Opens masters to the first `n` sshd addresses that have none yet; untimed.
    pub fn open_ssh_masters(&mut self, n: usize) -> Result<()> {
        let Some(s) = self.sshds.as_ref() else {
            return Ok(());
        };
        if self.masters_open >= n {
            return Ok(());
        }
        std::fs::create_dir_all(self.mux_dir())?;
        let t = Instant::now();
        let todo: Vec<String> = s.ips[self.masters_open..n]
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        eprintln!(
            "==> opening {} ssh ControlMaster connections (untimed)",
            todo.len()
        );
        for chunk in todo.chunks(OPENING_AT_ONCE) {
            let mut children = Vec::new();
            for host in chunk {
                let child = Command::new("ssh")
                    .arg("-F")
                    .arg(&s.ssh_config)
                    .arg("-o")
                    .arg(format!("ControlPath={}/%h", self.mux_dir().display()))
                    .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-f", "-N"])
                    .arg(host)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .spawn()
                    .context("ssh -M")?;
                children.push((host, child));
            }
            for (host, mut c) in children {
                if !c.wait()?.success() {
                    bail!("opening an ssh master to {host} failed");
                }
            }
        }
        self.masters_open = n;
        eprintln!("    masters open in {:.1}s", t.elapsed().as_secs_f64());
        Ok(())
    }

    /// pdsh -R exec running `ssh HOST SCRIPT` over each host's master.
    pub fn ssh_warm_cmd(&self, n: usize, k: usize, script: &str) -> Option<(Command, String)> {
        let s = self.sshds.as_ref()?;
        let mut cmd = Command::new("pdsh");
        cmd.args(["-R", "exec", "-S", "-f", &k.to_string(), "-w"])
            .arg(s.host_list(n))
            .arg("ssh")
            .arg("-F")
            .arg(&s.ssh_config)
            .args(self.mux_opts())
            .arg("%h")
            .arg(script);
        let shown = format!(
            "pdsh -R exec -S -f {k} -w <{n} sshd addresses> ssh -o ControlPath=<warm master of %h> -o ControlMaster=no %h '{script}'"
        );
        Some((cmd, shown))
    }
}
