//! rjob-bench: rjob against real agents on loopback, side by side with pdsh over ssh,
//! ansible ad-hoc, and the local spawn floor; `rjob-bench store`: job store ingest, SQLite and
//! PostgreSQL side by side; `rjob-bench daemons`: `--as-job` fan-out with one and several
//! daemons; `rjob-bench swarm`: thousands of simulated agents dialled out to one daemon.
//! See bench/README.md.
//!
//! This file is the command line: it parses, sets up the fleet, runs the scenarios in order
//! and writes the report.

mod bench;
mod bins;
mod commands;
mod daemons;
mod dialled;
mod fleet;
mod flood;
mod flood_opts;
mod flood_report;
mod flood_worker;
mod jobd;
mod opts;
mod peers;
mod procs;
mod report;
mod runner;
mod scenarios;
mod serve_only;
mod session;
mod ssh_user;
mod ssh_warm;
mod stats;
mod store_ingest;
mod swarm;
mod swarm_agents;
mod swarm_certs;
mod swarm_measure;
mod swarm_report;

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Result};
use clap::Parser;

use bench::{loadavg, Bench};
use opts::{Opts, Settings};
use peers::detect_peers;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("__floor") {
        let n = argv.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
        let k = argv.get(3).and_then(|v| v.parse().ok()).unwrap_or(1);
        let script = argv.get(4).cloned().unwrap_or_else(|| "true".into());
        return ExitCode::from(procs::floor_main(n, k, &script) as u8);
    }
    match argv.get(1).map(String::as_str) {
        Some("handshake-flood") => return flood::main(&argv[1..]),
        Some("__flood-worker") => return flood_worker::main(&argv[2..]),
        Some("store") => return store_ingest::main(&argv[1..]),
        Some("daemons") => return daemons::main(&argv[1..]),
        Some("swarm") => return swarm::main(&argv[1..]),
        _ => {}
    }
    let opts = Opts::parse();
    if let Err(e) = procs::install_signal_thread() {
        eprintln!("rjob-bench: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rjob-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: Opts) -> Result<()> {
    let settings = Settings::from(&opts);
    let Some(&max_n) = settings.sizes.iter().max() else {
        bail!("--sizes is empty");
    };
    if max_n > 60_000 {
        bail!("at most 60000 hosts");
    }
    let (nofile_before, nofile) = procs::raise_nofile();
    eprintln!(
        "==> RLIMIT_NOFILE: {nofile_before} -> {nofile} (inherited by agents, sshds, rjob, pdsh, ansible)"
    );
    let need = 2 * max_n as u64 * 8 + 256;
    if nofile < need {
        eprintln!(
            "rjob-bench: WARNING: open-file limit {nofile} may be too low for {max_n} agents + sshds + connections (want {need}); raise the hard limit (ulimit -Hn)"
        );
    }
    if opts.install_peers {
        let script = bins::workspace_root().join("bench/setup-peers.sh");
        eprintln!("==> installing peers: {}", script.display());
        let status = Command::new("bash").arg(&script).status()?;
        if !status.success() {
            eprintln!(
                "rjob-bench: WARNING: {} failed; missing peers will be skipped",
                script.display()
            );
        }
    }
    let bin = bins::build_bins(opts.bin_dir.as_deref())?;
    for b in ["rjob", "rjob-agent"] {
        if !bin.join(b).is_file() {
            bail!("{} is missing", bin.join(b).display());
        }
    }
    if let Some(dir) = &opts.serve_only {
        return serve_only::serve_only(&bin, dir, max_n, opts.port);
    }
    let peers = detect_peers(&opts);
    for (name, r) in [
        ("pdsh", peers.pdsh.as_ref().map(|_| ())),
        ("ansible", peers.ansible.as_ref().map(|_| ())),
    ] {
        if let Err(why) = r {
            eprintln!("rjob-bench: WARNING: {name} column {why}");
        }
    }
    let mut bench = Bench::start(&opts, bin, peers, max_n)?;
    bench.memory.agent_idle_fresh_kib = bench.agent_rss(max_n);
    bench.memory.nofile = (nofile_before, nofile);
    bench.memory.loadavg.0 = loadavg();
    // One untimed warm-up against every agent (page cache, first-use allocations).
    let warm = bench.fanout_scenario(max_n, "true", max_n, true)?;
    drop(warm);

    for &n in &settings.sizes {
        let throttles: Vec<usize> = if n > 32 { vec![n, 32] } else { vec![n] };
        for script in ["true", "uname -a"] {
            for &k in &throttles {
                let sc = bench.fanout_scenario(n, script, k, false)?;
                bench.scenarios.push(sc);
            }
        }
        let sc = bench.throughput_scenario(n, settings.per_host_bytes, true)?;
        bench.scenarios.push(sc);
    }
    let sc = bench.throughput_scenario(1, settings.big_bytes, true)?;
    bench.scenarios.push(sc);
    if settings.huge_bytes > 0 {
        let sc = bench.throughput_scenario(1, settings.huge_bytes, false)?;
        bench.scenarios.push(sc);
    }
    bench.memory.agent_idle_after_kib = bench.agent_rss(max_n);
    bench.memory.loadavg.1 = loadavg();
    write_report(&bench, &opts)
}

/// Prints the markdown report and writes it, with the JSON, to the results directory.
fn write_report(bench: &Bench, opts: &Opts) -> Result<()> {
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out_dir)?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (md, json) = report::render(bench, &argv);
    print!("{md}");
    std::fs::write(out_dir.join("latest.md"), &md)?;
    std::fs::write(out_dir.join("latest.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!(
        "==> wrote {} and {} ({:.0}s in all)",
        out_dir.join("latest.md").display(),
        out_dir.join("latest.json").display(),
        bench.started.elapsed().as_secs_f64()
    );
    Ok(())
}
