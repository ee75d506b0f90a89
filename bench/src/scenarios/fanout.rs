//! Fan-out: `n` hosts run a short command, at most `k` at once.

use anyhow::Result;

use crate::bench::Bench;
use crate::runner::Plan;
use crate::stats::{Scenario, Tool};

impl Bench {
    /// `n` hosts run `script`, at most `k` at once, by each tool, interleaved run by run.
    pub fn fanout_scenario(&mut self, n: usize, script: &str, k: usize, warmup: bool) -> Result<Scenario> {
        eprintln!(
            "==> {}N={n} '{script}' throttle {k}",
            if warmup { "warm-up: " } else { "" }
        );
        let tools: &[Tool] = if warmup {
            &[Tool::Rjob]
        } else {
            &[
                Tool::Rjob,
                Tool::Session,
                Tool::DialledIn,
                Tool::Floor,
                Tool::Pdsh,
                Tool::SshWarm,
                Tool::Ansible,
            ]
        };
        self.run_tools(Plan {
            id: format!("fanout-n{n}-{}-t{k}", script.replace(' ', "_")),
            kind: "fanout",
            hosts: n,
            throttle: k,
            script,
            bytes: 0,
            tools,
            module: "command",
            remote: script,
            runs: if warmup { 1 } else { self.settings.runs },
        })
    }
}
