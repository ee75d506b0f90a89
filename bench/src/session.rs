//! The warm-session column: `rjob session new` on the job daemon before anything is timed
//! (the daemon dials every agent once and keeps the connections), then each measured run is
//! `rjob invoke --session`: the daemon runs the fan-out over those connections, with no TCP
//! or TLS handshake, and streams the output back to the CLI.

use std::process::Command;

use anyhow::{bail, Result};

use crate::bench::Bench;
use crate::procs;

impl Bench {
    fn session_name(n: usize) -> String {
        format!("bench-n{n}")
    }

    pub fn session_shown(&self, n: usize, k: usize, script: &str) -> String {
        format!("rjob invoke --session <{n} agents, opened before> --throttle-limit {k} --script '{script}'")
    }

    /// Opens the session of the first `n` agents, once per size (before the timed runs).
    pub fn open_session(&mut self, n: usize, k: usize) -> Result<()> {
        let Some(jd) = self.jobd.as_ref() else {
            bail!("no job daemon");
        };
        let name = Self::session_name(n);
        let mut list = jd.rjob(&self.bin, &self.agents.pki);
        list.args(["session", "list", &name]);
        if list.output().is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        eprintln!("==> opening session {name} over {n} agents");
        let mut new = jd.rjob(&self.bin, &self.agents.pki);
        new.args(["session", "new", &name, "--throttle-limit", &k.to_string(), "-H"])
            .arg(self.agents.hosts(n));
        procs::run_ok(&mut new).map(drop)
    }

    pub fn session_cmd(&self, n: usize, k: usize, script: &str) -> Result<Command> {
        let Some(jd) = self.jobd.as_ref() else {
            bail!("no job daemon");
        };
        let mut cmd = jd.rjob(&self.bin, &self.agents.pki);
        cmd.arg("invoke")
            .arg("--session")
            .arg(Self::session_name(n))
            .arg("--throttle-limit")
            .arg(k.to_string())
            .arg("--script")
            .arg(script);
        Ok(cmd)
    }
}
