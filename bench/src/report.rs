//! The report: markdown tables and JSON, with the targets checked.

mod cells;
mod fanout;
mod memory;
mod targets;
mod throughput;

use std::fmt::Write as _;
use std::process::Command;

use serde_json::{json, Value};

use crate::bench::Bench;
use crate::procs::first_line;
use crate::stats::{Scenario, Series, Tool};
use cells::{cpu, ratio_of, rss, target_cpu, total_cpu, wall};

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

/// How the ssh peers' side was set up (the report says it: it decides their figures).
fn ssh_setup(b: &Bench) -> String {
    let Some(s) = b.sshds.as_ref() else {
        return "No sshd endpoints (no ssh peer measured).".into();
    };
    format!(
        "ssh peers: OpenSSH sshd with ed25519 keys, {} sshd process{} ({} address{} each), `MaxStartups 4096`, `MaxSessions 4096` (the defaults, 10:30:100 and 10, throttle a fan-out to many hosts of one sshd and refuse sessions over one master), `UsePAM no`; logins as the user `{}` with a stock home (/etc/skel), not the benchmark's own user, whose rc files would run at every login in one shared home directory. pdsh -R ssh and ansible start cold every run (ansible: a fresh ControlPersist directory, masters closed after the run); ssh-warm is pdsh -R exec running ssh over one ControlMaster connection per host, opened before the timing and kept (`ControlPersist yes`).",
        s.daemons.len(),
        if s.daemons.len() == 1 { "" } else { "es" },
        s.per_sshd,
        if s.per_sshd == 1 { "" } else { "es" },
        s.user
    )
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
        "Medians of {} runs (pdsh: {}; ansible, much the slowest: {} — fewer runs to keep the benchmark's length reasonable; a cell says so when it has fewer than 3 runs). Ratios are rjob/peer computed pair by pair (run i of rjob over run i of the peer, then the median); for times, below 1 means rjob is faster. Runs are interleaved (rjob, floor, pdsh, ssh-warm, ansible, then the next run). Agents and sshds listen on N distinct loopback addresses (127.0.0.2 …). CPU is user+sys of the controller process and the children it reaped (wait4): pdsh includes its ssh clients, ansible its ssh clients and forks; --as-job adds the daemon's CPU. \"targets\" CPU is what the agents or sshds (and the processes they reaped) used meanwhile.\n\n{}\n",
        s.runs,
        s.pdsh_runs,
        s.sizes.iter().map(|n| format!("{} at N={n}", s.ansible_runs_for(*n))).collect::<Vec<_>>().join(", "),
        ssh_setup(b)
    );
    for (name, r) in [
        ("pdsh", b.peers.pdsh.as_ref().err()),
        ("ansible", b.peers.ansible.as_ref().err()),
    ] {
        if let Some(why) = r {
            let _ = writeln!(md, "> **{name}: {why}** — its columns are empty.\n");
        }
    }

    let fan: Vec<&Scenario> = b.scenarios.iter().filter(|sc| sc.kind == "fanout").collect();
    fanout::tables(&mut md, &fan);
    let tp: Vec<&Scenario> = b.scenarios.iter().filter(|sc| sc.kind == "throughput").collect();
    throughput::table(&mut md, &tp);
    memory::tables(&mut md, b);
    let targets = targets::table(&mut md, b);
    let mem = &b.memory;

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
            for peer in [Tool::Floor, Tool::PipeFloor, Tool::Pdsh, Tool::SshWarm, Tool::Ansible] {
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
        "ssh_setup": ssh_setup(b),
        "targets": targets,
    });
    (md, json)
}
