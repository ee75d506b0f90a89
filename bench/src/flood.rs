//! `rjob-bench handshake-flood`: one real agent under a flood of connections that stall in
//! the TLS handshake (issue 11, point 11), and what a controller sees meanwhile: the time of
//! `rjob invoke`, the agent's memory and descriptors, and how much the agent logged.
//!
//! The flood comes from worker processes (`__flood-worker`, [`crate::flood_worker`]), at most
//! [`PER_WORKER`] connections each, so that no process needs more descriptors than the usual
//! hard limit. Everything is on loopback: the agent on 127.0.0.2, the flood from 127.0.1.x,
//! 127.0.2.x, …, the controller from 127.0.0.1 (the kernel's choice for 127.0.0.2).

use std::io::BufRead as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use crate::fleet::Agents;
use crate::flood_opts::FloodOpts;
use crate::flood_report::{read_lines, render, Figures};
use crate::flood_worker::Job;
use crate::procs;

/// Most connections one worker process holds.
pub const PER_WORKER: usize = 8000;

/// What the workers last reported, summed.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
struct FloodCounts {
    open: u64,
    connects: u64,
    closed_by_peer: u64,
    connect_errors: u64,
}

/// Entries in the machine's connection-tracking table, and its size (when netfilter tracks
/// connections: a full table drops every new connection on the machine, not only the flood's).
fn conntrack() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// The flood stops when the connection-tracking table is fuller than this share: beyond it,
/// other programs on the machine would start losing connections.
const CONNTRACK_GUARD: f64 = 0.5;

/// Sleeps `d`, checking the machine's connection-tracking table every 200 ms.
fn pause_guarded(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    loop {
        if let Some((count, max)) = conntrack() {
            if count as f64 > CONNTRACK_GUARD * max as f64 {
                bail!(
                    "the flood stopped: the machine's connection-tracking table holds {count} of {max} entries; \
                     a slower flood (--reconnect-ms) or fewer --connections keeps it below half"
                );
            }
        }
        if procs::stopping() {
            bail!("stopped");
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(200)));
    }
}

pub fn main(args: &[String]) -> std::process::ExitCode {
    let opts = FloodOpts::parse_from(args);
    if let Err(e) = procs::install_signal_thread() {
        eprintln!("rjob-bench: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    match run(&opts) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("rjob-bench handshake-flood: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn sources(n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(127, 0, (1 + i / 254) as u8, (1 + i % 254) as u8))
        .collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// One `rjob invoke`: its wall time, or why it failed.
fn invoke(bin: &Path, pki: &Path, host: &str) -> std::result::Result<f64, String> {
    let started = Instant::now();
    let out = Command::new(bin.join("rjob"))
        .env("RJOB_IDENTITY", pki)
        .args(["invoke", "-H", host, "--script", "echo flood-ok"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rjob: {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains(&format!("{host}: flood-ok")) {
        Ok(wall)
    } else {
        Err(format!(
            "{} after {wall:.2}s: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', " | ")
        ))
    }
}

struct Workers {
    children: Vec<std::process::Child>,
    counts: Arc<Mutex<Vec<FloodCounts>>>,
}

impl Workers {
    fn start(opts: &FloodOpts, target: SocketAddr) -> Result<Workers> {
        let exe = std::env::current_exe()?;
        let all = sources(opts.sources);
        let n_workers = opts.connections.div_ceil(PER_WORKER).max(1);
        let counts = Arc::new(Mutex::new(vec![FloodCounts::default(); n_workers]));
        let mut children = Vec::new();
        for w in 0..n_workers {
            let count = (opts.connections - w * PER_WORKER).min(PER_WORKER);
            // Each worker takes every n_workers-th source, so all sources are used.
            let mine: Vec<Ipv4Addr> = all
                .iter()
                .skip(w % all.len())
                .step_by(n_workers)
                .copied()
                .collect();
            let job = Job {
                target,
                sources: if mine.is_empty() { all.clone() } else { mine },
                count,
                payload: opts.payload,
                reconnect: (!opts.no_reconnect).then(|| Duration::from_millis(opts.reconnect_ms)),
                duration: Duration::from_secs(opts.max_duration_s),
            };
            let mut cmd = Command::new(&exe);
            cmd.args(job.args()).stdin(Stdio::null()).stdout(Stdio::piped());
            procs::die_with_parent(&mut cmd);
            let mut child = cmd.spawn().context("starting a flood worker")?;
            procs::register(child.id() as i32, false);
            let stdout = child.stdout.take().context("worker stdout")?;
            let counts = counts.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut c = FloodCounts::default();
                    for field in line.split_whitespace() {
                        let Some((k, v)) = field.split_once('=') else {
                            continue;
                        };
                        let v = v.parse().unwrap_or(0);
                        match k {
                            "open" => c.open = v,
                            "connects" => c.connects = v,
                            "closed_by_peer" => c.closed_by_peer = v,
                            "connect_errors" => c.connect_errors = v,
                            _ => {}
                        }
                    }
                    if let Ok(mut all) = counts.lock() {
                        all[w] = c;
                    }
                }
            });
            children.push(child);
        }
        Ok(Workers { children, counts })
    }

    fn counts(&self) -> FloodCounts {
        let all = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        all.iter().fold(FloodCounts::default(), |a, c| FloodCounts {
            open: a.open + c.open,
            connects: a.connects + c.connects,
            closed_by_peer: a.closed_by_peer + c.closed_by_peer,
            connect_errors: a.connect_errors + c.connect_errors,
        })
    }

    fn alive(&mut self) -> bool {
        self.children.iter_mut().all(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.children {
            procs::unregister(c.id() as i32);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Samples the agent's RSS and descriptors every 50 ms until stopped.
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Peaks>>,
}

/// Highest agent RSS (KiB) and descriptor count, and connection-tracking entries (with the
/// table's size) seen while sampling.
type Peaks = (u64, usize, Option<(u64, u64)>);

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut rss, mut fds, mut ct) = (0, 0, None::<(u64, u64)>);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                rss = rss.max(procs::status_kib(pid, "VmRSS:"));
                fds = fds.max(open_fds(pid));
                if let Some((count, max)) = conntrack() {
                    ct = Some((ct.map_or(count, |(c, _)| c.max(count)), max));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (rss, fds, ct)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Peaks {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0, None))
    }
}

fn run(opts: &FloodOpts) -> Result<bool> {
    if opts.connections == 0 || opts.connections > 60_000 {
        bail!("--connections must be 1 to 60000");
    }
    if opts.sources == 0 || opts.sources > 2540 {
        bail!("--sources must be 1 to 2540");
    }
    if opts.invokes == 0 {
        bail!("--invokes must be at least 1");
    }
    let (before, nofile) = procs::raise_nofile();
    eprintln!(
        "==> RLIMIT_NOFILE: {before} -> {nofile} ({} flood workers of at most {PER_WORKER} connections)",
        opts.connections.div_ceil(PER_WORKER)
    );
    if nofile < PER_WORKER as u64 + 256 {
        bail!("the open-file limit {nofile} is below {} (one flood worker's connections); raise the hard limit (ulimit -Hn)", PER_WORKER + 256);
    }
    if let Some((count, max)) = conntrack() {
        if count as f64 > 0.4 * max as f64 {
            bail!("the machine's connection-tracking table already holds {count} of {max} entries; try again later");
        }
    }
    let bin = crate::bins::build_bins(opts.bin_dir.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("rjob-bench-flood-")
        .tempdir_in("/tmp")?;
    let root = tmp.path().to_path_buf();
    let agent_ip = Ipv4Addr::new(127, 0, 0, 2);
    let mut agents = Agents::start(&bin, &root.join("agents"), &[agent_ip], opts.port)?;
    let target = agents.addrs[0];
    let host = target.to_string();
    let pid = agents.pids(1)[0];
    let log = root
        .join("agents")
        .join(format!("agent-{agent_ip}"))
        .join("agent.log");
    let mut fig = Figures::default();

    eprintln!("==> {} invokes without the flood", opts.invokes);
    let _ = invoke(&bin, &agents.pki, &host); // warm-up, untimed
    for _ in 0..opts.invokes {
        procs::wait_quiet(0.05, Duration::from_secs(5));
        match invoke(&bin, &agents.pki, &host) {
            Ok(s) => fig.baseline_invoke_s.push(s),
            Err(e) => bail!("rjob invoke fails without any flood: {e}"),
        }
    }
    fig.agent_rss_idle_kib = procs::status_kib(pid, "VmRSS:");
    fig.agent_fds_idle = open_fds(pid);
    let log_lines_before = read_lines(&log).len();

    eprintln!(
        "==> flood: {} connections ({}) from {} sources, {}",
        opts.connections,
        opts.payload.name(),
        opts.sources,
        if opts.no_reconnect {
            "no reconnect".to_string()
        } else {
            format!("reopened {} ms after the agent closes one", opts.reconnect_ms)
        }
    );
    procs::reset_peak(pid);
    let sampler = Sampler::start(pid);
    let flood_started = Instant::now();
    let mut workers = Workers::start(opts, target)?;
    let ramp = Instant::now();
    while ramp.elapsed() < Duration::from_secs(30)
        && workers.counts().open < (opts.connections as u64 * 95 / 100)
    {
        pause_guarded(Duration::from_millis(200))?;
        if !workers.alive() {
            bail!("a flood worker died");
        }
    }
    let up = workers.counts();
    eprintln!(
        "    {} connections open after {:.1}s; settling {}s",
        up.open,
        ramp.elapsed().as_secs_f64(),
        opts.settle_s
    );
    pause_guarded(Duration::from_secs(opts.settle_s))?;
    fig.flood_open_min = u64::MAX;
    for i in 0..opts.invokes {
        if agents.daemons[0].exited() {
            bail!("the agent died under the flood: {}", agents.daemons[0].log_text());
        }
        let open = workers.counts().open;
        fig.flood_open_min = fig.flood_open_min.min(open);
        fig.flood_open_at_invokes.push(open);
        match invoke(&bin, &agents.pki, &host) {
            Ok(s) => {
                eprintln!(
                    "    invoke {}: {:.0} ms with {open} flood connections open",
                    i + 1,
                    s * 1000.0
                );
                fig.flood_invoke_s.push(s);
            }
            Err(e) => {
                eprintln!("    invoke {}: FAILED: {e}", i + 1);
                fig.flood_invoke_failures.push(e);
            }
        }
        pause_guarded(Duration::from_millis(500))?;
    }
    let end = workers.counts();
    fig.flood_seconds = flood_started.elapsed().as_secs_f64();
    fig.flood_connects = end.connects;
    fig.flood_closed_by_peer = end.closed_by_peer;
    fig.flood_connect_errors = end.connect_errors;
    drop(workers);
    let (rss, fds, ct) = sampler.finish();
    fig.agent_rss_max_kib = rss;
    fig.agent_fds_max = fds;
    fig.conntrack_peak = ct;
    fig.agent_hwm_kib = procs::status_kib(pid, "VmHWM:");
    // The flood is gone: the agent serves as before.
    std::thread::sleep(Duration::from_secs(1));
    fig.recovered_invoke_ok = invoke(&bin, &agents.pki, &host).is_ok();
    // One more log interval, so the flood's last counts are written.
    std::thread::sleep(Duration::from_secs(11));
    let lines = read_lines(&log);
    let during = &lines[log_lines_before.min(lines.len())..];
    fig.log_lines = during.len();
    fig.log_handshake_lines = during
        .iter()
        .filter(|l| l.contains("TLS handshakes that did not complete"))
        .count();
    fig.log_audit_lines = during.iter().filter(|l| l.contains(" audit:")).count();
    let (md, pass) = render(opts, &fig, nofile, &log);
    print!("{md}");
    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("handshake-flood.md"), &md)?;
    let json = serde_json::json!({ "options": opts, "figures": fig, "pass": pass });
    std::fs::write(
        out_dir.join("handshake-flood.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!("==> wrote {}", out_dir.join("handshake-flood.md").display());
    if opts.keep {
        eprintln!("==> keeping {}", tmp.keep().display());
    }
    drop(agents);
    Ok(pass)
}
