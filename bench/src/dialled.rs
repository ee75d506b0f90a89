//! The dialled-in column: every agent also dials out to the job daemon (`rjob-agent
//! --connect` to its `--agent-listen`), and each measured run is a plain `rjob invoke -H` of
//! their names, which goes through the daemon, transparently, over the connections the agents
//! opened: no TCP or TLS handshake at invoke time, and none initiated by the controller.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::bench::Bench;
use crate::jobd::JobDaemon;
use crate::procs;

/// Waits until `n` agents have dialled in to `jd` (they back off while it was not up).
pub fn wait_dialled_in(jd: &JobDaemon, bin: &Path, pki: &Path, n: usize) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    let mut last = 0;
    while Instant::now() < deadline {
        let mut status = jd.rjob(bin, pki);
        status.args(["daemon", "status", "--output", "json"]);
        let text = procs::run_ok(&mut status).unwrap_or_default();
        let connected = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["connected"].as_array().map(Vec::len))
            .unwrap_or(0);
        if connected >= n {
            eprintln!(
                "    {n} agents dialled in to the job daemon in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        last = connected;
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("only {last} of {n} agents dialled in to the job daemon within 180s")
}

impl Bench {
    pub fn dialled_shown(&self, n: usize, k: usize, script: &str) -> String {
        format!(
            "rjob invoke -H <{n} agents, dialled in to the daemon> --throttle-limit {k} --script '{script}'"
        )
    }

    /// `rjob invoke -H` of the first `n` agents by the names they dialled in with (their
    /// addresses, the first name of their certificates), with the job daemon's state dir.
    pub fn dialled_cmd(&self, n: usize, k: usize, script: &str) -> Result<Command> {
        let Some(jd) = self.jobd.as_ref() else {
            bail!("no job daemon");
        };
        let names: Vec<String> = self
            .agents
            .addrs
            .iter()
            .take(n)
            .map(|a| a.ip().to_string())
            .collect();
        let mut cmd = jd.rjob(&self.bin, &self.agents.pki);
        cmd.arg("invoke")
            .arg("-H")
            .arg(names.join(","))
            .arg("--throttle-limit")
            .arg(k.to_string())
            .arg("--script")
            .arg(script);
        Ok(cmd)
    }
}
