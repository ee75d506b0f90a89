//! The swarm measurement: for each run a fresh daemon (or `--daemons` of them on one
//! PostgreSQL store), `rjob serve --agent-listen`, and a fresh swarm in processes of its own
//! (`rjob-bench swarm --connect`, one per daemon, the agents split between them). Timed:
//! - the connects: from the moment every agent is built and told to dial until the
//!   daemons' `rjob daemon status` count all N dialled in;
//! - the daemons' VmRSS before the swarm and after it connected, per agent;
//! - `--invokes` times `rjob invoke --as-job -H swarm[00001-N] --throttle-limit N --script
//!   true`, then `rjob wait` (every child Completed, its output in the store).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use crate::jobd::JobDaemon;
use crate::procs;
use crate::swarm::SwarmOpts;
use crate::swarm_certs::{host_range, pki_dir};

/// Longest wait for the swarm to connect, or for one invoke or wait.
const PATIENCE: Duration = Duration::from_secs(900);

#[derive(Debug, Serialize, Default)]
pub struct Invoke {
    pub invoke_s: f64,
    pub wait_s: f64,
    pub total_s: f64,
    /// CPU seconds over the invoke and the wait: the daemons together, the swarm processes
    /// together (the simulator: it competes with the daemons for the same cores), and the
    /// PostgreSQL cluster (its postmaster and backends; `None` on SQLite).
    pub daemon_cpu_s: f64,
    pub swarm_cpu_s: f64,
    pub store_cpu_s: Option<f64>,
    pub ok: bool,
    pub status: String,
}

#[derive(Debug, Serialize, Default)]
pub struct RunResult {
    /// Building every agent (certificates read, services, TLS configs), per swarm process.
    pub build_s: Vec<f64>,
    pub connect_s: Option<f64>,
    pub daemon_rss_before_kib: Vec<u64>,
    pub daemon_rss_after_kib: Vec<u64>,
    /// Sum over the daemons of (after - before), divided by N.
    pub daemon_kib_per_agent: Option<f64>,
    /// The swarm processes' VmRSS together, divided by N.
    pub swarm_kib_per_agent: Option<f64>,
    pub invokes: Vec<Invoke>,
}

/// One swarm process.
struct Swarm {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Kept open: the swarm writes to it.
    _stdout: BufReader<std::process::ChildStdout>,
    build_s: f64,
}

impl Drop for Swarm {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        procs::unregister(self.child.id() as i32);
    }
}

fn listen_addr(opts: &SwarmOpts, run: usize, daemon: usize) -> String {
    format!("127.0.9.{}:{}", run % 250 + 1, opts.port + daemon as u16)
}

/// Starts a swarm of `agents` agents from number `first`, dialling `addr`, and waits until
/// it is built.
fn start_swarm(opts: &SwarmOpts, first: usize, agents: usize, addr: &str, log: &Path) -> Result<Swarm> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("swarm")
        .arg("--agents")
        .arg(agents.to_string())
        .arg("--first")
        .arg(first.to_string())
        .arg("--connect")
        .arg(addr)
        .arg("--certs")
        .arg(&opts.certs)
        .arg("--wait-for-go")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?);
    procs::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().context("starting the swarm")?;
    procs::register(child.id() as i32, false);
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("the swarm's stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    let mut swarm = Swarm {
        child,
        stdin,
        _stdout: stdout,
        build_s: 0.0,
    };
    let mut words = line.split_whitespace();
    if words.next() != Some("ready") {
        bail!(
            "the swarm did not start: {line:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    swarm.build_s = words.nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    Ok(swarm)
}

/// How many agents are dialled in to this daemon (`rjob daemon status`: "agents N dialled in").
fn connected(daemon: &JobDaemon, bin: &Path, pki: &Path) -> usize {
    let out = daemon
        .rjob(bin, pki)
        .args(["daemon", "status"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return 0 };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("agents"))
        .and_then(|rest| rest.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn timed(cmd: &mut Command) -> Result<(f64, bool, String)> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let secs = started.elapsed().as_secs_f64();
    let said = String::from_utf8_lossy(&out.stderr);
    let tail: String = said.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
    Ok((secs, out.status.success(), format!("{}: {tail}", out.status)))
}

/// Environment variable: a folder where each run's daemon and swarm logs are copied before
/// the run's temporary folder goes (the daemons log at `RJOB_BENCH_LOG`, default `warn`).
const KEEP_LOGS_ENV: &str = "RJOB_BENCH_KEEP_LOGS";

fn keep_logs(tmp: &Path, run: usize, daemons: usize) {
    let Some(dir) = std::env::var_os(KEEP_LOGS_ENV).map(std::path::PathBuf::from) else {
        return;
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("    cannot keep the logs in {}: {e}", dir.display());
        return;
    }
    for d in 0..daemons {
        for (from, to) in [
            (
                tmp.join(format!("state{d}/bench-serve.log")),
                format!("run{run}-daemon{d}.log"),
            ),
            (
                tmp.join(format!("swarm{d}.log")),
                format!("run{run}-swarm{d}.log"),
            ),
        ] {
            if let Err(e) = std::fs::copy(&from, dir.join(&to)) {
                eprintln!("    cannot keep {}: {e}", from.display());
            }
        }
    }
    eprintln!("    logs kept in {}", dir.display());
}

/// One run: daemons, swarm, connects, memory, invokes.
fn one_run(
    opts: &SwarmOpts,
    bin: &Path,
    run: usize,
    store: Option<&str>,
    postmaster: Option<u32>,
) -> Result<RunResult> {
    let n = opts.agents;
    let pki = pki_dir(&opts.certs);
    let tmp = tempfile::Builder::new().prefix("rjob-swarm-run-").tempdir()?;
    let mut daemons = Vec::new();
    for d in 0..opts.daemons {
        let mut extra = vec!["--agent-listen".to_string(), listen_addr(opts, run, d)];
        if let Some(url) = store {
            extra.extend(["--store".to_string(), url.to_string()]);
        }
        daemons.push(JobDaemon::start_with(
            bin,
            &pki,
            &tmp.path().join(format!("state{d}")),
            &extra.iter().map(String::as_str).collect::<Vec<_>>(),
        )?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut result = RunResult {
        daemon_rss_before_kib: daemons
            .iter()
            .map(|d| procs::status_kib(d.daemon.pid(), "VmRSS:"))
            .collect(),
        ..RunResult::default()
    };
    // The agents split between the daemons as evenly as they go.
    let mut swarms = Vec::new();
    let mut first = 1;
    for d in 0..opts.daemons {
        let share = n / opts.daemons + usize::from(d < n % opts.daemons);
        let log = tmp.path().join(format!("swarm{d}.log"));
        eprintln!(
            "==> run {run}: building {share} agents for daemon {d} ({})",
            listen_addr(opts, run, d)
        );
        swarms.push(start_swarm(opts, first, share, &listen_addr(opts, run, d), &log)?);
        first += share;
    }
    result.build_s = swarms.iter().map(|s| s.build_s).collect();
    let started = Instant::now();
    for s in &mut swarms {
        if let Some(stdin) = s.stdin.as_mut() {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
    }
    let mut last = 0;
    while started.elapsed() < PATIENCE {
        last = daemons.iter().map(|d| connected(d, bin, &pki)).sum::<usize>();
        if last >= n {
            result.connect_s = Some(started.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let Some(connect_s) = result.connect_s else {
        bail!("only {last} of {n} agents connected in {PATIENCE:?}");
    };
    eprintln!("    {n} agents connected in {connect_s:.2}s");
    std::thread::sleep(Duration::from_secs(3));
    result.daemon_rss_after_kib = daemons
        .iter()
        .map(|d| procs::status_kib(d.daemon.pid(), "VmRSS:"))
        .collect();
    let grown: i64 = result
        .daemon_rss_after_kib
        .iter()
        .zip(&result.daemon_rss_before_kib)
        .map(|(a, b)| *a as i64 - *b as i64)
        .sum();
    result.daemon_kib_per_agent = Some(grown as f64 / n as f64);
    let swarm_kib: u64 = swarms
        .iter()
        .map(|s| procs::status_kib(s.child.id(), "VmRSS:"))
        .sum();
    result.swarm_kib_per_agent = Some(swarm_kib as f64 / n as f64);
    eprintln!(
        "    daemon RSS {:?} -> {:?} KiB: {:.1} KiB per agent; swarm {:.1} KiB per agent",
        result.daemon_rss_before_kib,
        result.daemon_rss_after_kib,
        grown as f64 / n as f64,
        swarm_kib as f64 / n as f64
    );
    let jd = &daemons[0];
    for k in 0..opts.invokes {
        let name = format!("swarm-{run}-{k}");
        let mut invoke = jd.rjob(bin, &pki);
        invoke
            .args(["invoke", "--as-job", "--job-name", &name, "-H", &host_range(n)])
            .args(["--throttle-limit", &n.to_string(), "--script", "true"]);
        let mut wait = jd.rjob(bin, &pki);
        wait.args(["wait", "--quiet", &name]);
        let daemon_pids: Vec<u32> = daemons.iter().map(|d| d.daemon.pid()).collect();
        let swarm_pids: Vec<u32> = swarms.iter().map(|s| s.child.id()).collect();
        let cpu = || {
            (
                procs::cpu_sum_s(&daemon_pids),
                procs::cpu_sum_s(&swarm_pids),
                postmaster.map(procs::tree_cpu_s),
            )
        };
        let before = cpu();
        let (invoke_s, invoked, said) = timed(&mut invoke)?;
        let (wait_s, waited, waited_said) = timed(&mut wait)?;
        let after = cpu();
        let mut one = Invoke {
            invoke_s,
            wait_s,
            total_s: invoke_s + wait_s,
            daemon_cpu_s: after.0 - before.0,
            swarm_cpu_s: after.1 - before.1,
            store_cpu_s: after.2.zip(before.2).map(|(a, b)| a - b),
            ok: invoked && waited,
            status: format!("invoke {said}; wait {waited_said}"),
        };
        eprintln!(
            "    invoke --as-job {invoke_s:.2}s + wait {wait_s:.2}s = {:.2}s (CPU: daemons {:.2}s, swarm {:.2}s, store {}){}",
            one.total_s,
            one.daemon_cpu_s,
            one.swarm_cpu_s,
            one.store_cpu_s.map_or("-".to_string(), |s| format!("{s:.2}s")),
            if one.ok {
                String::new()
            } else {
                format!("  FAILED: {}", one.status)
            }
        );
        if !one.ok {
            one.status.push_str(&failed_children(jd, bin, &pki, &name));
        }
        result.invokes.push(one);
        let _ = jd
            .rjob(bin, &pki)
            .args(["remove", &name])
            .stdin(Stdio::null())
            .output();
    }
    drop(swarms);
    drop(daemons);
    keep_logs(tmp.path(), run, opts.daemons);
    Ok(result)
}

pub fn run(opts: &SwarmOpts) -> Result<()> {
    let started = Instant::now();
    eprintln!("rjob-bench swarm: {}", crate::swarm::STAND_IN_NOTE);
    let (issued, issue_s) = crate::swarm_certs::ensure(&opts.certs, opts.agents)?;
    let bin = crate::bins::build_bins(opts.bin_dir.as_deref())?;
    let cluster = if opts.daemons > 1 {
        Some(rjob_tests::pg::Cluster::start().context("a throwaway PostgreSQL cluster")?)
    } else {
        None
    };
    // The cluster's postmaster, for its CPU: the first line of data/postmaster.pid.
    let postmaster = cluster.as_ref().and_then(|c| {
        let dir = c.socket_dir();
        let pid_file = dir.parent()?.join("data/postmaster.pid");
        std::fs::read_to_string(pid_file)
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    });
    let mut runs = Vec::new();
    for run in 0..opts.runs {
        let db = cluster.as_ref().map(|c| c.database()).transpose()?;
        let url = db.as_ref().map(|d| d.url());
        runs.push(one_run(opts, &bin, run, url.as_deref(), postmaster)?);
    }
    let out_dir: PathBuf = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    crate::swarm_report::write(opts, &runs, (issued, issue_s), &out_dir, started.elapsed())
}

/// Why the children of job `name` that did not complete ended, counted by reason
/// (`rjob jobs -o json`): `; 3 x "reason"`, most frequent first.
fn failed_children(daemon: &JobDaemon, bin: &Path, pki: &Path, name: &str) -> String {
    fn reasons(v: &serde_json::Value, out: &mut std::collections::BTreeMap<String, usize>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        serde_json::Value::String(r) if k == "reason" && !r.is_empty() => {
                            // One line per reason, whatever the host: swarm00042 is swarm*.
                            let mut words: Vec<String> = Vec::new();
                            for w in r.split(' ') {
                                let host = w
                                    .strip_prefix("swarm")
                                    .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit()));
                                words.push(if host { "swarm*".into() } else { w.into() });
                            }
                            *out.entry(words.join(" ")).or_default() += 1
                        }
                        _ => reasons(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| reasons(v, out)),
            _ => {}
        }
    }
    let Ok(out) = daemon
        .rjob(bin, pki)
        .args(["jobs", "--children", "-o", "json", name])
        .stdin(Stdio::null())
        .output()
    else {
        return String::new();
    };
    let mut counts = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            reasons(&v, &mut counts);
        }
    }
    let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .take(4)
        .map(|(r, n)| format!("; {n} x {r:?}"))
        .collect()
}
