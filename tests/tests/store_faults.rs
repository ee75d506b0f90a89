//! The daemon's job store under faults: a full disk (a small tmpfs as the state directory),
//! and a damaged or lost store (tests/tests/state_dir.rs: the directory against other users).

use std::process::Command;

use rjob_tests::disk::{fill, Tmpfs};
use rjob_tests::{ran, wait_for, Daemon, Fleet, WAIT};

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

#[test]
fn a_full_state_dir_holds_the_job_with_a_reason_and_it_completes_once_space_returns() {
    let fleet = Fleet::start(1).expect("fleet");
    // Declared before the daemon: unmounted after it is killed.
    let _tmpfs = Tmpfs::mount(&fleet.tmp.path().join("state"), "16m");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let lines = 200_000;
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; seq 1 {lines}",
        go = go.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "full", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("full", "Running"), "{}", daemon.job("full"));

    let filler = daemon.state_dir.join("filler");
    fill(&filler);
    std::fs::write(&go, "").expect("go");

    // The job is held Running, says why, and every command warns.
    let reason = "job store: disk full; output held on the agents";
    let mut listed = None;
    let held = wait_for(WAIT, || {
        let out = ran(daemon.rjob().args(["jobs", "--children"]));
        let held = out.stdout.contains(reason);
        listed = Some(out);
        held
    });
    let listed = listed.expect("rjob jobs ran");
    assert!(held, "no reason shown: {listed}");
    assert!(
        listed.stderr.lines().any(
            |l| l.starts_with("rjob: warning: the daemon cannot write its job store")
                && l.contains("disk full")
        ),
        "no warning: {listed}"
    );
    let plain = ran(daemon.rjob().args(["jobs"]));
    assert!(plain.stdout.contains(&format!("reason: {reason}")), "{plain}");
    let job = daemon.job("full");
    assert_eq!(job["state"], "Running", "{job}");
    let waited = ran(daemon.rjob().args(["wait", "full", "--timeout", "1s"]));
    assert_eq!(waited.code, 3, "{waited}");
    assert_eq!(
        waited
            .stderr
            .lines()
            .filter(|l| l.starts_with("rjob: warning:"))
            .count(),
        1,
        "one warning line per command: {waited}"
    );

    // Space comes back: the job completes with all its output, without a restart.
    std::fs::remove_file(&filler).expect("freeing space");
    assert!(daemon.wait_state("full", "Completed"), "{}", daemon.job("full"));
    let received = ran(daemon.rjob().args(["receive", "full"]));
    assert_eq!(received.code, 0, "{received}");
    assert!(
        received.lines_of(&fleet.agents[0].host()) == numbered(lines),
        "output differs"
    );
    assert!(!received.stderr.contains("warning"), "{}", received.stderr);
}

#[test]
fn a_daemon_restarted_on_a_full_state_dir_starts_and_goes_on_once_space_returns() {
    let fleet = Fleet::start(1).expect("fleet");
    let _tmpfs = Tmpfs::mount(&fleet.tmp.path().join("state"), "16m");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let lines = 50_000;
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; seq 1 {lines}",
        go = go.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "restarted", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("restarted", "Running"),
        "{}",
        daemon.job("restarted")
    );
    let filler = daemon.state_dir.join("filler");
    fill(&filler);
    std::fs::write(&go, "").expect("go");
    let reason = "job store: disk full; output held on the agents";
    let held = |daemon: &Daemon| {
        wait_for(WAIT, || {
            daemon.job("restarted")["children"][0]["reason"] == reason
        })
    };
    assert!(held(&daemon), "{}", daemon.job("restarted"));

    // Killed and started again while the disk is still full: it starts, and holds the job.
    daemon.restart().expect("a daemon starts on a full state dir");
    assert!(held(&daemon), "{}", daemon.job("restarted"));
    std::fs::remove_file(&filler).expect("freeing space");
    assert!(
        daemon.wait_state("restarted", "Completed"),
        "{}",
        daemon.job("restarted")
    );
    let received = ran(daemon.rjob().args(["receive", "restarted"]));
    assert!(
        received.lines_of(&fleet.agents[0].host()) == numbered(lines),
        "output differs"
    );
}

/// `rjob start` jobs j1..jN (Ids 1..N), each run to its end.
fn local_jobs(daemon: &Daemon, n: usize) {
    for i in 1..=n {
        let name = format!("j{i}");
        let out = ran(daemon
            .rjob()
            .args(["start", "--name", &name, "--script", "echo hi"]));
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stdout.starts_with(&format!("Id {i} ")), "{out}");
        assert!(daemon.wait_state(&name, "Completed"), "{}", daemon.job(&name));
    }
}

/// The Ids `rjob jobs` lists, with what it printed.
fn listed_ids(daemon: &Daemon) -> (Vec<u64>, rjob_tests::Ran) {
    let out = ran(daemon.rjob().args(["jobs", "--output", "json"]));
    let jobs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let ids = jobs
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["id"].as_u64()).collect())
        .unwrap_or_default();
    (ids, out)
}

/// The next job's Id.
fn next_id(daemon: &Daemon) -> String {
    let out = ran(daemon
        .rjob()
        .args(["start", "--name", "next", "--script", "true"]));
    assert_eq!(out.code, 0, "{out}");
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn lost_line(ran: &rjob_tests::Ran) -> Option<&str> {
    ran.stderr
        .lines()
        .find(|l| l.starts_with("rjob: warning: job store: job") && l.contains("missing from the job store"))
}

#[test]
fn a_truncated_wal_is_reported_and_no_id_is_handed_out_twice() {
    let fleet = Fleet::start(0).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    local_jobs(&daemon, 5);
    daemon.kill9();
    let wal = daemon.state_dir.join("jobs.db-wal");
    let len = std::fs::metadata(&wal).expect("the WAL").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncating the WAL");
    daemon.restart().expect("restart");

    let (ids, out) = listed_ids(&daemon);
    assert!(ids.len() < 5, "the truncation lost nothing: {out}");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "{out}");
    let lost = match ids.len() {
        4 => "job 5".to_string(),
        n => format!("jobs {}-5", n + 1),
    };
    let line = lost_line(&out).unwrap_or_else(|| panic!("no notice of the lost jobs: {out}"));
    assert!(
        line.starts_with(&format!("rjob: warning: job store: {lost} missing")),
        "{line}"
    );
    assert!(
        daemon.log_text().contains(&format!("job store: {lost} missing")),
        "{}",
        daemon.log_text()
    );
    // A lost job named by its Id is said to be lost, not unknown.
    let received = ran(daemon.rjob().args(["receive", "5"]));
    assert_eq!(received.code, 2, "{received}");
    assert!(
        received.stderr.trim_end().ends_with(
            "rjob: error: job 5 was lost from the job store (found missing when the daemon started): its state and output are gone"
        ),
        "{received}"
    );
    assert_eq!(next_id(&daemon), "6");
}

#[test]
fn a_deleted_wal_is_reported_and_ids_go_on() {
    let fleet = Fleet::start(0).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    local_jobs(&daemon, 5);
    // A removed job is not reported lost.
    let out = ran(daemon.rjob().args(["remove", "j5"]));
    assert_eq!(out.code, 0, "{out}");
    daemon.kill9();
    for file in ["jobs.db-wal", "jobs.db-shm"] {
        std::fs::remove_file(daemon.state_dir.join(file)).expect("removing the WAL");
    }
    daemon.restart().expect("restart");

    let (ids, out) = listed_ids(&daemon);
    assert_eq!(ids, Vec::<u64>::new(), "{out}");
    let line = lost_line(&out).unwrap_or_else(|| panic!("no notice of the lost jobs: {out}"));
    assert!(
        line.starts_with("rjob: warning: job store: jobs 1-4 missing"),
        "{line}"
    );
    assert_eq!(next_id(&daemon), "6");
    // Once: the next daemon has nothing more to report.
    daemon.restart().expect("restart");
    let (ids, out) = listed_ids(&daemon);
    assert_eq!(ids, [6], "{out}\n--- the daemon's log\n{}", daemon.log_text());
    assert_eq!(lost_line(&out), None, "{out}");
}

#[test]
fn a_job_whose_request_is_damaged_ends_failed_with_the_reason() {
    let fleet = Fleet::start(2).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; echo done", go.display());
    // One child runs, the other waits for the throttle slot.
    let out = daemon.invoke_job(&fleet.hosts(), "damaged", &script, &["--throttle-limit", "1"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("damaged", "Running"),
        "{}",
        daemon.job("damaged")
    );
    daemon.kill9();
    let db = daemon.state_dir.join("jobs.db");
    let sql = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE jobs SET request = x'ff' WHERE name = 'damaged'\")\nc.commit()\n";
    let out = ran(Command::new("python3").args(["-c", sql]).arg(&db));
    assert_eq!(
        out.code, 0,
        "python3 with sqlite3 damages the stored request: {out}"
    );
    daemon.restart().expect("restart");
    std::fs::write(&go, "").expect("go");

    assert!(
        daemon.wait_state("damaged", "Failed"),
        "{}",
        daemon.job("damaged")
    );
    let job = daemon.job("damaged");
    // The child that was running is followed to its end; the queued one cannot start.
    assert_eq!(job["children"][0]["state"], "Completed", "{job}");
    assert_eq!(job["children"][1]["state"], "Failed", "{job}");
    let reason = job["children"][1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the job store holds a damaged request for job 1 (")
            && reason.ends_with("): it cannot be started"),
        "{job}"
    );
    let received = ran(daemon.rjob().args(["receive", "damaged"]));
    assert_eq!(received.lines_of(&fleet.agents[0].host()), ["done"], "{received}");
}

#[test]
fn a_store_that_cannot_be_opened_is_reported_by_the_command_that_starts_the_daemon() {
    let fleet = Fleet::start(0).expect("fleet");
    let state = fleet.tmp.path().join("unopenable");
    std::fs::create_dir(&state).expect("state dir");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    std::fs::write(state.join("jobs.db"), vec![b'x'; 8192]).expect("a damaged store");
    let out = ran(fleet.rjob().env("RJOB_STATE_DIR", &state).args(["jobs"]));
    assert_eq!(out.code, 2, "{out}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rjob: error: the daemon could not start: job store ")
            && last.contains("jobs.db: file is not a database: move it aside"),
        "{out}"
    );
    assert!(!out.stderr.contains("did not answer"), "{out}");
}

/// Runs `cmd` to its end, killing it if it is still going after the global timeout (a daemon
/// that should have refused to start).
#[test]
fn a_receive_on_a_full_state_dir_waits_for_space_and_loses_nothing() {
    let fleet = Fleet::start(1).expect("fleet");
    let _tmpfs = Tmpfs::mount(&fleet.tmp.path().join("state"), "16m");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let lines = 50_000;
    let out = daemon.invoke_job(&fleet.hosts(), "done", &format!("seq 1 {lines}"), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("done", "Completed"), "{}", daemon.job("done"));

    let filler = daemon.state_dir.join("filler");
    fill(&filler);
    // The received marks cannot be written: the receive waits, it does not fail.
    let got = fleet.scratch().join("received.txt");
    let receiving = daemon
        .rjob()
        .args(["receive", "done"])
        .stdout(std::fs::File::create(&got).expect("output file"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rjob receive");
    let held = wait_for(WAIT, || {
        let out = ran(daemon.rjob().args(["jobs"]));
        out.stderr
            .lines()
            .any(|l| l.starts_with("rjob: warning: the daemon cannot write its job store"))
    });
    assert!(held, "no warning while the received mark cannot be written");
    std::fs::remove_file(&filler).expect("freeing space");
    let mut received = rjob_tests::Ran::of(receiving.wait_with_output().expect("receive ends"));
    assert_eq!(received.code, 0, "{received}");
    received.stdout = std::fs::read_to_string(&got).expect("received output");
    let got_lines = received.lines_of(&fleet.agents[0].host());
    assert!(
        got_lines == numbered(lines),
        "output differs: {} lines, starting {:?}",
        got_lines.len(),
        received.stdout.lines().take(3).collect::<Vec<_>>()
    );
    // All of it was taken: nothing is delivered twice.
    let again = ran(daemon.rjob().args(["receive", "done"]));
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.is_empty(), "delivered twice: {again}");
}
