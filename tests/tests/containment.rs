//! Nothing of a run outlives it (issue 11, point 6), under both mechanisms: each run in a
//! cgroup v2 of its own (killed with `cgroup.kill`), or the agent as a child subreaper. The
//! agent's spool dir and run records cannot be planted (point 13), and the spool has a total
//! quota (point 12).
//!
//! Processes are found by a unique marker in their command line (`exec -a MARKER sleep`),
//! written in the scripts so that the script text itself never holds the marker whole (the
//! `rjob` command line carries the script).
//!
//! These tests run as root on a machine with cgroup2 mounted: the cgroup tests force
//! `--containment cgroup`, so an agent that cannot have cgroups refuses to start and the test
//! fails with its reason; nothing is skipped.

use std::process::{Command, Stdio};

use rjob_tests::{bin, ran, wait_for, Daemon, Fleet, WAIT};

#[path = "containment/support.rs"]
mod support;
use support::*;

fn fleet(mode: &str) -> Fleet {
    let fleet = Fleet::start_with(1, |cmd| {
        cmd.args(["--containment", mode]);
    })
    .expect("an agent with this containment (cgroup needs root and cgroup2 mounted)");
    let log = fleet.agents[0].log_text();
    let expected = if mode == CGROUP {
        "containment: cgroup v2"
    } else {
        "containment: child subreaper"
    };
    assert!(log.contains(expected), "the agent logs its mechanism: {log}");
    fleet
}

/// Under the cgroup mechanism, every marked process is in a run's cgroup.
fn assert_in_run_cgroups(mode: &str, marker: &str) {
    if mode != CGROUP {
        return;
    }
    for pid in marked(marker) {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let v2 = cgroup.lines().find(|l| l.starts_with("0::")).unwrap_or_default();
        assert!(
            v2.contains("/rjob-runs/"),
            "{pid} is in its run's cgroup: {cgroup}"
        );
    }
}

// --- a timeout -------------------------------------------------------------------------

fn timeout_kills_everything(mode: &str) {
    let fleet = fleet(mode);
    let marker = unique("rjc-timeout-");
    let invoke = spawn_invoke(
        &fleet,
        &escaping_script(&marker, "sleep 1000"),
        &["--timeout", "3s"],
    );
    assert_escapes_running(&marker);
    let out = finish(invoke);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("timed out"), "{out}");
    assert!(none_left(&marker), "survived the timeout: {:?}", marked(&marker));
}

#[test]
fn cgroup_a_timeout_kills_setsid_and_double_forked_processes() {
    timeout_kills_everything(CGROUP);
}

#[test]
fn subreaper_a_timeout_kills_setsid_and_double_forked_processes() {
    timeout_kills_everything(SUBREAPER);
}

/// The user runs switch to (created once; prefix `rjc`).
const RUN_USER: &str = "rjcrun";

fn run_user_fleet(mode: &str) -> Fleet {
    rjob_tests::users::require_root("runs as another user need a root agent");
    static USER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    USER.get_or_init(|| rjob_tests::users::ensure_user(RUN_USER, None));
    let policy = format!(
        "[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"{RUN_USER}\"]\ndefault = \"{RUN_USER}\"\n"
    );
    Fleet::start_policy(1, &policy, |cmd| {
        cmd.args(["--containment", mode]);
    })
    .expect("an agent with this containment")
}

/// A run as another user moves into its cgroup before it drops root's privileges.
fn another_users_timeout_kills_everything(mode: &str) {
    let fleet = run_user_fleet(mode);
    let marker = unique("rjc-user-");
    let invoke = spawn_invoke(
        &fleet,
        &escaping_script(&marker, "sleep 1000"),
        &["--user", RUN_USER, "--timeout", "3s"],
    );
    assert_escapes_running(&marker);
    assert_in_run_cgroups(mode, &marker);
    let uid = ran(Command::new("id").args(["-u", RUN_USER]))
        .stdout
        .trim()
        .to_string();
    for pid in marked(&marker) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.split_whitespace().skip(1).all(|id| id == uid),
            "{pid} runs as {RUN_USER}: {line}"
        );
    }
    let out = finish(invoke);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("timed out"), "{out}");
    assert!(none_left(&marker), "survived the timeout: {:?}", marked(&marker));
}

#[test]
fn cgroup_a_run_as_another_user_leaves_nothing_behind() {
    another_users_timeout_kills_everything(CGROUP);
}

#[test]
fn subreaper_a_run_as_another_user_leaves_nothing_behind() {
    another_users_timeout_kills_everything(SUBREAPER);
}

// --- a plain rjob invoke that ends -----------------------------------------------------

fn end_kills_everything(mode: &str) {
    let fleet = fleet(mode);
    let marker = unique("rjc-end-");
    let flag = fleet.scratch().join("go");
    let tail = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo ending",
        flag.display()
    );
    let invoke = spawn_invoke(&fleet, &escaping_script(&marker, &tail), &[]);
    assert_escapes_running(&marker);
    std::fs::write(&flag, "").expect("flag");
    let out = finish(invoke);
    assert_eq!(out.code, 0, "{out}");
    let lines = out.lines_of(&fleet.agents[0].host());
    assert_eq!(lines, ["started", "ending"], "{out}");
    assert!(
        none_left(&marker),
        "survived the run's end: {:?}",
        marked(&marker)
    );
}

#[test]
fn cgroup_the_end_of_an_invoke_kills_what_the_script_left_running() {
    end_kills_everything(CGROUP);
}

#[test]
fn subreaper_the_end_of_an_invoke_kills_what_the_script_left_running() {
    end_kills_everything(SUBREAPER);
}

// --- rjob stop of a job ----------------------------------------------------------------

fn stop_kills_everything(mode: &str) {
    let fleet = fleet(mode);
    let daemon = Daemon::start(&fleet).expect("daemon");
    let marker = unique("rjc-stop-");
    start_escaping_job(&daemon, &fleet, "escaper", &marker);
    let out = ran(daemon.rjob().args(["stop", "escaper"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("escaper", "Stopped"),
        "{}",
        daemon.job("escaper")
    );
    assert!(none_left(&marker), "survived the stop: {:?}", marked(&marker));
}

#[test]
fn cgroup_stopping_a_job_kills_setsid_and_double_forked_processes() {
    stop_kills_everything(CGROUP);
}

#[test]
fn subreaper_stopping_a_job_kills_setsid_and_double_forked_processes() {
    stop_kills_everything(SUBREAPER);
}

/// In a cgroup, a stop's SIGTERM reaches the processes that left the run's process group
/// too, and they get the rest of `kill_grace` to clean up even when the main process ends at
/// once; each process gets the signal once.
#[test]
fn cgroup_a_stop_sends_one_sigterm_to_every_process_of_the_run() {
    let fleet = fleet(CGROUP);
    let daemon = Daemon::start(&fleet).expect("daemon");
    let log = fleet.scratch().join("terms");
    let log = log.display();
    let script = format!(
        "trap 'echo main >> {log}; exit 0' TERM\n\
         setsid bash -c 'trap \"echo setsid >> {log}; exit 0\" TERM; echo ready >> {log}; while :; do sleep 0.05; done' &\n\
         while :; do sleep 0.05; done\n"
    );
    let out = daemon.invoke_job(&fleet.hosts(), "terms", &script, &["--shell", "bash"]);
    assert_eq!(out.code, 0, "{out}");
    let read = || std::fs::read_to_string(fleet.scratch().join("terms")).unwrap_or_default();
    assert!(wait_for(WAIT, || read().contains("ready")), "{}", read());
    assert_eq!(ran(daemon.rjob().args(["stop", "terms"])).code, 0);
    assert!(daemon.wait_state("terms", "Stopped"), "{}", daemon.job("terms"));
    let text = read();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["main", "ready", "setsid"], "one SIGTERM each: {text}");
}

/// Local jobs (`rjob start`) run in the daemon's embedded agent, with the same containment
/// (auto: cgroup here, as root with cgroup2).
#[test]
fn stopping_a_local_job_kills_what_left_its_process_group() {
    let fleet = Fleet::start(0).expect("pki");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let marker = unique("rjc-local-");
    let out = ran(daemon.rjob().args([
        "start",
        "--name",
        "local-escaper",
        "--shell",
        "bash",
        "--script",
        &escaping_script(&marker, "sleep 1000"),
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_escapes_running(&marker);
    assert_eq!(ran(daemon.rjob().args(["stop", "local-escaper"])).code, 0);
    assert!(
        daemon.wait_state("local-escaper", "Stopped"),
        "{}",
        daemon.job("local-escaper")
    );
    assert!(none_left(&marker), "survived the stop: {:?}", marked(&marker));
    assert!(
        daemon.log_text().contains("containment: cgroup v2"),
        "{}",
        daemon.log_text()
    );
}

/// A daemon that is not root has no cgroup of its own to delegate: its local jobs are
/// contained by the subreaper (the daemon is multi-threaded, unlike the agent).
#[test]
fn a_daemon_that_is_not_root_contains_local_jobs_as_a_subreaper() {
    let _ = run_user_fleet(SUBREAPER); // creates the user
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let out = ran(Command::new("chown").arg(RUN_USER).arg(tmp.path()));
    assert_eq!(out.code, 0, "{out}");
    let home = format!("/home/{RUN_USER}");
    let rjob = |args: &[&str]| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", RUN_USER, "--", "env"])
            .arg(format!("HOME={home}"))
            .arg(format!("RJOB_STATE_DIR={}", state.display()))
            .arg(bin("rjob"))
            .args(args)
            .stdin(Stdio::null());
        ran(&mut cmd)
    };
    let marker = unique("rjc-nonroot-");
    let out = rjob(&[
        "start",
        "--name",
        "escaper",
        "--shell",
        "bash",
        "--script",
        &escaping_script(&marker, "sleep 1000"),
    ]);
    assert_eq!(out.code, 0, "{out}");
    let daemon = marked(&state.display().to_string());
    assert_escapes_running(&marker);
    let out = rjob(&["stop", "escaper"]);
    assert_eq!(out.code, 0, "{out}");
    let stopped = wait_for(WAIT, || rjob(&["jobs", "escaper"]).stdout.contains("Stopped"));
    let left = none_left(&marker);
    let log = std::fs::read_to_string(state.join("daemon.log")).unwrap_or_default();
    for pid in daemon {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(stopped, "{log}");
    assert!(left, "survived the stop: {:?}", marked(&marker));
    assert!(log.contains("containment: child subreaper"), "{log}");
}
