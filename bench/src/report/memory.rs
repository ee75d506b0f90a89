//! The memory tables: agents idle and under load, the controller and the daemon against the
//! host count.

use std::fmt::Write as _;

use super::cells::{max_u64, med_u64, rss};
use crate::bench::Bench;
use crate::stats::{fmt_mib, Scenario, Tool};

/// Median peak RSS of rjob's controller in a scenario, KiB.
pub fn controller_peak(sc: Option<&Scenario>) -> Option<f64> {
    sc?.get(Tool::Rjob)?.median_of(rss)
}

/// Median peak RSS of the daemon in a scenario's --as-job runs, KiB.
pub fn daemon_peak(sc: Option<&Scenario>) -> Option<f64> {
    med_u64(&sc?.get(Tool::AsJob)?.daemon_peak_kib)
}

pub fn throughput_of(b: &Bench, hosts: usize, bytes: u64) -> Option<&Scenario> {
    b.scenarios
        .iter()
        .find(|sc| sc.kind == "throughput" && sc.hosts == hosts && sc.bytes_per_host == bytes)
}

pub fn tables(md: &mut String, b: &Bench) {
    let s = &b.settings;
    let mem = &b.memory;
    let _ = writeln!(md, "\n## Memory against the host count\n");
    let _ = writeln!(
        md,
        "Peak RSS (medians over the runs). Controller: `rjob invoke` (from wait4). Daemon: `rjob serve` during `rjob invoke --as-job` + `rjob wait` (VmHWM, reset before each run). Agents: the largest over the N agents.\n"
    );
    let _ = writeln!(
        md,
        "| N | controller, `true` | controller, N × {mb} MB | daemon, N × {mb} MB (--as-job) | agent (max), N × {mb} MB |\n|---:|---:|---:|---:|---:|",
        mb = s.per_host_bytes / 1_000_000
    );
    for &n in &s.sizes {
        let fan = b
            .scenarios
            .iter()
            .find(|sc| sc.kind == "fanout" && sc.hosts == n && sc.script == "true" && sc.throttle == n);
        let tp = throughput_of(b, n, s.per_host_bytes);
        let agent = tp
            .and_then(|sc| sc.get(Tool::Rjob))
            .and_then(|r| med_u64(&r.agent_peak_max_kib));
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} |",
            fmt_mib(controller_peak(fan)),
            fmt_mib(controller_peak(tp)),
            fmt_mib(daemon_peak(tp)),
            fmt_mib(agent),
        );
    }
    for bytes in [s.big_bytes, s.huge_bytes] {
        let Some(sc) = throughput_of(b, 1, bytes) else {
            continue;
        };
        let agent = sc.get(Tool::Rjob).and_then(|r| med_u64(&r.agent_peak_max_kib));
        let _ = writeln!(
            md,
            "| 1 × {} MB | – | {} | {} | {} |",
            bytes / 1_000_000,
            fmt_mib(controller_peak(Some(sc))),
            fmt_mib(daemon_peak(Some(sc))),
            fmt_mib(agent),
        );
    }
    let _ = writeln!(md, "\n| agents idle | median | max |\n|---|---:|---:|");
    let _ = writeln!(
        md,
        "| fresh ({} agents) | {} | {} |",
        mem.agent_idle_fresh_kib.len(),
        fmt_mib(med_u64(&mem.agent_idle_fresh_kib)),
        fmt_mib(max_u64(&mem.agent_idle_fresh_kib))
    );
    let _ = writeln!(
        md,
        "| after all runs | {} | {} |",
        fmt_mib(med_u64(&mem.agent_idle_after_kib)),
        fmt_mib(max_u64(&mem.agent_idle_after_kib))
    );
}
