//! `rjob-bench daemons`: the fan-out time of `rjob invoke --as-job` (then `rjob wait`) over N
//! real agents, with one daemon on its embedded SQLite store, one daemon on PostgreSQL, and
//! several daemons sharing one PostgreSQL store, side by side in one run.
//!
//! Every setup runs at once, idle but for its heartbeats while another is measured, so the
//! runs can interleave: run i of each setup follows run i of the one before, the order
//! rotating run by run, so that a slow moment of a shared machine falls on all of them. The
//! job is created through the first daemon of a setup; the others claim their share of its
//! children from the store (at most ceil(throttle / live daemons) each). A run counts only
//! when `rjob wait` ends 0 and every child ended Completed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde::Serialize;

use crate::fleet::{self, Agents};
use crate::jobd::JobDaemon;
use crate::procs;
use crate::stats::{fmt_time, median};

/// rjob-bench daemons: `rjob invoke --as-job` + `rjob wait` over N agents, with 1 daemon on
/// SQLite, 1 on PostgreSQL and D daemons sharing one PostgreSQL store.
#[derive(Debug, Parser, Serialize)]
#[command(name = "rjob-bench daemons")]
pub struct DaemonsOpts {
    /// Fleet sizes N
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    pub sizes: Vec<usize>,
    /// Daemon counts on one PostgreSQL store
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub daemons: Vec<usize>,
    /// Runs per setup and size; medians are reported
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The job's throttle limit [default: N, every host at once]
    #[arg(long)]
    pub throttle_limit: Option<usize>,
    /// The script block every host runs
    #[arg(long, default_value = "true")]
    pub script: String,
    /// Port of every agent (loopback addresses 127.0.0.2, ...)
    #[arg(long, default_value_t = 16443)]
    pub port: u16,
    /// Use the rjob and rjob-agent in DIR instead of building them
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where daemons.md and daemons.json go [default: bench/results]
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// One way of running the daemons: a store and how many daemons share it.
struct Setup {
    label: String,
    daemons: Vec<JobDaemon>,
    /// The PostgreSQL database, when the store is one.
    db: Option<usize>,
}

#[derive(Debug, Default, Serialize)]
struct Row {
    setup: String,
    hosts: usize,
    throttle: usize,
    /// Wall time of `invoke --as-job` + `wait`, seconds, one per good run.
    wall_s: Vec<f64>,
    median_s: Option<f64>,
    /// Runs that failed (a non-zero exit, or a child not Completed), with why.
    failures: Vec<String>,
    /// Children each daemon ran, in the last good run (several daemons only).
    spread: Vec<i64>,
}

pub fn main(args: &[String]) -> ExitCode {
    let opts = DaemonsOpts::parse_from(args);
    if let Err(e) = procs::install_signal_thread() {
        eprintln!("rjob-bench daemons: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rjob-bench daemons: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &DaemonsOpts) -> Result<()> {
    let started = Instant::now();
    let Some(&max_n) = opts.sizes.iter().max() else {
        bail!("--sizes is empty: give fleet sizes, e.g. --sizes 256,1024");
    };
    if max_n == 0 || max_n > 60_000 {
        bail!("--sizes: each size must be 1 to 60000 hosts");
    }
    if opts.daemons.iter().any(|&d| d == 0 || d > 16) {
        bail!("--daemons: each count must be 1 to 16");
    }
    let (_, nofile) = procs::raise_nofile();
    eprintln!("==> RLIMIT_NOFILE {nofile}");
    let bin = crate::bins::build_bins(opts.bin_dir.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("rjob-bench-daemons-")
        .tempdir_in("/tmp")?;
    let root = tmp.path().to_path_buf();
    let ips = fleet::loopback_addrs(max_n);
    eprintln!("==> starting {max_n} agents, port {}", opts.port);
    let t = Instant::now();
    let agents = Agents::start(&bin, &root.join("agents"), &ips, opts.port)?;
    eprintln!("    up in {:.1}s", t.elapsed().as_secs_f64());
    let cluster = rjob_tests::pg::Cluster::start().context("a throwaway PostgreSQL cluster")?;
    let mut dbs = Vec::new();
    let mut setups = vec![Setup {
        label: "SQLite, 1 daemon".into(),
        daemons: vec![JobDaemon::start(&bin, &agents.pki, &root.join("sqlite"))?],
        db: None,
    }];
    for &d in &opts.daemons {
        let db = cluster.database()?;
        let url = db.url();
        let mut daemons = Vec::new();
        for i in 0..d {
            let dir = root.join(format!("pg{d}-{i}"));
            daemons.push(JobDaemon::start_with(
                &bin,
                &agents.pki,
                &dir,
                &["--store", &url],
            )?);
        }
        dbs.push(db);
        setups.push(Setup {
            label: format!("PostgreSQL, {d} daemon{}", if d == 1 { "" } else { "s" }),
            daemons,
            db: Some(dbs.len() - 1),
        });
    }
    for s in &setups {
        if let Some(db) = s.db {
            wait_registered(&dbs[db], s.daemons.len())?;
        }
    }
    let mut rows = Vec::new();
    for &n in &opts.sizes {
        let k = opts.throttle_limit.unwrap_or(n).max(1);
        let mut by_setup: Vec<Row> = setups
            .iter()
            .map(|s| Row {
                setup: s.label.clone(),
                hosts: n,
                throttle: k,
                ..Row::default()
            })
            .collect();
        // One untimed warm-up of each setup.
        for (i, s) in setups.iter().enumerate() {
            let _ = once(&bin, &agents, s, n, k, &opts.script, &format!("warm-{n}-{i}"));
        }
        for run in 0..opts.runs {
            for j in 0..setups.len() {
                let i = (j + run) % setups.len();
                let s = &setups[i];
                let name = format!("bench-{n}-{i}-{run}");
                match once(&bin, &agents, s, n, k, &opts.script, &name) {
                    Ok(wall) => {
                        eprintln!("    N={n} {:<24} run {run}: {}", s.label, fmt_time(Some(wall)));
                        by_setup[i].wall_s.push(wall);
                        if let Some(db) = s.db.filter(|_| s.daemons.len() > 1) {
                            by_setup[i].spread = spread(&dbs[db], &name);
                        }
                    }
                    Err(e) => {
                        eprintln!("    N={n} {:<24} run {run}: FAILED: {e:#}", s.label);
                        by_setup[i].failures.push(format!("{e:#}"));
                    }
                }
                remove(&bin, &agents, s, &name);
            }
        }
        for mut r in by_setup {
            r.median_s = median(r.wall_s.clone());
            rows.push(r);
        }
    }
    report(opts, &rows, started.elapsed())
}

/// One measured run: `invoke --as-job` through the setup's first daemon, then `wait`.
fn once(
    bin: &std::path::Path,
    agents: &Agents,
    s: &Setup,
    n: usize,
    k: usize,
    script: &str,
    name: &str,
) -> Result<f64> {
    let jd = &s.daemons[0];
    let mut invoke = jd.rjob(bin, &agents.pki);
    invoke
        .args(["invoke", "--as-job", "--job-name", name, "--throttle-limit"])
        .arg(k.to_string())
        .arg("-H")
        .arg(agents.hosts(n))
        .args(["--script", script]);
    let mut wait = jd.rjob(bin, &agents.pki);
    wait.args(["wait", "--quiet", name]);
    let errf = |what: &str| jd.state_dir.join(format!("{name}-{what}.stderr"));
    let timeout = Duration::from_secs(600);
    let a = procs::measure(&mut invoke, &errf("invoke"), None, timeout)?;
    let b = procs::measure(&mut wait, &errf("wait"), None, timeout)?;
    if !a.ok || !b.ok {
        let why = std::fs::read_to_string(errf(if a.ok { "wait" } else { "invoke" })).unwrap_or_default();
        bail!("invoke: {}, wait: {}: {}", a.status, b.status, why.trim());
    }
    let mut jobs = jd.rjob(bin, &agents.pki);
    jobs.args(["jobs", "--output", "json", name]);
    let text = procs::run_ok(&mut jobs)?;
    // An array of the jobs named: this one.
    let jobs: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("rjob jobs --output json: {text:.400}"))?;
    let job = &jobs[0];
    let children = job["children"].as_array().map(Vec::as_slice).unwrap_or_default();
    let completed = children.iter().filter(|c| c["state"] == "Completed").count();
    if job["state"] != "Completed" || completed != n {
        bail!(
            "the job ended {}, {completed} of {n} children Completed",
            job["state"]
        );
    }
    Ok(a.wall_s + b.wall_s)
}

fn remove(bin: &std::path::Path, agents: &Agents, s: &Setup, name: &str) {
    let mut rm = s.daemons[0].rjob(bin, &agents.pki);
    rm.args(["remove", "--force", name]);
    let _ = procs::run_ok(&mut rm);
}

/// Waits until `want` daemons have registered in the store.
fn wait_registered(db: &rjob_tests::pg::Database<'_>, want: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = db
            .psql("SELECT count(*) FROM daemons")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if live >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{live} of {want} daemons registered in {}", db.name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many children of job `name` each daemon wrote last, largest first.
fn spread(db: &rjob_tests::pg::Database<'_>, name: &str) -> Vec<i64> {
    let sql = format!(
        "SELECT count(*) FROM children c JOIN jobs j ON j.id = c.job_id WHERE j.name = '{name}' GROUP BY c.written_by ORDER BY 1 DESC"
    );
    db.psql(&sql)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn report(opts: &DaemonsOpts, rows: &[Row], took: Duration) -> Result<()> {
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out_dir)?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut md = format!(
        "# rjob-bench daemons\n\n`rjob-bench {}`: `rjob invoke --as-job --script '{}'` through the first daemon of each setup, then `rjob wait`, over N real agents on loopback; medians of {} runs, setups interleaved run by run. {} in all; load average at the end {}.\n\n| N | throttle | setup | median | runs | children per daemon (last run) | failed runs |\n|---:|---:|---|---:|---|---|---:|\n",
        argv.join(" "),
        opts.script,
        opts.runs,
        fmt_time(Some(took.as_secs_f64())),
        crate::bench::loadavg()
    );
    for r in rows {
        let runs: Vec<String> = r.wall_s.iter().map(|v| fmt_time(Some(*v))).collect();
        let spread: Vec<String> = r.spread.iter().map(ToString::to_string).collect();
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.hosts,
            r.throttle,
            r.setup,
            fmt_time(r.median_s),
            runs.join(", "),
            if spread.is_empty() {
                "–".into()
            } else {
                spread.join(" / ")
            },
            r.failures.len()
        ));
    }
    for r in rows.iter().filter(|r| !r.failures.is_empty()) {
        md.push_str(&format!(
            "\n> N={} {}: {}\n",
            r.hosts,
            r.setup,
            r.failures.join("; ")
        ));
    }
    print!("{md}");
    std::fs::write(out_dir.join("daemons.md"), &md)?;
    let json = serde_json::json!({ "opts": opts, "rows": rows });
    std::fs::write(out_dir.join("daemons.json"), serde_json::to_string_pretty(&json)?)?;
    eprintln!("==> wrote {}", out_dir.join("daemons.md").display());
    Ok(())
}
