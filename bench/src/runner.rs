//! One scenario's runs: every tool in turn, run by run, so that the tools share the
//! machine's state (and its other load) as evenly as possible.

use std::time::Duration;

use anyhow::Result;

use crate::bench::Bench;
use crate::peers::close_ssh_masters;
use crate::stats::{Scenario, Series, Tool};

/// The longest one run of one tool may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(1800);

/// What a scenario runs: on how many hosts, at most how many at once, and what.
pub struct Plan<'a> {
    pub id: String,
    pub kind: &'a str,
    pub hosts: usize,
    pub throttle: usize,
    pub script: &'a str,
    /// Script output per host (throughput scenarios), bytes.
    pub bytes: u64,
    pub tools: &'a [Tool],
    /// ansible's module (`command` or `shell`) and the remote command for the ssh peers.
    pub module: &'a str,
    pub remote: &'a str,
    pub runs: usize,
}

impl Bench {
    pub fn run_tools(&mut self, plan: Plan) -> Result<Scenario> {
        let Plan {
            id,
            kind,
            hosts: n,
            throttle: k,
            script,
            bytes,
            tools,
            module,
            remote,
            runs,
        } = plan;
        let timeout = RUN_TIMEOUT;
        let mut series: Vec<Series> = Vec::new();
        for &tool in tools {
            let mut skipped = match tool {
                Tool::Pdsh | Tool::SshWarm => self.peers.pdsh.as_ref().err().cloned(),
                Tool::DialledIn if !self.settings.dial_in => Some("--no-dial-in".to_string()),
                Tool::Ansible => self.peers.ansible.as_ref().err().cloned(),
                _ => None,
            };
            if skipped.is_none() && self.runs_of(tool, n) == 0 {
                skipped = Some(format!("not run at N={n} (--ansible-sizes)"));
            }
            let shown = match tool {
                Tool::Rjob => self.rjob_cmd(n, k, script).1,
                Tool::AsJob => self.as_job_shown(n, k, script),
                Tool::Session => self.session_shown(n, k, script),
                Tool::DialledIn => self.dialled_shown(n, k, script),
                Tool::Floor => self.floor_cmd(n, k, script).1,
                Tool::PipeFloor => self.pipe_floor_cmd(n, script).1,
                Tool::Pdsh => self.pdsh_cmd(n, k, remote).map(|c| c.1).unwrap_or_default(),
                Tool::SshWarm => self.ssh_warm_cmd(n, k, remote).map(|c| c.1).unwrap_or_default(),
                Tool::Ansible => self
                    .ansible_cmd(n, k, module, remote, &self.cp_root)?
                    .map(|c| c.1)
                    .unwrap_or_default(),
            };
            let mut s = Series::new(tool, shown);
            s.skipped = skipped;
            series.push(s);
        }
        if series
            .iter()
            .any(|s| s.tool == Tool::SshWarm && s.skipped.is_none())
        {
            self.open_ssh_masters(n)?;
        }
        if series
            .iter()
            .any(|s| s.tool == Tool::Session && s.skipped.is_none())
        {
            self.open_session(n, k)?;
        }
        for run in 0..runs {
            for s in series.iter_mut() {
                if s.skipped.is_some() || run >= self.runs_of(s.tool, n).min(runs) {
                    continue;
                }
                let tag = id.clone();
                match s.tool {
                    Tool::Rjob => {
                        let (mut cmd, _) = self.rjob_cmd(n, k, script);
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::AsJob => self.as_job_once(s, n, k, script, run, &tag)?,
                    Tool::Session => {
                        let mut cmd = self.session_cmd(n, k, script)?;
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::DialledIn => {
                        let mut cmd = self.dialled_cmd(n, k, script)?;
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::Floor => {
                        let (mut cmd, _) = self.floor_cmd(n, k, script);
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::PipeFloor => {
                        let (mut cmd, _) = self.pipe_floor_cmd(n, script);
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::Pdsh => {
                        if let Some((mut cmd, _)) = self.pdsh_cmd(n, k, remote) {
                            self.once(s, n, &mut cmd, run, &tag, timeout)?;
                        }
                    }
                    Tool::SshWarm => {
                        if let Some((mut cmd, _)) = self.ssh_warm_cmd(n, k, remote) {
                            self.once(s, n, &mut cmd, run, &tag, timeout)?;
                        }
                    }
                    Tool::Ansible => {
                        let dir = self.cp_root.join(format!("{}", self.scenarios.len() * 100 + run));
                        std::fs::create_dir_all(&dir)?;
                        if let Some((mut cmd, _)) = self.ansible_cmd(n, k, module, remote, &dir)? {
                            let r = self.once(s, n, &mut cmd, run, &tag, timeout);
                            close_ssh_masters(&dir);
                            let _ = std::fs::remove_dir_all(&dir);
                            r?;
                        }
                    }
                }
            }
        }
        Ok(Scenario {
            id,
            kind: kind.to_string(),
            hosts: n,
            script: script.to_string(),
            throttle: k,
            bytes_per_host: bytes,
            series,
        })
    }
}
