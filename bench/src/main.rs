//! rjob-bench: rjob against real agents on loopback, side by side with pdsh over ssh,
//! ansible ad-hoc, and the local spawn floor. See bench/README.md.

mod fleet;
mod flood;
mod flood_report;
mod flood_worker;
mod opts;
mod peers;
mod procs;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

use fleet::{Agents, Sshds};
use opts::{Opts, Settings};
use peers::{close_ssh_masters, detect_peers, Peers};
use procs::Sample;
use stats::{Scenario, Series, Tool};

/// A line of text, repeated, cut to `bytes`: output as ordinary text lines (100 bytes each).
pub fn output_script(bytes: u64) -> String {
    format!(
        "yes 'rjob-bench 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 ++++++' | head -c {bytes}"
    )
}

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

/// A run starts once the machine uses less than this share of its CPU (over 100 ms)...
const QUIET_BUSY: f64 = 0.05;
/// ... or after this long.
const QUIET_MAX: Duration = Duration::from_secs(20);

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds rjob and rjob-agent with the same profile and target directory as this binary.
fn ensure_bins(opts: &Opts) -> Result<PathBuf> {
    build_bins(opts.bin_dir.as_deref())
}

/// `bin_dir`, or rjob and rjob-agent built with the same profile and target directory.
pub fn build_bins(bin_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = bin_dir {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .context("no directory of the executable")?
        .to_path_buf();
    let target_dir = profile_dir.parent().context("no target directory")?.to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if !release {
        eprintln!("rjob-bench: WARNING: not a release build; run with `cargo run --release -p rjob-bench`");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "rjob", "-p", "rjob-agent"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace_root());
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "==> building rjob and rjob-agent ({})",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of rjob and rjob-agent failed");
    }
    Ok(profile_dir)
}

/// Everything a run of the benchmark holds; dropping it stops every process it started.
pub struct Bench {
    pub settings: Settings,
    pub bin: PathBuf,
    pub agents: Agents,
    pub sshds: Option<Sshds>,
    pub peers: Peers,
    pub scenarios: Vec<Scenario>,
    pub memory: report::Memory,
    pub started: Instant,
    work: PathBuf,
    cp_root: PathBuf,
    self_exe: PathBuf,
    // Last: removed after the processes above are gone.
    tmp: Option<tempfile::TempDir>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        close_ssh_masters(&self.cp_root);
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
        let script = workspace_root().join("bench/setup-peers.sh");
        eprintln!("==> installing peers: {}", script.display());
        let status = Command::new("bash").arg(&script).status()?;
        if !status.success() {
            eprintln!(
                "rjob-bench: WARNING: {} failed; missing peers will be skipped",
                script.display()
            );
        }
    }
    let bin = ensure_bins(&opts)?;
    for b in ["rjob", "rjob-agent"] {
        if !bin.join(b).is_file() {
            bail!("{} is missing", bin.join(b).display());
        }
    }
    if let Some(dir) = &opts.serve_only {
        return serve_only(&bin, dir, max_n, opts.port);
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
    let tmp = tempfile::Builder::new()
        .prefix("rjob-bench-")
        .tempdir_in("/tmp")?;
    let root = tmp.path().to_path_buf();
    {
        let root = root.clone();
        let keep = opts.keep;
        procs::on_signal(move || {
            close_ssh_masters(&root.join("cp"));
            if !keep {
                let _ = std::fs::remove_dir_all(&root);
            }
        });
    }
    let ips = fleet::loopback_addrs(max_n);
    eprintln!(
        "==> starting {max_n} agents on {} … {} port {}",
        ips[0],
        ips[max_n - 1],
        opts.port
    );
    let t = Instant::now();
    let agents = Agents::start(&bin, &root.join("agents"), &ips, opts.port)?;
    eprintln!("    {max_n} agents up in {:.1}s", t.elapsed().as_secs_f64());
    let sshds = if peers.pdsh.is_ok() || peers.ansible.is_ok() {
        eprintln!(
            "==> starting sshd endpoints on the same {max_n} addresses, port {}",
            opts.ssh_port
        );
        let t = Instant::now();
        let s = Sshds::start(&root.join("ssh"), &ips, opts.ssh_port)?;
        eprintln!(
            "    {} sshd processes (16 addresses each) up in {:.1}s",
            s.daemons.len(),
            t.elapsed().as_secs_f64()
        );
        Some(s)
    } else {
        None
    };
    let mut bench = Bench {
        settings: settings.clone(),
        bin,
        agents,
        sshds,
        peers,
        scenarios: Vec::new(),
        memory: report::Memory::default(),
        started: Instant::now(),
        work: root.join("work"),
        cp_root: root.join("cp"),
        self_exe: std::env::current_exe()?,
        tmp: Some(tmp),
    };
    std::fs::create_dir_all(&bench.work)?;
    std::fs::create_dir_all(&bench.cp_root)?;
    if opts.keep {
        if let Some(t) = bench.tmp.take() {
            eprintln!("==> keeping {}", t.keep().display());
        }
    }
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

    let out_dir = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    std::fs::create_dir_all(&out_dir)?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (md, json) = report::render(&bench, &argv);
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

/// `--serve-only DIR`: a fleet to point `rjob` (or perf) at by hand.
fn serve_only(bin: &Path, dir: &Path, n: usize, port: u16) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("rjob-bench-serve-")
        .tempdir_in("/tmp")?;
    let agents = Agents::start(bin, &tmp.path().join("agents"), &fleet::loopback_addrs(n), port)?;
    std::fs::write(dir.join("hosts.txt"), agents.hosts(n).replace(',', "\n") + "\n")?;
    std::fs::write(
        dir.join("env"),
        format!("export RJOB_IDENTITY={}\n", agents.pki.display()),
    )?;
    let pids: Vec<String> = agents.pids(n).iter().map(ToString::to_string).collect();
    std::fs::write(dir.join("agent-pids"), pids.join("\n") + "\n")?;
    eprintln!(
        "==> {n} agents up; hosts in {0}/hosts.txt, `. {0}/env` for RJOB_IDENTITY, pids in {0}/agent-pids; close stdin (Ctrl-D) or Ctrl-C to stop",
        dir.display()
    );
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
    drop(agents);
    Ok(())
}

impl Bench {
    /// VmRSS of the first `n` agents, KiB.
    fn agent_rss(&self, n: usize) -> Vec<u64> {
        self.agents
            .pids(n)
            .iter()
            .map(|p| procs::status_kib(*p, "VmRSS:"))
            .collect()
    }

    fn check_alive(&mut self) -> Result<()> {
        for d in self.agents.daemons.iter_mut() {
            if d.exited() {
                bail!("an agent died: {}", d.log_text());
            }
        }
        if let Some(s) = self.sshds.as_mut() {
            for d in s.daemons.iter_mut() {
                if d.exited() {
                    bail!("an sshd died: {}", d.log_text());
                }
            }
        }
        Ok(())
    }

    fn rjob_cmd(&self, n: usize, throttle: usize, script: &str) -> (Command, String) {
        let mut cmd = Command::new(self.bin.join("rjob"));
        cmd.env("RJOB_IDENTITY", &self.agents.pki)
            .arg("invoke")
            .arg("-H")
            .arg(self.agents.hosts(n))
            .arg("--throttle-limit")
            .arg(throttle.to_string())
            .arg("--script")
            .arg(script);
        let shown = format!("rjob invoke -H <{n} agents> --throttle-limit {throttle} --script '{script}'");
        (cmd, shown)
    }

    fn floor_cmd(&self, n: usize, k: usize, script: &str) -> (Command, String) {
        let mut cmd = Command::new(&self.self_exe);
        cmd.arg("__floor")
            .arg(n.to_string())
            .arg(k.to_string())
            .arg(script);
        (
            cmd,
            format!("{n} local spawns of sh -c '{script}', {k} at a time"),
        )
    }

    fn pdsh_cmd(&self, n: usize, k: usize, script: &str) -> Option<(Command, String)> {
        let s = self.sshds.as_ref()?;
        let mut cmd = Command::new("pdsh");
        cmd.env("PDSH_SSH_ARGS", format!("-F {} %h", s.ssh_config.display()))
            .env_remove("PDSH_SSH_ARGS_APPEND")
            .args(["-R", "ssh", "-S", "-t", "60", "-f", &k.to_string(), "-w"])
            .arg(s.host_list(n))
            .arg(script);
        let shown = format!("pdsh -R ssh -S -t 60 -f {k} -w <{n} sshd addresses> '{script}'");
        Some((cmd, shown))
    }

    fn ansible_cmd(
        &self,
        n: usize,
        k: usize,
        module: &str,
        script: &str,
        run_dir: &Path,
    ) -> Result<Option<(Command, String)>> {
        let (Some(s), Ok(ansible)) = (self.sshds.as_ref(), self.peers.ansible.as_ref()) else {
            return Ok(None);
        };
        let inv = s.inventory(n)?;
        let home = s.dir.join("ansible-home");
        std::fs::create_dir_all(&home)?;
        let cfg = s.dir.join("ansible.cfg");
        if !cfg.is_file() {
            std::fs::write(&cfg, "[defaults]\nhost_key_checking = False\n")?;
        }
        let mut cmd = Command::new(ansible);
        cmd.env("ANSIBLE_CONFIG", &cfg)
            .env("ANSIBLE_HOME", &home)
            .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
            .env("ANSIBLE_REMOTE_TMP", s.dir.join("ansible-remote"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            // A fresh ControlPersist directory per run: every run starts cold, like rjob's.
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", run_dir)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
            .env("LC_ALL", "C.UTF-8")
            .arg("all")
            .arg("-i")
            .arg(&inv)
            .args(["-m", module, "-a", script, "-f", &k.to_string()]);
        let shown = format!("ansible all -i <{n} sshd addresses> -m {module} -a '{script}' -f {k}");
        Ok(Some((cmd, shown)))
    }

    /// Runs one tool once; fills in the target side's CPU and, for rjob, agents' peak RSS.
    fn once(
        &mut self,
        series: &mut Series,
        n: usize,
        cmd: &mut Command,
        run: usize,
        tag: &str,
        timeout: Duration,
    ) -> Result<()> {
        self.check_alive()?;
        // Every run starts on a quiet machine: what the previous run left behind (sshd
        // sessions closing, pdsh's and ansible's processes exiting) is nobody's time.
        let (waited, quiet) = procs::wait_quiet(QUIET_BUSY, QUIET_MAX);
        if !quiet {
            eprintln!(
                "    (the machine stayed busy for {}; measuring anyway)",
                stats::fmt_time(Some(waited.as_secs_f64()))
            );
        }
        let target_pids: Vec<u32> = match series.tool {
            Tool::Rjob => self.agents.pids(n),
            Tool::Pdsh | Tool::Ansible => self.sshds.as_ref().map(|s| s.pids(n)).unwrap_or_default(),
            Tool::Floor => Vec::new(),
        };
        if series.tool == Tool::Rjob {
            for p in &target_pids {
                procs::reset_peak(*p);
            }
        }
        let before = procs::cpu_sum_s(&target_pids);
        let errf = self
            .work
            .join(format!("{tag}-{}-{run}.stderr", series.tool.name()));
        let mut sample: Sample = procs::measure(cmd, &errf, None, timeout)?;
        if series.tool != Tool::Floor {
            // Give the targets a moment to reap their session processes before reading CPU.
            std::thread::sleep(Duration::from_millis(if series.tool == Tool::Rjob {
                20
            } else {
                200
            }));
            sample.target_cpu_s = Some(procs::cpu_sum_s(&target_pids) - before);
        }
        if series.tool == Tool::Rjob {
            let mut peaks: Vec<u64> = target_pids
                .iter()
                .map(|p| procs::status_kib(*p, "VmHWM:"))
                .collect();
            peaks.sort_unstable();
            series.agent_peak_max_kib.push(peaks.last().copied().unwrap_or(0));
            series
                .agent_peak_median_kib
                .push(peaks.get(peaks.len() / 2).copied().unwrap_or(0));
        }
        if !sample.ok {
            let err = std::fs::read_to_string(&errf).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            eprintln!(
                "    !! {} run {} failed ({}): {}",
                series.tool.name(),
                run + 1,
                sample.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        eprintln!(
            "    {:<8} run {}: wall {:>10}  cpu {:>10}  maxrss {:>10}{}",
            series.tool.name(),
            run + 1,
            stats::fmt_time(Some(sample.wall_s)),
            stats::fmt_time(Some(sample.cpu_s)),
            stats::fmt_mib(Some(sample.maxrss_kib as f64)),
            if sample.ok { "" } else { "  FAILED" }
        );
        series.samples.push(sample);
        if procs::stopping() {
            bail!("stopped");
        }
        Ok(())
    }

    fn runs_of(&self, tool: Tool, n: usize) -> usize {
        match tool {
            Tool::Rjob | Tool::Floor => self.settings.runs,
            Tool::Pdsh => self.settings.pdsh_runs,
            Tool::Ansible => self.settings.ansible_runs_for(n),
        }
    }

    /// `n` hosts run `script`, at most `k` at once, by each tool, interleaved run by run.
    fn fanout_scenario(&mut self, n: usize, script: &str, k: usize, warmup: bool) -> Result<Scenario> {
        let id = format!("fanout-n{n}-{}-t{k}", script.replace(' ', "_"));
        eprintln!(
            "==> {}N={n} '{script}' throttle {k}",
            if warmup { "warm-up: " } else { "" }
        );
        let tools: &[Tool] = if warmup {
            &[Tool::Rjob]
        } else {
            &[Tool::Rjob, Tool::Floor, Tool::Pdsh, Tool::Ansible]
        };
        let (module, remote) = ("command", script);
        self.run_tools(
            id,
            "fanout",
            n,
            k,
            script,
            0,
            tools,
            module,
            remote,
            if warmup { 1 } else { self.settings.runs },
        )
    }

    /// `n` hosts each print `bytes` of text lines, all at once.
    fn throughput_scenario(&mut self, n: usize, bytes: u64, with_peers: bool) -> Result<Scenario> {
        let script = output_script(bytes);
        let id = format!("throughput-n{n}-{}MB", bytes / 1_000_000);
        eprintln!("==> throughput: {n} host(s) x {} MB", bytes / 1_000_000);
        let tools: &[Tool] = if with_peers {
            &[Tool::Rjob, Tool::Pdsh, Tool::Ansible]
        } else {
            &[Tool::Rjob]
        };
        self.run_tools(
            id,
            "throughput",
            n,
            n,
            &script,
            bytes,
            tools,
            "shell",
            &script.clone(),
            self.settings.runs,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn run_tools(
        &mut self,
        id: String,
        kind: &str,
        n: usize,
        k: usize,
        script: &str,
        bytes: u64,
        tools: &[Tool],
        module: &str,
        remote: &str,
        runs: usize,
    ) -> Result<Scenario> {
        let timeout = Duration::from_secs(1800);
        let mut series: Vec<Series> = Vec::new();
        for &tool in tools {
            let skipped = match tool {
                Tool::Pdsh => self.peers.pdsh.as_ref().err().cloned(),
                Tool::Ansible => self.peers.ansible.as_ref().err().cloned(),
                _ => None,
            };
            let shown = match tool {
                Tool::Rjob => self.rjob_cmd(n, k, script).1,
                Tool::Floor => self.floor_cmd(n, k, script).1,
                Tool::Pdsh => self.pdsh_cmd(n, k, remote).map(|c| c.1).unwrap_or_default(),
                Tool::Ansible => self
                    .ansible_cmd(n, k, module, remote, &self.cp_root)?
                    .map(|c| c.1)
                    .unwrap_or_default(),
            };
            let mut s = Series::new(tool, shown);
            s.skipped = skipped;
            series.push(s);
        }
        for run in 0..runs {
            for s in series.iter_mut() {
                if s.skipped.is_some() || run >= self.runs_of(s.tool, n).min(runs) {
                    continue;
                }
                let tag = id.clone();
                match s.tool {
                    Tool::Rjob => {
                        let (mut cmd, _) = self.rjob_cmd(n, k, script);
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::Floor => {
                        let (mut cmd, _) = self.floor_cmd(n, k, script);
                        self.once(s, n, &mut cmd, run, &tag, timeout)?;
                    }
                    Tool::Pdsh => {
                        if let Some((mut cmd, _)) = self.pdsh_cmd(n, k, remote) {
                            self.once(s, n, &mut cmd, run, &tag, timeout)?;
                        }
                    }
                    Tool::Ansible => {
                        let dir = self.cp_root.join(format!("{}", self.scenarios.len() * 100 + run));
                        std::fs::create_dir_all(&dir)?;
                        if let Some((mut cmd, _)) = self.ansible_cmd(n, k, module, remote, &dir)? {
                            let r = self.once(s, n, &mut cmd, run, &tag, timeout);
                            close_ssh_masters(&dir);
                            let _ = std::fs::remove_dir_all(&dir);
                            r?;
                        }
                    }
                }
            }
        }
        Ok(Scenario {
            id,
            kind: kind.to_string(),
            hosts: n,
            script: script.to_string(),
            throttle: k,
            bytes_per_host: bytes,
            series,
        })
    }
}
