//! Child jobs under faults: a run the daemon gave up on is stopped once its agent is back
//! (also after a daemon restart), and an agent at its concurrency limit is back-pressure (the
//! child waits as NotStarted with the reason), for jobs and for `rjob invoke`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rjob_tests::{bin, process_alive, ran, wait_for, Daemon, Fleet, Proxy, Ran, WAIT};

/// `rjob serve` with flags of the test's choosing (the harness's Daemon takes none).
struct Serve {
    state_dir: PathBuf,
    identity: PathBuf,
    flags: Vec<String>,
    child: Option<Child>,
}

impl Serve {
    fn start(fleet: &Fleet, flags: &[&str]) -> Serve {
        let mut serve = Serve {
            state_dir: fleet.tmp.path().join("serve-state"),
            identity: fleet.pki.dir.clone(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            child: None,
        };
        serve.spawn();
        serve
    }

    fn log(&self) -> PathBuf {
        self.state_dir.join("test-daemon.log")
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.state_dir).expect("state dir");
        std::fs::set_permissions(
            &self.state_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("state dir mode");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log");
        let child = Command::new(bin("rjob"))
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.flags)
            .env("RJOB_IDENTITY", &self.identity)
            .env("RJOB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("rjob serve");
        self.child = Some(child);
        let socket = self.state_dir.join("rjob.sock");
        assert!(
            wait_for(WAIT, || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
            "the daemon did not come up: {}",
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    fn rjob(&self) -> Command {
        let mut cmd = Command::new(bin("rjob"));
        cmd.env("RJOB_IDENTITY", &self.identity)
            .env("RJOB_STATE_DIR", &self.state_dir)
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `rjob jobs JOB --children -o json`: the job's children.
fn children_of(rjob: &mut Command, job: &str) -> Vec<serde_json::Value> {
    let out = ran(rjob.args(["jobs", job, "--children", "--output", "json"]));
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.pointer("/0/children").and_then(|c| c.as_array()).cloned())
        .unwrap_or_default()
}

/// The job's first (only) child.
fn child_of(rjob: &mut Command, job: &str) -> serde_json::Value {
    children_of(rjob, job).first().cloned().unwrap_or_default()
}

/// Whether a child waits at a busy agent with the reason.
fn waits_busy(child: &serde_json::Value) -> bool {
    child["state"] == "NotStarted"
        && child["reason"]
            .as_str()
            .is_some_and(|r| r.contains("agent busy: at its limit of 1 concurrent runs; retrying"))
}

/// Live processes whose environment holds `marker` (the runs carry it with `-e`).
fn marked(marker: &str) -> Vec<i32> {
    let needle = marker.as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        panic!("no /proc: these tests need Linux with procfs");
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .filter(|pid| process_alive(*pid))
        .collect()
}

fn proxied_agent(fleet: &Fleet) -> Proxy {
    let agent = &fleet.agents[0];
    let std::net::IpAddr::V4(ip) = agent.addr.ip() else {
        panic!("IPv4 agent")
    };
    Proxy::start(ip, agent.addr).expect("proxy")
}

/// A long run through `proxy`, cut off until the daemon gives up on it (2s window); returns
/// the run's marked processes, still going on the agent.
fn give_up_on_a_run(daemon: &Serve, proxy: &Proxy, job: &str, marker: &str) -> Vec<i32> {
    let out = ran(daemon.rjob().args([
        "invoke",
        "-H",
        &proxy.addr.to_string(),
        "--as-job",
        "--job-name",
        job,
        "-e",
        &format!("RJH_MARKER={marker}"),
        "--script",
        "echo started; sleep 600",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_for(WAIT, || marked(marker).len() >= 2),
        "the run did not start: {}",
        child_of(&mut daemon.rjob(), job)
    );
    let pids = marked(marker);
    proxy.cut();
    assert!(
        wait_for(WAIT, || child_of(&mut daemon.rjob(), job)["state"] == "Failed"),
        "the child did not fail after the reconnect window: {}",
        child_of(&mut daemon.rjob(), job)
    );
    pids
}

fn assert_failed_with_reason(daemon: &Serve, job: &str) {
    let child = child_of(&mut daemon.rjob(), job);
    assert_eq!(child["state"], "Failed", "{child}");
    let reason = child["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not back within 2s"), "{child}");
    assert!(
        reason.contains("the daemon stops the run once its agent answers again"),
        "{child}"
    );
}

fn orphan_list(daemon: &Serve) -> serde_json::Value {
    let text = std::fs::read_to_string(daemon.state_dir.join("orphaned-runs.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_run_given_up_on_is_stopped_once_its_agent_is_back() {
    let fleet = Fleet::start(1).expect("fleet");
    let proxy = proxied_agent(&fleet);
    let daemon = Serve::start(&fleet, &["--reconnect-window", "2s"]);
    let marker = format!("rjh-given-up-{}", std::process::id());
    let pids = give_up_on_a_run(&daemon, &proxy, "given-up", &marker);

    assert_failed_with_reason(&daemon, "given-up");
    // The host is fine, only unreachable: its run goes on...
    assert!(pids.iter().all(|p| process_alive(*p)), "{pids:?}");
    assert_eq!(orphan_list(&daemon)["runs"].as_array().map(Vec::len), Some(1));

    // ...until the agent answers again.
    proxy.reopen();
    assert!(
        wait_for(WAIT, || marked(&marker).is_empty()),
        "the run was not stopped once its agent was back: {:?}\n{}",
        marked(&marker),
        daemon.log_text()
    );
    assert!(wait_for(WAIT, || orphan_list(&daemon)["runs"] == serde_json::json!([])));
    assert!(daemon
        .log_text()
        .contains("stopped a run the daemon had given up on"));
    // The child's end stays as it was recorded.
    assert_failed_with_reason(&daemon, "given-up");
}

#[test]
fn a_restarted_daemon_still_stops_a_run_given_up_on() {
    let fleet = Fleet::start(1).expect("fleet");
    let proxy = proxied_agent(&fleet);
    let mut daemon = Serve::start(&fleet, &["--reconnect-window", "2s"]);
    let marker = format!("rjh-restart-{}", std::process::id());
    let pids = give_up_on_a_run(&daemon, &proxy, "restart", &marker);

    daemon.restart();
    assert!(pids.iter().all(|p| process_alive(*p)), "{pids:?}");
    proxy.reopen();
    assert!(
        wait_for(WAIT, || marked(&marker).is_empty()),
        "the restarted daemon did not stop the run: {}",
        daemon.log_text()
    );
    assert!(wait_for(WAIT, || orphan_list(&daemon)["runs"] == serde_json::json!([])));
    assert_failed_with_reason(&daemon, "restart");
}

/// `rjob invoke` in the background, its stderr in a file to read while it runs.
fn invoke_in_background(fleet: &Fleet, host: &str, script: &str, stderr: &Path) -> Child {
    fleet
        .rjob()
        .args(["invoke", "-H", host, "--script", script])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .spawn()
        .expect("rjob invoke")
}

#[test]
fn an_agent_at_its_limit_makes_children_wait_not_fail() {
    let fleet = Fleet::start_with(2, |cmd| {
        cmd.args(["--max-concurrent-runs", "1"]);
    })
    .expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let host = fleet.agents[0].host();
    let other = fleet.agents[1].host();
    let scratch = fleet.scratch();
    let release = scratch.join("release");

    // One run holds the agent's only slot until the test releases it.
    let hold = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo held",
        release.display()
    );
    let out = daemon.invoke_job(&host, "hold", &hold, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("hold", "Running"), "{}", daemon.job("hold"));

    // Two jobs on that host (hosts are deduplicated within one job): they wait, NotStarted
    // with the reason.
    for name in ["wait1", "wait2"] {
        let out = daemon.invoke_job(&host, name, &format!("echo {name} ran"), &[]);
        assert_eq!(out.code, 0, "{out}");
    }
    for name in ["wait1", "wait2"] {
        assert!(
            wait_for(WAIT, || waits_busy(&child_of(&mut daemon.rjob(), name))),
            "{name} does not wait for a slot: {}",
            child_of(&mut daemon.rjob(), name)
        );
        assert_eq!(daemon.job(name)["state"], "NotStarted", "{}", daemon.job(name));
    }

    // A waiting child gives its throttle slot back: the next host of its job goes ahead.
    let pair = format!("{host},{other}");
    let out = daemon.invoke_job(&pair, "pair", "echo pair ran", &["--throttle-limit", "1"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_for(WAIT, || {
            let children = children_of(&mut daemon.rjob(), "pair");
            children.len() == 2 && waits_busy(&children[0]) && children[1]["state"] == "Completed"
        }),
        "the free host did not go ahead of the busy one: {:?}",
        children_of(&mut daemon.rjob(), "pair")
    );

    // `rjob invoke` waits too, and says why on stderr.
    let waiting_log = scratch.join("waiting.stderr");
    let waiting = invoke_in_background(&fleet, &host, "echo invoked", &waiting_log);
    let says_busy = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(&format!(
                "rjob: {host}: agent busy: at its limit of 1 concurrent runs; retrying"
            ))
    };
    assert!(
        wait_for(WAIT, || says_busy(&waiting_log)),
        "invoke does not say it waits"
    );

    // Ctrl-C still works while an invoke waits: the host is stopped, it never started.
    let interrupted_log = scratch.join("interrupted.stderr");
    let interrupted = invoke_in_background(&fleet, &host, "echo never", &interrupted_log);
    assert!(wait_for(WAIT, || says_busy(&interrupted_log)));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(interrupted.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = Ran::of(interrupted.wait_with_output().expect("wait"));
    let stderr = std::fs::read_to_string(&interrupted_log).unwrap_or_default();
    assert_eq!(out.code, 130, "{out}\n{stderr}");
    assert!(stderr.contains("1 Stopped"), "{stderr}");
    assert!(out.stdout.is_empty(), "{out}");

    // `rjob stop` of a waiting job: its child never starts.
    let out = daemon.invoke_job(&host, "stopped", "echo never", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(wait_for(WAIT, || child_of(&mut daemon.rjob(), "stopped")
        ["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("agent busy"))));
    let out = ran(daemon.rjob().args(["stop", "stopped"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("stopped", "Stopped"),
        "{}",
        daemon.job("stopped")
    );

    // A slot frees: every waiting child starts in turn and completes.
    std::fs::write(&release, b"").expect("release");
    for name in ["hold", "wait1", "wait2", "pair"] {
        let out = ran(daemon.rjob().args(["wait", name, "--timeout", "60s"]));
        assert_eq!(out.code, 0, "{name}: {out}\n{}", daemon.job(name));
    }
    let out = ran(daemon.rjob().args(["receive", "wait2"]));
    assert_eq!(out.lines_of(&host), ["wait2 ran"], "{out}");
    let out = Ran::of(waiting.wait_with_output().expect("wait"));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of(&host), ["invoked"], "{out}");
    let out = ran(daemon.rjob().args(["receive", "stopped"]));
    assert!(out.stdout.is_empty(), "the stopped job ran: {out}");
}
