//! The targets of issue 18 (and issue 6's against the peers), each with what was measured.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::cells::{max_u64, mbps, ratio_between, ratio_of, wall};
use super::memory::{controller_peak, daemon_peak, throughput_of};
use crate::bench::Bench;
use crate::stats::{fmt_mib, Scenario, Tool};

const MIB: f64 = 1024.0;

pub fn table(md: &mut String, b: &Bench) -> Vec<Value> {
    let s = &b.settings;
    let max_n = s.sizes.iter().max().copied().unwrap_or(0);
    let _ = writeln!(md, "\n## Targets (issue 18; the peers' from issue 6)\n");
    let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
    let mut targets = Vec::new();
    let mut target = |name: String, measured: Option<f64>, text: String, ok: Option<bool>| {
        let met = match ok {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {name} | {text} | {met} |");
        targets.push(json!({"target": name, "measured": measured, "met": ok}));
    };
    // One host.
    let big = throughput_of(b, 1, s.big_bytes);
    for tool in [Tool::Rjob, Tool::AsJob] {
        let v = big.and_then(|sc| sc.get(tool)?.median_of(mbps(sc)));
        let floor = big.and_then(|sc| ratio_between(sc, Tool::PipeFloor, tool, mbps(sc)));
        target(
            format!(
                "one host ({} MB), {}: ≥800 MB/s or within 3x of the pipe floor",
                s.big_bytes / 1_000_000,
                if tool == Tool::Rjob {
                    "`rjob invoke`"
                } else {
                    "--as-job ingest"
                }
            ),
            v,
            match (v, floor) {
                (Some(v), Some(f)) => format!("{v:.0} MB/s; the pipe floor is {f:.1}x faster"),
                (Some(v), None) => format!("{v:.0} MB/s"),
                _ => "–".into(),
            },
            v.map(|v| v >= 800.0 || floor.is_some_and(|f| f <= 3.0)),
        );
    }
    // All hosts.
    let all = throughput_of(b, max_n, s.per_host_bytes);
    let v = all.and_then(|sc| sc.get(Tool::Rjob)?.median_of(mbps(sc)));
    target(
        format!(
            "all hosts ({max_n} × {} MB): ≥600 MB/s in aggregate",
            s.per_host_bytes / 1_000_000
        ),
        v,
        v.map(|v| format!("{v:.0} MB/s")).unwrap_or("–".into()),
        v.map(|v| v >= 600.0),
    );
    // Memory.
    let mut rss_cases = vec![(format!("{max_n} × {} MB", s.per_host_bytes / 1_000_000), all)];
    if s.huge_bytes > 0 {
        rss_cases.push((
            format!("1 × {} MB", s.huge_bytes / 1_000_000),
            throughput_of(b, 1, s.huge_bytes),
        ));
    }
    for (what, sc) in rss_cases {
        let v = controller_peak(sc);
        target(
            format!("controller peak RSS ≤ 64 MiB, {what}"),
            v,
            fmt_mib(v),
            v.map(|k| k <= 64.0 * MIB),
        );
    }
    let v = daemon_peak(all);
    target(
        format!("daemon peak RSS < 128 MiB, {max_n} children streaming"),
        v,
        fmt_mib(v),
        v.map(|k| k < 128.0 * MIB),
    );
    // Cold fan-out.
    for n in [256, 1024].into_iter().filter(|n| s.sizes.contains(n)) {
        let sc = fanout_true(b, n);
        let r = sc.and_then(|sc| ratio_of(sc, Tool::Floor, wall));
        target(
            format!("cold fan-out of `true` on {n} hosts: within 2x the spawn floor"),
            r,
            r.map(|r| format!("{r:.1}x the floor")).unwrap_or("–".into()),
            r.map(|r| r <= 2.0),
        );
    }
    // Agent.
    let mem = &b.memory;
    let idle = max_u64(&mem.agent_idle_fresh_kib)
        .into_iter()
        .chain(max_u64(&mem.agent_idle_after_kib))
        .reduce(f64::max);
    target(
        "agent idle RSS ≤ 8 MiB".into(),
        idle,
        idle.map(|k| {
            format!(
                "max {} over all agents, fresh and after the runs",
                fmt_mib(Some(k))
            )
        })
        .unwrap_or("–".into()),
        idle.map(|k| k <= 8.0 * MIB),
    );
    let huge = throughput_of(b, 1, s.huge_bytes).or(big);
    let streaming = huge
        .and_then(|sc| sc.get(Tool::Rjob))
        .and_then(|r| max_u64(&r.agent_peak_max_kib));
    target(
        format!(
            "agent RSS ≤ 16 MiB while it streams {} MB",
            huge.map(|sc| sc.bytes_per_host / 1_000_000).unwrap_or(0)
        ),
        streaming,
        fmt_mib(streaming),
        streaming.map(|k| k <= 16.0 * MIB),
    );
    // The peers (issue 6).
    if let Some(sc) = fanout_true(b, 256) {
        for (peer, times) in [(Tool::Pdsh, 10.0), (Tool::Ansible, 50.0)] {
            let r = ratio_of(sc, peer, wall);
            target(
                format!("256 hosts `true`: rjob ≥{times:.0}x faster than {}", peer.name()),
                r,
                r.map(|r| format!("{:.1}x", 1.0 / r)).unwrap_or("–".into()),
                r.map(|r| r <= 1.0 / times),
            );
        }
    }
    targets
}

fn fanout_true(b: &Bench, n: usize) -> Option<&Scenario> {
    b.scenarios
        .iter()
        .find(|sc| sc.kind == "fanout" && sc.hosts == n && sc.script == "true" && sc.throttle == n)
}
