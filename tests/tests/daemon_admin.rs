//! `rjob daemon status` and `rjob daemon stop`, against a real daemon and agent: the stop is
//! graceful (the run goes on on its agent) and the next daemon picks the job up.

use rjob_tests::{process_alive, ran, wait_for, Daemon, Fleet, WAIT};

fn status(daemon: &Daemon) -> serde_json::Value {
    let out = ran(daemon.rjob().args(["daemon", "status", "--output", "json"]));
    assert_eq!(out.code, 0, "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn status_then_a_graceful_stop_and_a_daemon_that_picks_the_job_up() {
    let fleet = Fleet::start(1).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let pidfile = fleet.scratch().join("run.pid");
    let script = format!("echo $$ > '{}'; sleep 300", pidfile.display());
    let created = daemon.invoke_job(&fleet.hosts(), "long", &script, &[]);
    assert_eq!(created.code, 0, "{created}");
    assert!(daemon.wait_state("long", "Running"), "{}", daemon.job("long"));
    assert!(wait_for(WAIT, || std::fs::read_to_string(&pidfile)
        .is_ok_and(|p| p.ends_with('\n'))));
    let run_pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");

    let s = status(&daemon);
    let pid = i32::try_from(s["pid"].as_u64().expect("pid")).expect("pid");
    assert!(process_alive(pid), "{s}");
    assert_eq!(s["jobs"]["Running"], 1, "{s}");
    assert_eq!(s["identity_loaded"], true, "{s}");
    assert_eq!(s["store_health"], serde_json::Value::Null, "{s}");
    assert!(
        s["store_path"].as_str().is_some_and(|p| p.ends_with("jobs.db")),
        "{s}"
    );
    assert!(s["store_bytes"].as_u64().is_some_and(|n| n > 0), "{s}");
    assert!(s["uptime_ms"].is_u64(), "{s}");
    let text = ran(daemon.rjob().args(["daemon", "status"]));
    assert_eq!(text.code, 0, "{text}");
    assert!(text.stdout.contains("identity   loaded"), "{text}");
    assert!(text.stdout.contains("1 Running"), "{text}");

    let stop = ran(daemon.rjob().args(["daemon", "stop"]));
    assert_eq!(stop.code, 0, "{stop}");
    assert!(stop.stdout.contains("1 running child job"), "{stop}");
    assert!(
        wait_for(WAIT, || !process_alive(pid)),
        "the daemon did not stop: {}",
        daemon.log_text()
    );
    assert!(process_alive(run_pid), "the run goes on on its agent");
    let none = ran(daemon.rjob().args(["daemon", "status"]));
    assert_eq!(none.code, 1, "no daemon runs, and status starts none: {none}");
    assert!(none.stderr.contains("no daemon runs for"), "{none}");
    assert_eq!(
        ran(daemon.rjob().args(["daemon", "stop"])).code,
        0,
        "nothing to stop"
    );

    daemon.restart().expect("a new daemon");
    assert_eq!(daemon.job("long")["state"], "Running", "{}", daemon.job("long"));
    assert_eq!(ran(daemon.rjob().args(["stop", "long"])).code, 0);
    assert!(
        wait_for(WAIT, || !process_alive(run_pid)),
        "the new daemon follows the run"
    );
}

#[test]
fn a_daemon_without_an_identity_loads_one_as_soon_as_it_exists() {
    let fleet = Fleet::start(1).expect("fleet");
    let state = fleet.tmp.path().join("late-state");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&state)
        .expect("state dir");
    let identity = fleet.tmp.path().join("late-pki");
    let rjob = |args: &[&str]| {
        let mut cmd = std::process::Command::new(rjob_tests::bin("rjob"));
        cmd.env("RJOB_IDENTITY", &identity)
            .env("RJOB_STATE_DIR", &state)
            .stdin(std::process::Stdio::null())
            .args(args);
        cmd
    };
    let log = std::fs::File::create(state.join("serve.log")).expect("log");
    let mut serve = rjob(&["serve"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("rjob serve");
    let read_log = || std::fs::read_to_string(state.join("serve.log")).unwrap_or_default();
    assert!(
        wait_for(WAIT, || read_log().contains("rjob daemon ready")),
        "{}",
        read_log()
    );
    let hosts = fleet.hosts();
    let job = |name: &str| {
        ran(&mut rjob(&[
            "invoke",
            "-H",
            &hosts,
            "--as-job",
            "--job-name",
            name,
            "--script",
            "echo up",
        ]))
    };

    let before = ran(&mut rjob(&["daemon", "status", "-o", "json"]));
    assert!(before.stdout.contains("\"identity_loaded\":false"), "{before}");
    let refused = job("early");
    assert_eq!(refused.code, 2, "{refused}");
    assert!(refused.stderr.contains("no controller identity"), "{refused}");
    assert!(
        !refused.stderr.contains("restart"),
        "no restart is needed: {refused}"
    );

    // The identity appears (as `rjob pki init` would make it): the same daemon uses it.
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&fleet.pki.dir)
        .arg(&identity)
        .status()
        .expect("cp");
    assert!(copied.success());
    let created = job("late");
    assert_eq!(created.code, 0, "{created}");
    let waited = ran(&mut rjob(&["wait", "late", "-q"]));
    assert_eq!(
        waited.code,
        0,
        "the job ran with the identity loaded late: {waited}\n{}",
        read_log()
    );
    assert!(
        read_log().contains("controller identity loaded"),
        "{}",
        read_log()
    );
    let _ = serve.kill();
    let _ = serve.wait();
}
