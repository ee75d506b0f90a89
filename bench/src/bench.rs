//! A run of the benchmark: the fleet it started and what it measured so far; one measured
//! run of one tool.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::fleet::{self, Agents, Sshds};
use crate::jobd::JobDaemon;
use crate::opts::{Opts, Settings};
use crate::peers::{close_ssh_masters, Peers};
use crate::procs::{self, Sample};
use crate::report;
use crate::stats::{self, Scenario, Series, Tool};

/// A run starts once the machine uses less than this share of its CPU (over 100 ms), or
/// after `--quiet-max-s`.
const QUIET_BUSY: f64 = 0.05;

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
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
    pub work: PathBuf,
    pub cp_root: PathBuf,
    pub self_exe: PathBuf,
    /// The job daemon of the --as-job column.
    pub jobd: Option<JobDaemon>,
    /// How many of the sshd addresses have a warm ssh master (the first ones).
    pub masters_open: usize,
    // Last: removed after the processes above are gone.
    pub tmp: Option<tempfile::TempDir>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        close_ssh_masters(&self.cp_root);
    }
}

impl Bench {
    /// Starts `max_n` agents (and as many sshd endpoints when a peer needs them) in a fresh
    /// temporary directory.
    pub fn start(opts: &Opts, bin: PathBuf, peers: Peers, max_n: usize) -> Result<Bench> {
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
        // Every agent also dials out to the job daemon (started below; they redial until it is
        // up) for the dialled-in column.
        let dial_to = (!opts.no_dial_in)
            .then(|| std::net::SocketAddr::from(([127, 0, 0, 1], opts.port.wrapping_add(1))));
        let agents = Agents::start_dialling(&bin, &root.join("agents"), &ips, opts.port, dial_to)?;
        eprintln!("    {max_n} agents up in {:.1}s", t.elapsed().as_secs_f64());
        let sshds = if peers.pdsh.is_ok() || peers.ansible.is_ok() {
            eprintln!(
                "==> starting sshd endpoints on the same {max_n} addresses, port {}",
                opts.ssh_port
            );
            let t = Instant::now();
            crate::ssh_user::ensure_user(&opts.ssh_user)?;
            let per = usize::from(opts.addrs_per_sshd);
            let s = Sshds::start(&root.join("ssh"), &ips, opts.ssh_port, per, &opts.ssh_user)?;
            eprintln!(
                "    {} sshd processes ({per} address{} each) up in {:.1}s",
                s.daemons.len(),
                if per == 1 { "" } else { "es" },
                t.elapsed().as_secs_f64()
            );
            Some(s)
        } else {
            None
        };
        eprintln!("==> starting the job daemon (rjob serve) for the --as-job column");
        let listen = dial_to.map(|a| a.to_string());
        let extra: Vec<&str> = match &listen {
            Some(a) => vec!["--agent-listen", a],
            None => Vec::new(),
        };
        let jobd = JobDaemon::start_with(&bin, &agents.pki, &root.join("state"), &extra)?;
        if dial_to.is_some() {
            crate::dialled::wait_dialled_in(&jobd, &bin, &agents.pki, max_n)?;
        }
        let mut bench = Bench {
            settings: Settings::from(opts),
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
            jobd: Some(jobd),
            masters_open: 0,
            tmp: Some(tmp),
        };
        std::fs::create_dir_all(&bench.work)?;
        std::fs::create_dir_all(&bench.cp_root)?;
        if opts.keep {
            if let Some(t) = bench.tmp.take() {
                eprintln!("==> keeping {}", t.keep().display());
            }
        }
        Ok(bench)
    }

    /// VmRSS of the first `n` agents, KiB.
    pub fn agent_rss(&self, n: usize) -> Vec<u64> {
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

    pub fn runs_of(&self, tool: Tool, n: usize) -> usize {
        match tool {
            Tool::Rjob | Tool::AsJob | Tool::Session | Tool::DialledIn | Tool::Floor | Tool::PipeFloor => {
                self.settings.runs
            }
            Tool::Pdsh | Tool::SshWarm => self.settings.pdsh_runs,
            Tool::Ansible => self.settings.ansible_runs_for(n),
        }
    }

    /// Runs one tool once; fills in the target side's CPU and, for rjob, agents' peak RSS.
    pub fn once(
        &mut self,
        series: &mut Series,
        n: usize,
        cmd: &mut Command,
        run: usize,
        tag: &str,
        timeout: Duration,
    ) -> Result<()> {
        let errf = self
            .work
            .join(format!("{tag}-{}-{run}.stderr", series.tool.name()));
        let sample = self.once_measured(series, n, cmd, &errf, timeout)?;
        self.report_sample(series, run, &sample, &errf);
        series.samples.push(sample);
        if procs::stopping() {
            bail!("stopped");
        }
        Ok(())
    }

    /// Measures `cmd` once on a quiet machine, with the targets' CPU meanwhile and, for the
    /// rjob tools, the agents' peak RSS (pushed to `series`).
    pub fn once_measured(
        &mut self,
        series: &mut Series,
        n: usize,
        cmd: &mut Command,
        errf: &Path,
        timeout: Duration,
    ) -> Result<Sample> {
        let targets = self.before_run(series.tool, n)?;
        let mut sample: Sample = procs::measure(cmd, errf, None, timeout)?;
        sample.target_cpu_s = self.after_run(series, &targets);
        Ok(sample)
    }

    /// Waits for a quiet machine; the targets' pids and CPU so far (their peak RSS reset).
    pub fn before_run(&mut self, tool: Tool, n: usize) -> Result<(Vec<u32>, f64)> {
        self.check_alive()?;
        // Every run starts on a quiet machine: what the previous run left behind (sshd
        // sessions closing, pdsh's and ansible's processes exiting) is nobody's time.
        let (waited, quiet) = procs::wait_quiet(QUIET_BUSY, Duration::from_secs(self.settings.quiet_max_s));
        if !quiet {
            eprintln!(
                "    (the machine stayed busy for {}; measuring anyway)",
                stats::fmt_time(Some(waited.as_secs_f64()))
            );
        }
        let target_pids: Vec<u32> = match tool {
            Tool::Rjob | Tool::AsJob | Tool::Session | Tool::DialledIn => self.agents.pids(n),
            Tool::Pdsh | Tool::SshWarm | Tool::Ansible => {
                self.sshds.as_ref().map(|s| s.pids(n)).unwrap_or_default()
            }
            Tool::Floor | Tool::PipeFloor => Vec::new(),
        };
        if tool.is_rjob() {
            for p in &target_pids {
                procs::reset_peak(*p);
            }
        }
        let before = procs::cpu_sum_s(&target_pids);
        Ok((target_pids, before))
    }

    /// The targets' CPU since [`Bench::before_run`]; for rjob, the agents' peak RSS.
    pub fn after_run(&self, series: &mut Series, (pids, before): &(Vec<u32>, f64)) -> Option<f64> {
        if pids.is_empty() {
            return None;
        }
        let rjob = series.tool.is_rjob();
        // Give the targets a moment to reap their session processes before reading CPU.
        std::thread::sleep(Duration::from_millis(if rjob { 20 } else { 200 }));
        let cpu = procs::cpu_sum_s(pids) - before;
        if rjob {
            let mut peaks: Vec<u64> = pids.iter().map(|p| procs::status_kib(*p, "VmHWM:")).collect();
            peaks.sort_unstable();
            series.agent_peak_max_kib.push(peaks.last().copied().unwrap_or(0));
            series
                .agent_peak_median_kib
                .push(peaks.get(peaks.len() / 2).copied().unwrap_or(0));
        }
        Some(cpu)
    }

    /// One line per run on stderr, and the tail of the tool's stderr when it failed.
    pub fn report_sample(&self, series: &Series, run: usize, sample: &Sample, errf: &Path) {
        if !sample.ok {
            let err = std::fs::read_to_string(errf).unwrap_or_default();
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
            "    {:<10} run {}: wall {:>10}  cpu {:>10}  maxrss {:>10}{}",
            series.tool.name(),
            run + 1,
            stats::fmt_time(Some(sample.wall_s)),
            stats::fmt_time(Some(sample.cpu_s)),
            stats::fmt_mib(Some(sample.maxrss_kib as f64)),
            if sample.ok { "" } else { "  FAILED" }
        );
    }
}
