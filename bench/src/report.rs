//! The report: markdown tables and JSON, with the targets checked.

use std::fmt::Write as _;
use std::process::Command;

use serde_json::{json, Value};

use crate::procs::{first_line, Sample};
use crate::stats::{
    self, fmt_mib, fmt_ratio, fmt_time, fmt_tp_ratio, median, paired_ratio, Scenario, Series, Tool,
};
use crate::Bench;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Memory {
    /// VmRSS of every agent right after start, KiB.
    pub agent_idle_fresh_kib: Vec<u64>,
    /// VmRSS of every agent after all the runs, KiB.
    pub agent_idle_after_kib: Vec<u64>,
    pub nofile: (u64, u64),
    /// /proc/loadavg when the measurements started and ended (other work on the machine
    /// shows here).
    pub loadavg: (String, String),
}

fn med_u64(v: &[u64]) -> Option<f64> {
    median(v.iter().map(|x| *x as f64).collect())
}

fn max_u64(v: &[u64]) -> Option<f64> {
    v.iter().max().map(|x| *x as f64)
}

/// A cell for one tool's median (or why there is none).
fn cell(s: Option<&Series>, f: impl Fn(&Sample) -> f64, fmt: impl Fn(Option<f64>) -> String) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.skipped.is_some() => "skipped".into(),
        Some(s) if s.samples.is_empty() => "–".into(),
        Some(s) => {
            let m = s.median_of(&f);
            let mut text = fmt(m);
            let failed = s.failed();
            if failed > 0 && m.is_none() {
                text = format!("FAILED ({})", s.samples[0].status);
            } else if failed > 0 {
                text.push_str(&format!(" ⚠{failed}/{} failed", s.samples.len()));
            }
            if s.samples.len() < 3 {
                text.push_str(&format!(
                    " ({} run{})",
                    s.samples.len(),
                    if s.samples.len() == 1 { "" } else { "s" }
                ));
            }
            text
        }
    }
}

fn ratio_of(sc: &Scenario, peer: Tool, f: impl Fn(&Sample) -> f64) -> Option<f64> {
    let (a, b) = (sc.get(Tool::Rjob)?, sc.get(peer)?);
    if b.skipped.is_some() {
        return None;
    }
    paired_ratio(a, b, f)
}

fn ratio_cell(sc: &Scenario, peer: Tool, f: impl Fn(&Sample) -> f64) -> String {
    match sc.get(peer) {
        Some(s) if s.skipped.is_some() => "skipped".into(),
        _ => fmt_ratio(ratio_of(sc, peer, f)),
    }
}

fn wall(s: &Sample) -> f64 {
    s.wall_s
}
fn cpu(s: &Sample) -> f64 {
    s.cpu_s
}
fn total_cpu(s: &Sample) -> f64 {
    s.cpu_s + s.target_cpu_s.unwrap_or(0.0)
}
fn target_cpu(s: &Sample) -> f64 {
    s.target_cpu_s.unwrap_or(f64::NAN)
}
fn rss(s: &Sample) -> f64 {
    s.maxrss_kib as f64
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "mem_gib": (mem as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": first_line(Command::new("uname").arg("-sr")),
    })
}

pub fn render(b: &Bench, argv: &[String]) -> (String, Value) {
    let s = &b.settings;
    let mut md = String::new();
    let versions = json!({
        "rjob": first_line(Command::new(b.bin.join("rjob")).arg("--version")),
        "rjob_commit": first_line(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])),
        "pdsh": b.peers.pdsh.as_ref().ok().and_then(|_| first_line(Command::new("pdsh").arg("-V"))),
        "ssh": b.sshds.as_ref().and_then(|_| first_line(Command::new("ssh").arg("-V"))),
        "ansible": b.peers.ansible.as_ref().ok().and_then(|a| first_line(Command::new(a).arg("--version"))),
    });
    let m = machine();
    let _ = writeln!(md, "# rjob benchmark\n");
    let _ = writeln!(
        md,
        "`cargo run --release -p rjob-bench -- {}` — {} CPUs ({}), {} GiB, {}; RLIMIT_NOFILE {} → {}; {:.0} s in all.\n",
        argv.join(" "),
        m["cpus"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["mem_gib"],
        m["kernel"].as_str().unwrap_or(""),
        b.memory.nofile.0,
        b.memory.nofile.1,
        b.started.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Load average (/proc/loadavg) at the start: `{}`, at the end: `{}`.\n",
        b.memory.loadavg.0, b.memory.loadavg.1
    );
    let _ = writeln!(
        md,
        "Versions: {}; pdsh: {}; {}; ansible: {}.\n",
        versions["rjob"].as_str().unwrap_or("rjob ?"),
        versions["pdsh"].as_str().unwrap_or("–"),
        versions["ssh"].as_str().unwrap_or("ssh –"),
        versions["ansible"].as_str().unwrap_or("–"),
    );
    let _ = writeln!(
        md,
        "Medians of {} runs (pdsh: {}; ansible, much the slowest: {} — fewer runs to keep the benchmark's length reasonable; a cell says so when it has fewer than 3 runs). Ratios are rjob/peer computed pair by pair (run i of rjob over run i of the peer, then the median); for times, below 1 means rjob is faster. Runs are interleaved (rjob, floor, pdsh, ansible, then the next run). Agents and sshds listen on N distinct loopback addresses (127.0.0.2 …); sshd is OpenSSH with ed25519 keys, 16 addresses per sshd process; ansible starts cold every run (fresh ControlPersist directory, masters closed after the run). CPU is user+sys of the controller process and the children it reaped (wait4): pdsh includes its ssh clients, ansible its ssh clients and forks. \"targets\" CPU is what the agents or sshds (and the processes they reaped) used meanwhile.\n",
        s.runs,
        s.pdsh_runs,
        s.sizes.iter().map(|n| format!("{} at N={n}", s.ansible_runs_for(*n))).collect::<Vec<_>>().join(", ")
    );
    for (name, r) in [
        ("pdsh", b.peers.pdsh.as_ref().err()),
        ("ansible", b.peers.ansible.as_ref().err()),
    ] {
        if let Some(why) = r {
            let _ = writeln!(md, "> **{name}: {why}** — its columns are empty.\n");
        }
    }

    // Fan-out: wall.
    let fan: Vec<&Scenario> = b.scenarios.iter().filter(|sc| sc.kind == "fanout").collect();
    let _ = writeln!(md, "## Fan-out: wall time\n");
    let _ = writeln!(
        md,
        "| N | command | throttle | rjob | floor (local spawns) | rjob/floor | pdsh -R ssh | rjob/pdsh | ansible | rjob/ansible |"
    );
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for sc in &fan {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.hosts,
            sc.script,
            sc.throttle,
            cell(sc.get(Tool::Rjob), wall, fmt_time),
            cell(sc.get(Tool::Floor), wall, fmt_time),
            ratio_cell(sc, Tool::Floor, wall),
            cell(sc.get(Tool::Pdsh), wall, fmt_time),
            ratio_cell(sc, Tool::Pdsh, wall),
            cell(sc.get(Tool::Ansible), wall, fmt_time),
            ratio_cell(sc, Tool::Ansible, wall),
        );
    }
    // Fan-out: CPU.
    let _ = writeln!(md, "\n## Fan-out: CPU (user+sys)\n");
    let _ = writeln!(
        md,
        "| N | command | throttle | rjob | agents | pdsh+ssh | sshd | rjob/pdsh | ansible | sshd | rjob/ansible | rjob+agents / pdsh+sshd | floor |"
    );
    let _ = writeln!(
        md,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for sc in &fan {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.hosts,
            sc.script,
            sc.throttle,
            cell(sc.get(Tool::Rjob), cpu, fmt_time),
            cell(sc.get(Tool::Rjob), target_cpu, fmt_time),
            cell(sc.get(Tool::Pdsh), cpu, fmt_time),
            cell(sc.get(Tool::Pdsh), target_cpu, fmt_time),
            ratio_cell(sc, Tool::Pdsh, cpu),
            cell(sc.get(Tool::Ansible), cpu, fmt_time),
            cell(sc.get(Tool::Ansible), target_cpu, fmt_time),
            ratio_cell(sc, Tool::Ansible, cpu),
            ratio_cell(sc, Tool::Pdsh, total_cpu),
            cell(sc.get(Tool::Floor), cpu, fmt_time),
        );
    }

    // Throughput.
    let tp: Vec<&Scenario> = b.scenarios.iter().filter(|sc| sc.kind == "throughput").collect();
    let _ = writeln!(
        md,
        "\n## Output throughput at the controller (MB = 10^6 bytes of script output; stdout to /dev/null)\n"
    );
    let _ = writeln!(
        md,
        "| hosts × output | rjob MB/s | rjob wall | rjob CPU | rjob peak RSS | agent peak RSS (max) | pdsh MB/s | rjob/pdsh | pdsh peak RSS | ansible MB/s | rjob/ansible | ansible peak RSS |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for sc in &tp {
        let bytes = sc.total_bytes() as f64;
        let mbps = move |x: &Sample| bytes / 1e6 / x.wall_s;
        let fmt_mbps = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into());
        let tpr = |peer: Tool| match sc.get(peer) {
            None => "–".to_string(),
            Some(p) if p.skipped.is_some() => "skipped".into(),
            _ => fmt_tp_ratio(ratio_of(sc, peer, mbps)),
        };
        let agent_peak = sc
            .get(Tool::Rjob)
            .map(|s| fmt_mib(med_u64(&s.agent_peak_max_kib)))
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} × {} MB | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sc.hosts,
            sc.bytes_per_host / 1_000_000,
            cell(sc.get(Tool::Rjob), mbps, fmt_mbps),
            cell(sc.get(Tool::Rjob), wall, fmt_time),
            cell(sc.get(Tool::Rjob), cpu, fmt_time),
            cell(sc.get(Tool::Rjob), rss, fmt_mib),
            agent_peak,
            cell(sc.get(Tool::Pdsh), mbps, fmt_mbps),
            tpr(Tool::Pdsh),
            cell(sc.get(Tool::Pdsh), rss, fmt_mib),
            cell(sc.get(Tool::Ansible), mbps, fmt_mbps),
            tpr(Tool::Ansible),
            cell(sc.get(Tool::Ansible), rss, fmt_mib),
        );
    }

    // Memory.
    let max_n = s.sizes.iter().max().copied().unwrap_or(0);
    let _ = writeln!(md, "\n## Memory\n");
    let _ = writeln!(md, "| what | median | max |\n|---|---:|---:|");
    let mem = &b.memory;
    let _ = writeln!(
        md,
        "| agent RSS idle, fresh ({} agents) | {} | {} |",
        mem.agent_idle_fresh_kib.len(),
        fmt_mib(med_u64(&mem.agent_idle_fresh_kib)),
        fmt_mib(max_u64(&mem.agent_idle_fresh_kib))
    );
    let _ = writeln!(
        md,
        "| agent RSS idle, after all runs | {} | {} |",
        fmt_mib(med_u64(&mem.agent_idle_after_kib)),
        fmt_mib(max_u64(&mem.agent_idle_after_kib))
    );
    for sc in b.scenarios.iter().filter(|sc| sc.hosts == max_n || sc.hosts == 1) {
        let Some(r) = sc.get(Tool::Rjob) else { continue };
        if sc.kind == "fanout" && sc.throttle != sc.hosts {
            continue;
        }
        let what = if sc.kind == "fanout" {
            format!("N={} `{}` throttle {}", sc.hosts, sc.script, sc.throttle)
        } else {
            format!("{} host(s) × {} MB", sc.hosts, sc.bytes_per_host / 1_000_000)
        };
        let _ = writeln!(
            md,
            "| agent peak RSS under load, {what} (per run: max over agents) | {} | {} |",
            fmt_mib(med_u64(&r.agent_peak_max_kib)),
            fmt_mib(max_u64(&r.agent_peak_max_kib))
        );
        let _ = writeln!(
            md,
            "| controller (rjob) peak RSS, {what} | {} | {} |",
            fmt_mib(r.median_of(rss)),
            fmt_mib(r.ok().map(rss).reduce(f64::max))
        );
    }
    let big = b
        .scenarios
        .iter()
        .find(|sc| sc.kind == "throughput" && sc.hosts == 1 && sc.bytes_per_host == s.big_bytes);
    let huge = b
        .scenarios
        .iter()
        .find(|sc| sc.kind == "throughput" && sc.hosts == 1 && sc.bytes_per_host == s.huge_bytes);
    let rss_big = big
        .and_then(|sc| sc.get(Tool::Rjob))
        .and_then(|r| r.median_of(rss));
    let rss_huge = huge
        .and_then(|sc| sc.get(Tool::Rjob))
        .and_then(|r| r.median_of(rss));
    let _ = writeln!(
        md,
        "\nController peak RSS, one host: {} MB of output → **{}**, {} MB → **{}**{}.\n",
        s.big_bytes / 1_000_000,
        fmt_mib(rss_big),
        s.huge_bytes / 1_000_000,
        fmt_mib(rss_huge),
        match (rss_big, rss_huge) {
            (Some(a), Some(h)) => format!(" (ratio {:.2})", h / a),
            _ => String::new(),
        }
    );

    // Targets.
    let _ = writeln!(md, "## Targets (issue #6)\n");
    let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
    let mut targets = Vec::new();
    let key = fan
        .iter()
        .find(|sc| sc.hosts == max_n && sc.script == "true" && sc.throttle == max_n);
    let tag = if max_n == 256 {
        String::new()
    } else {
        format!(" (N={max_n}: 256 not measured)")
    };
    let mut target = |name: String, measured: Option<f64>, text: String, ok: Option<bool>| {
        let met = match ok {
            Some(true) => "yes",
            Some(false) => "**NO**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {name} | {text} | {met} |");
        targets.push(json!({"target": name, "measured": measured, "met": ok}));
    };
    let r_pdsh = key.and_then(|sc| ratio_of(sc, Tool::Pdsh, wall));
    target(
        format!("256 hosts `true` throttle 256: rjob ≥10x faster than pdsh{tag}"),
        r_pdsh,
        r_pdsh
            .map(|r| format!("{:.1}x (rjob/pdsh {r:.3})", 1.0 / r))
            .unwrap_or("–".into()),
        r_pdsh.map(|r| r <= 0.1),
    );
    let r_ans = key.and_then(|sc| ratio_of(sc, Tool::Ansible, wall));
    target(
        format!("256 hosts `true` throttle 256: rjob ≥50x faster than ansible{tag}"),
        r_ans,
        r_ans
            .map(|r| format!("{:.1}x (rjob/ansible {r:.4})", 1.0 / r))
            .unwrap_or("–".into()),
        r_ans.map(|r| r <= 0.02),
    );
    let r_floor = key.and_then(|sc| ratio_of(sc, Tool::Floor, wall));
    target(
        format!("256 hosts `true` throttle 256: within 3x of the local spawn floor{tag}"),
        r_floor,
        r_floor
            .map(|r| format!("{r:.1}x the floor"))
            .unwrap_or("–".into()),
        r_floor.map(|r| r <= 3.0),
    );
    let tp1 = big.and_then(|sc| {
        let bytes = sc.total_bytes() as f64;
        sc.get(Tool::Rjob)?.median_of(|x| bytes / 1e6 / x.wall_s)
    });
    target(
        "≥200 MB/s from one agent to the controller".into(),
        tp1,
        tp1.map(|v| format!("{v:.1} MB/s ({} MB)", s.big_bytes / 1_000_000))
            .unwrap_or("–".into()),
        tp1.map(|v| v >= 200.0),
    );
    let idle = max_u64(&mem.agent_idle_fresh_kib)
        .into_iter()
        .chain(max_u64(&mem.agent_idle_after_kib))
        .reduce(f64::max);
    target(
        "agent idle RSS < 15 MB".into(),
        idle,
        idle.map(|k| {
            format!(
                "max {:.1} MiB over all agents, fresh and after the runs",
                k / 1024.0
            )
        })
        .unwrap_or("–".into()),
        idle.map(|k| k * 1024.0 < 15e6),
    );
    let flat = match (rss_big, rss_huge) {
        (Some(a), Some(h)) => Some(h / a),
        _ => None,
    };
    target(
        "controller RSS flat as output grows".into(),
        flat,
        flat.map(|f| {
            format!(
                "{} at {} MB vs {} at {} MB ({f:.2}x for {}x the output)",
                fmt_mib(rss_big),
                s.big_bytes / 1_000_000,
                fmt_mib(rss_huge),
                s.huge_bytes / 1_000_000,
                s.huge_bytes / s.big_bytes.max(1)
            )
        })
        .unwrap_or("–".into()),
        flat.map(|f| f <= 1.25),
    );

    let json = json!({
        "command": format!("cargo run --release -p rjob-bench -- {}", argv.join(" ")),
        "machine": m,
        "versions": versions,
        "settings": s,
        "elapsed_s": b.started.elapsed().as_secs_f64(),
        "peers": {
            "pdsh": b.peers.pdsh.as_ref().err(),
            "ansible": b.peers.ansible.as_ref().err(),
        },
        "scenarios": b.scenarios.iter().map(|sc| {
            let mut v = serde_json::to_value(sc).unwrap_or(Value::Null);
            let med = |series: &Series| json!({
                "wall_s": series.median_of(wall),
                "cpu_s": series.median_of(cpu),
                "target_cpu_s": series.median_of(target_cpu),
                "maxrss_kib": series.median_of(rss),
                "failed": series.failed(),
            });
            v["medians"] = sc.series.iter().map(|se| (se.tool.name().to_string(), med(se))).collect::<serde_json::Map<_, _>>().into();
            let mut ratios = serde_json::Map::new();
            for peer in [Tool::Floor, Tool::Pdsh, Tool::Ansible] {
                if sc.get(peer).is_some() {
                    ratios.insert(format!("rjob/{}", peer.name()), json!({
                        "wall": ratio_of(sc, peer, wall),
                        "cpu": ratio_of(sc, peer, cpu),
                        "cpu_with_targets": ratio_of(sc, peer, total_cpu),
                    }));
                }
            }
            v["paired_ratios"] = ratios.into();
            v
        }).collect::<Vec<_>>(),
        "memory": mem,
        "targets": targets,
    });
    let _ = stats::median; // (used above through helpers)
    (md, json)
}
