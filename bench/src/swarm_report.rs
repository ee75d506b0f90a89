//! `rjob-bench swarm`'s report: `swarm.md` and `swarm.json` (`swarm-Kdaemons.*` with
//! `--daemons K`), the stand-in said in the first line.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::stats::median;
use crate::swarm::{SwarmOpts, STAND_IN_NOTE};
use crate::swarm_measure::RunResult;

fn show(v: Option<f64>, unit: &str) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"))
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
}

pub fn write(
    opts: &SwarmOpts,
    runs: &[RunResult],
    (issued, issue_s): (usize, f64),
    out_dir: &Path,
    took: Duration,
) -> Result<()> {
    let n = opts.agents;
    let connect: Vec<f64> = runs.iter().filter_map(|r| r.connect_s).collect();
    let per_agent: Vec<f64> = runs.iter().filter_map(|r| r.daemon_kib_per_agent).collect();
    let swarm_per_agent: Vec<f64> = runs.iter().filter_map(|r| r.swarm_kib_per_agent).collect();
    let build: Vec<f64> = runs
        .iter()
        .map(|r| r.build_s.iter().copied().fold(0.0, f64::max))
        .collect();
    let invokes: Vec<_> = runs.iter().flat_map(|r| &r.invokes).collect();
    let ok: Vec<f64> = invokes.iter().filter(|i| i.ok).map(|i| i.total_s).collect();
    let invoke_only: Vec<f64> = invokes.iter().filter(|i| i.ok).map(|i| i.invoke_s).collect();
    let wait_only: Vec<f64> = invokes.iter().filter(|i| i.ok).map(|i| i.wait_s).collect();
    let failed = invokes.len() - ok.len();
    let (m_connect, m_kib, m_total) = (
        median(connect.clone()),
        median(per_agent.clone()),
        median(ok.clone()),
    );
    let target_total = if opts.daemons > 1 { 5.0 } else { 3.0 };
    let verdict = |v: Option<f64>, target: f64| match v {
        Some(v) if v < target => "met",
        Some(_) => "MISSED",
        None => "no figure",
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let release = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(|p| p.file_name()).map(|n| n == "release"))
        .unwrap_or(false);
    let mut md = format!("# rjob-bench swarm\n\n**{STAND_IN_NOTE}**\n\n");
    if !release {
        md.push_str("**A DEBUG BUILD: these figures are not the product's** (build with `--release`).\n\n");
    }
    md.push_str(&format!(
        "`rjob-bench {}`: {n} agents, {} daemon(s) (`rjob serve --agent-listen`{}), {} runs (a fresh daemon and swarm each), {} `invoke --as-job` per run; load average at the end {}; {:.0}s in all. Certificates: {} issued this time ({issue_s:.1}s, in-process with the pki library), the rest cached in {}.\n\n",
        argv.join(" "),
        opts.daemons,
        if opts.daemons > 1 { ", one PostgreSQL store, the agents split evenly" } else { ", SQLite store" },
        runs.len(),
        opts.invokes,
        crate::bench::loadavg(),
        took.as_secs_f64(),
        issued,
        opts.certs.display(),
    ));
    md.push_str("| measure | median | runs | target |\n|---|---|---|---|\n");
    md.push_str(&format!(
        "| time to connect all {n} agents | {} | {} | - |\n",
        show(m_connect, " s"),
        list(&connect)
    ));
    md.push_str(&format!(
        "| daemon RSS per connected agent (VmRSS after − before, / N) | {} | {} | under 100 KiB: {} |\n",
        show(m_kib, " KiB"),
        list(&per_agent),
        verdict(m_kib, 100.0)
    ));
    md.push_str(&format!(
        "| `invoke --as-job -H {} --throttle-limit {n} --script true` + `wait` | {} | {} | under {target_total} s: {} |\n",
        crate::swarm_certs::host_range(n),
        show(m_total, " s"),
        list(&ok),
        verdict(m_total, target_total)
    ));
    // A row of seconds with no target: its median, then every run's.
    let row = |label: &str, values: &[f64]| {
        format!(
            "| {label} | {} | {} | |\n",
            show(median(values.to_vec()), " s"),
            list(values)
        )
    };
    md.push_str(&row("… of which `invoke --as-job`", &invoke_only));
    md.push_str(&row("… of which `wait`", &wait_only));
    let cpu = |f: fn(&crate::swarm_measure::Invoke) -> Option<f64>| -> Vec<f64> {
        invokes.iter().filter(|i| i.ok).filter_map(|i| f(i)).collect()
    };
    let (daemon_cpu, swarm_cpu, store_cpu) = (
        cpu(|i| Some(i.daemon_cpu_s)),
        cpu(|i| Some(i.swarm_cpu_s)),
        cpu(|i| i.store_cpu_s),
    );
    md.push_str(&row("CPU over invoke + wait: the daemon(s)", &daemon_cpu));
    md.push_str(&row(
        "CPU over invoke + wait: the swarm process(es) (the simulator, on the same 2 cores)",
        &swarm_cpu,
    ));
    if !store_cpu.is_empty() {
        md.push_str(&row(
            "CPU over invoke + wait: PostgreSQL (postmaster and backends)",
            &store_cpu,
        ));
    }
    md.push_str(&format!(
        "| swarm process RSS per agent (the simulator, not the product) | {} | {} | |\n| building the agents (swarm process) | {} | {} | |\n",
        show(median(swarm_per_agent.clone()), " KiB"),
        list(&swarm_per_agent),
        show(median(build.clone()), " s"),
        list(&build)
    ));
    if failed > 0 {
        md.push_str(&format!(
            "\n**{failed} of {} invokes failed** (left out of the medians):\n\n",
            invokes.len()
        ));
        for i in invokes.iter().filter(|i| !i.ok) {
            md.push_str(&format!("- {}\n", i.status));
        }
    }
    print!("{md}");
    std::fs::create_dir_all(out_dir)?;
    let stem = if opts.daemons > 1 {
        format!("swarm-{}daemons", opts.daemons)
    } else {
        "swarm".to_string()
    };
    std::fs::write(out_dir.join(format!("{stem}.md")), &md)?;
    let json = serde_json::json!({
        "note": STAND_IN_NOTE,
        "release_build": release,
        "argv": argv,
        "opts": opts,
        "certificates_issued": issued,
        "issue_s": issue_s,
        "median_connect_s": m_connect,
        "median_daemon_kib_per_agent": m_kib,
        "median_invoke_wait_s": m_total,
        "target_invoke_wait_s": target_total,
        "target_daemon_kib_per_agent": 100.0,
        "runs": runs,
    });
    std::fs::write(
        out_dir.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!("==> wrote {}", out_dir.join(format!("{stem}.md")).display());
    Ok(())
}
