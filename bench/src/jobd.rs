//! The `--as-job` column: a job daemon (`rjob serve`) started before anything is timed, and
//! one measured run: `rjob invoke --as-job` into the daemon's SQLite store, `rjob wait` until
//! every host's output is in, then `rjob receive > /dev/null`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::bench::Bench;
use crate::procs::{self, Daemon, Sample};
use crate::stats::Series;

/// A running `rjob serve` with a state directory of its own.
pub struct JobDaemon {
    pub state_dir: PathBuf,
    pub daemon: Daemon,
}

impl JobDaemon {
    pub fn start(bin: &Path, pki: &Path, state_dir: &Path) -> Result<JobDaemon> {
        Self::start_with(bin, pki, state_dir, &[])
    }

    /// As [`JobDaemon::start`], with more arguments of `rjob serve` (`--store URL`, ...).
    pub fn start_with(bin: &Path, pki: &Path, state_dir: &Path, extra: &[&str]) -> Result<JobDaemon> {
        std::fs::create_dir_all(state_dir)?;
        // The daemon refuses a state directory others could read.
        std::fs::set_permissions(state_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let mut cmd = Command::new(bin.join("rjob"));
        cmd.arg("serve")
            .arg("--identity")
            .arg(pki)
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env(
                "RJOB_LOG",
                std::env::var("RJOB_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            );
        let daemon = Daemon::spawn(&mut cmd, state_dir.join("bench-serve.log"))?;
        let mut jd = JobDaemon {
            state_dir: state_dir.to_path_buf(),
            daemon,
        };
        // Ready when `rjob jobs` answers (it would start a daemon of its own if none ran:
        // wait for this one's socket, rjob.sock, first).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if jd.daemon.exited() {
                bail!("rjob serve exited: {}", jd.daemon.log_text());
            }
            let ready = state_dir.join("rjob.sock").exists();
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("rjob serve did not open its socket in {}", state_dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut jobs = jd.rjob(bin, pki);
        procs::run_ok(jobs.arg("jobs"))?;
        Ok(jd)
    }

    /// `rjob` talking to this daemon.
    pub fn rjob(&self, bin: &Path, pki: &Path) -> Command {
        let mut cmd = Command::new(bin.join("rjob"));
        cmd.env("RJOB_IDENTITY", pki)
            .env("RJOB_STATE_DIR", &self.state_dir)
            .env("NO_COLOR", "1");
        cmd
    }
}

impl Bench {
    pub fn as_job_shown(&self, n: usize, k: usize, script: &str) -> String {
        format!(
            "rjob invoke --as-job -H <{n} agents> --throttle-limit {k} --script '{script}'; rjob wait; rjob receive > /dev/null"
        )
    }

    /// One run of the --as-job column. The sample's wall and CPU are those of `invoke
    /// --as-job` and `wait` together (the ingest: until the store holds every byte), its
    /// peak RSS the daemon's; `receive` goes to `series.receive_s`.
    pub fn as_job_once(
        &mut self,
        series: &mut Series,
        n: usize,
        k: usize,
        script: &str,
        run: usize,
        tag: &str,
    ) -> Result<()> {
        let timeout = crate::runner::RUN_TIMEOUT;
        let Some(jd) = self.jobd.as_ref() else {
            bail!("no job daemon");
        };
        let (bin, pki) = (self.bin.clone(), self.agents.pki.clone());
        let dpid = jd.daemon.pid();
        let name = format!("bench-{tag}-{run}");
        let mut invoke = jd.rjob(&bin, &pki);
        invoke
            .arg("invoke")
            .arg("--as-job")
            .arg("--job-name")
            .arg(&name)
            .arg("-H")
            .arg(self.agents.hosts(n))
            .arg("--throttle-limit")
            .arg(k.to_string())
            .arg("--script")
            .arg(script);
        let mut wait = jd.rjob(&bin, &pki);
        wait.args(["wait", "--quiet", &name]);
        let mut receive = jd.rjob(&bin, &pki);
        receive.args(["receive", "--quiet", &name]);
        let mut remove = jd.rjob(&bin, &pki);
        remove.args(["remove", &name]);

        let targets = self.before_run(series.tool, n)?;
        procs::reset_peak(dpid);
        let daemon_cpu = procs::cpu_with_children_s(dpid);
        let errf = |what: &str| self.work.join(format!("{tag}-as-job-{run}-{what}.stderr"));
        let a = procs::measure(&mut invoke, &errf("invoke"), None, timeout)?;
        let b = procs::measure(&mut wait, &errf("wait"), None, timeout)?;
        let daemon_cpu = procs::cpu_with_children_s(dpid) - daemon_cpu;
        let target_cpu = self.after_run(series, &targets);
        let daemon_peak = procs::status_kib(dpid, "VmHWM:");
        let c = procs::measure(&mut receive, &errf("receive"), None, timeout)?;
        let _ = procs::run_ok(&mut remove);
        let sample = Sample {
            wall_s: a.wall_s + b.wall_s,
            // The daemon did the controller's work: its CPU counts with the clients'.
            cpu_s: a.cpu_s + b.cpu_s + daemon_cpu,
            user_s: a.user_s + b.user_s,
            sys_s: a.sys_s + b.sys_s,
            maxrss_kib: daemon_peak,
            ok: a.ok && b.ok && c.ok,
            status: [&a, &b, &c]
                .iter()
                .zip(["invoke", "wait", "receive"])
                .map(|(s, w)| format!("{w}: {}", s.status))
                .collect::<Vec<_>>()
                .join(", "),
            target_cpu_s: target_cpu,
        };
        series.receive_s.push(c.wall_s);
        series.daemon_peak_kib.push(daemon_peak);
        self.report_sample(series, run, &sample, &errf("wait"));
        eprintln!(
            "             receive {:>10}  daemon peak RSS {:>10}",
            crate::stats::fmt_time(Some(c.wall_s)),
            crate::stats::fmt_mib(Some(daemon_peak as f64))
        );
        series.samples.push(sample);
        Ok(())
    }
}
