//! Throughput: `n` hosts each print a given amount of text lines, all at once.

use anyhow::Result;

use crate::bench::Bench;
use crate::runner::Plan;
use crate::stats::{Scenario, Tool};

/// A line of text, repeated, cut to `bytes`: output as ordinary text lines (100 bytes each).
pub fn output_script(bytes: u64) -> String {
    format!(
        "yes 'rjob-bench 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ++++++' | head -c {bytes}"
    )
}

impl Bench {
    /// `n` hosts each print `bytes` of text lines, all at once.
    pub fn throughput_scenario(&mut self, n: usize, bytes: u64, with_peers: bool) -> Result<Scenario> {
        let script = output_script(bytes);
        eprintln!("==> throughput: {n} host(s) x {} MB", bytes / 1_000_000);
        let tools: &[Tool] = if with_peers {
            &[
                Tool::Rjob,
                Tool::AsJob,
                Tool::PipeFloor,
                Tool::Pdsh,
                Tool::SshWarm,
                Tool::Ansible,
            ]
        } else {
            // Without --as-job: `rjob receive` runs at a few MB/s today (see FINDINGS.md),
            // minutes for a gigabyte.
            &[Tool::Rjob, Tool::PipeFloor]
        };
        self.run_tools(Plan {
            id: format!("throughput-n{n}-{}MB", bytes / 1_000_000),
            kind: "throughput",
            hosts: n,
            throttle: n,
            script: &script,
            bytes,
            tools,
            module: "shell",
            remote: &script,
            runs: self.settings.runs,
        })
    }
}
