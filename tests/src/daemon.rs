//! A real `rjob serve` for the tests, with its own state directory, and the `rjob` commands
//! that talk to it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::{bin, ran, wait_for, Fleet, Ran, WAIT};

/// A running `rjob serve`; killed when dropped.
pub struct Daemon {
    pub state_dir: PathBuf,
    identity: PathBuf,
    /// Arguments of `rjob serve` beside `--state-dir` (`--store URL`, ...).
    serve_args: Vec<String>,
    /// Environment of `rjob serve` (lease timing, ...).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon with its own state directory inside the fleet's temp dir.
    pub fn start(fleet: &Fleet) -> Result<Daemon> {
        Daemon::start_with(fleet, &[])
    }

    /// [`Daemon::start`], with more arguments for `rjob serve` (`["--store", url]`).
    pub fn start_with(fleet: &Fleet, serve_args: &[&str]) -> Result<Daemon> {
        Daemon::start_named(fleet, "state", serve_args)
    }

    /// One more daemon on the same fleet, its state directory `NAME` in the fleet's temp dir
    /// (several daemons sharing one PostgreSQL store each have their own).
    pub fn start_named(fleet: &Fleet, name: &str, serve_args: &[&str]) -> Result<Daemon> {
        Daemon::start_named_env(fleet, name, serve_args, &[])
    }

    /// [`Daemon::start_named`] with `env` for `rjob serve` (`RJOB_LEASE_TTL_MS`, ...).
    pub fn start_named_env(
        fleet: &Fleet,
        name: &str,
        serve_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let mut daemon = Daemon {
            state_dir: fleet.tmp.path().join(name),
            identity: fleet.pki.dir.clone(),
            serve_args: serve_args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    /// The daemon's process Id (0 once it was killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` to the daemon (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = i32::try_from(self.pid()).context("pid")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).context("kill")?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        // The daemon refuses a state directory other users could enter.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.state_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("test-daemon.log"))?;
        // Ready once this daemon says so: a socket that accepts may still be the killed
        // daemon's, held for a moment by a run it was forking.
        let ready = |log: &str| log.matches("rjob daemon ready").count();
        let before = ready(&self.log_text());
        let child = Command::new(bin("rjob"))
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.serve_args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RJOB_IDENTITY", &self.identity)
            .env_remove("RJOB_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting rjob serve")?;
        self.child = Some(child);
        let socket = self.state_dir.join("rjob.sock");
        if !wait_for(WAIT, || {
            ready(&self.log_text()) > before && std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }) {
            bail!("the daemon did not come up: {}", self.log_text());
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("test-daemon.log")).unwrap_or_default()
    }

    /// `kill -9`, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The `rjob` binary, talking to this daemon (it never starts one of its own).
    pub fn rjob(&self) -> Command {
        let mut cmd = Command::new(bin("rjob"));
        cmd.env("RJOB_IDENTITY", &self.identity)
            .env("RJOB_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null());
        cmd
    }

    /// `rjob invoke -H HOSTS --as-job --job-name NAME --script SCRIPT [EXTRA…]`.
    pub fn invoke_job(&self, hosts: &str, name: &str, script: &str, extra: &[&str]) -> Ran {
        ran(self
            .rjob()
            .args([
                "invoke",
                "-H",
                hosts,
                "--as-job",
                "--job-name",
                name,
                "--script",
                script,
            ])
            .args(extra))
    }

    /// `rjob receive ARGS…` with its stdout and stderr pipes the test reads.
    pub fn spawn_receive(&self, args: &[&str]) -> Child {
        self.rjob()
            .arg("receive")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rjob receive")
    }

    /// `rjob jobs --output json` for one job.
    pub fn job(&self, job: &str) -> serde_json::Value {
        let out = ran(self.rjob().args(["jobs", job, "--output", "json"]));
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `job` is in `state`; true when it got there.
    pub fn wait_state(&self, job: &str, state: &str) -> bool {
        wait_for(WAIT, || self.job(job)["state"] == state)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
