//! `rjob serve --store postgres://…`: a daemon on a throwaway PostgreSQL runs a job over real
//! agents, `rjob receive` gets every byte, and a daemon killed (`kill -9`) mid-job and started
//! again on the same database finds the job, finishes it, and loses nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use rjob_tests::pg::Cluster;
use rjob_tests::{bin, ran, wait_for, Daemon, Fleet, Ran, WAIT};

/// The `(stdout, stderr)` bytes of each host, by file name stem, from `receive --output-dir`.
fn received(dir: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut hosts: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .collect();
    hosts.sort();
    hosts
        .into_iter()
        .map(|h| {
            let read = |ext: &str| std::fs::read(dir.join(format!("{h}.{ext}"))).unwrap_or_default();
            let (out, err) = (read("out"), read("err"));
            (h, out, err)
        })
        .collect()
}

fn receive_into(daemon: &Daemon, job: &str, dir: &Path, keep: bool) -> Ran {
    let mut cmd = daemon.rjob();
    cmd.args(["receive", job, "--output-dir"]).arg(dir);
    if keep {
        cmd.arg("--keep");
    }
    ran(&mut cmd)
}

#[test]
fn a_daemon_on_postgres_survives_kill_9_mid_job_and_delivers_every_byte() {
    let fleet = Fleet::start(2).expect("fleet");
    let db = Cluster::shared().database().expect("database");
    let mut daemon = Daemon::start_with(&fleet, &["--store", &db.url()]).expect("daemon");
    let go = fleet.scratch().join("go");
    // Half its output, then it waits for the test; the other half once the daemon is back.
    let script = format!(
        "seq 1 3000; while [ ! -e {go} ]; do sleep 0.05; done; seq 3001 6000; echo done >&2",
        go = go.display()
    );
    let out = ran(daemon.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--as-job",
        "--job-name",
        "pg",
        "--script",
        &script,
    ]));
    assert_eq!(out.code, 0, "{out}");
    // Stored in PostgreSQL before the kill: every host's first half.
    let stored = || {
        db.psql("SELECT coalesce(sum(length(data)), 0) FROM output")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let half_bytes: usize = (1..=3000).map(|n: usize| n.to_string().len() + 1).sum::<usize>() * 2;
    assert!(
        wait_for(WAIT, || stored() >= half_bytes),
        "the first half never reached the store ({} of {half_bytes} bytes): {}",
        stored(),
        daemon.log_text()
    );
    daemon
        .restart()
        .expect("the daemon comes back on the same database");
    std::fs::write(&go, b"").expect("go");
    assert!(
        wait_for(WAIT, || daemon.job("pg")["state"] == "Completed"),
        "never Completed after the restart: {}\n{}",
        daemon.job("pg"),
        daemon.log_text()
    );
    assert!(
        !daemon.state_dir.join("jobs.db").exists(),
        "the job store is PostgreSQL, not a SQLite file in the state directory"
    );

    let want_out: Vec<u8> = (1..=6000).flat_map(|n| format!("{n}\n").into_bytes()).collect();
    let check = |dir: &Path, what: &str| {
        let hosts = received(dir);
        assert_eq!(hosts.len(), 2, "{what}: one set of files per host: {hosts:?}");
        for (host, out, err) in hosts {
            assert!(
                out == want_out,
                "{what}: {host}'s stdout differs ({} bytes)",
                out.len()
            );
            assert_eq!(err, b"done\n", "{what}: {host}'s stderr");
        }
    };
    let kept = fleet.scratch().join("kept");
    let r = receive_into(&daemon, "pg", &kept, true);
    assert_eq!(r.code, 0, "{r}");
    check(&kept, "receive --keep");

    // Killed again, started again: the finished job and all its output are still there.
    daemon.restart().expect("the daemon comes back again");
    let job = daemon.job("pg");
    assert_eq!(job["state"], "Completed", "{job}");
    let kept_again = fleet.scratch().join("kept-again");
    let r = receive_into(&daemon, "pg", &kept_again, true);
    assert_eq!(r.code, 0, "{r}");
    check(&kept_again, "receive --keep after the second restart");
    // A consuming receive takes it all, once.
    let r = ran(daemon.rjob().args(["receive", "pg"]));
    assert_eq!(r.code, 0, "{r}");
    let want_lines: Vec<String> = (1..=6000).map(|n| n.to_string()).collect();
    for agent in &fleet.agents {
        assert!(
            r.lines_of(&agent.host()) == want_lines,
            "{}'s lines differ",
            agent.host()
        );
    }
    for agent in &fleet.agents {
        let line = format!("{} [stderr]: done", agent.host());
        assert_eq!(r.stdout.lines().filter(|l| *l == line).count(), 1, "{line}");
    }
    let job = daemon.job("pg");
    assert_eq!(job["has_more_data"], false, "everything received: {job}");
    let r = ran(daemon.rjob().args(["receive", "pg"]));
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "nothing twice: {r}");
}

#[test]
fn a_store_that_is_neither_postgres_nor_a_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = ran(Command::new(bin("rjob"))
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--store", "mysql://db/jobs"])
        .stdin(Stdio::null()));
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("not a job store: give a postgres:// URL"),
        "{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{r}");
}

#[test]
fn a_database_out_of_reach_stops_the_daemon_with_what_to_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!(
        "postgres:///jobs?host={}&user=rjob",
        dir.path().join("no-server").display()
    );
    let r = ran(Command::new(bin("rjob"))
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--store", &url])
        .env_remove("RJOB_LOG")
        .stdin(Stdio::null()));
    assert_ne!(r.code, 0, "{r}");
    assert!(
        r.stderr
            .contains("check that the database server runs and that the URL is right"),
        "{r}"
    );
    assert!(!r.stderr.contains("panicked"), "{r}");
}

#[test]
fn the_store_may_come_from_the_config_file_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let serve = |config_text: &str| {
        std::fs::write(&config, config_text).expect("write config");
        ran(Command::new(bin("rjob"))
            .arg("serve")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("RJOB_CONFIG", &config)
            .env_remove("RJOB_STORE")
            .env_remove("RJOB_LOG")
            .stdin(Stdio::null()))
    };
    let unreachable = format!(
        "postgres:///jobs?host={}&user=rjob",
        dir.path().join("no-server").display()
    );
    let r = serve(&format!("store = \"{unreachable}\"\n"));
    assert!(
        r.stderr.contains(&format!("job store {unreachable}")),
        "the file's store is used: {r}"
    );
    let r = serve("store = \"mysql://db/jobs\"\n");
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("store: not a job store"), "{r}");
}

#[test]
fn postgres_restarted_mid_job_loses_nothing_and_repeats_nothing() {
    // A cluster of its own: the shared one stays up for the other tests.
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.database().expect("database");
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start_with(&fleet, &["--store", &db.url()]).expect("daemon");
    // 40,000 lines over a few seconds, so that the server goes down while output flows.
    let script = "for i in $(seq 1 40); do seq $((i*1000-999)) $((i*1000)); sleep 0.05; done";
    let out = ran(daemon.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--as-job",
        "--job-name",
        "flow",
        "--script",
        script,
    ]));
    assert_eq!(out.code, 0, "{out}");
    let stored = || {
        db.psql("SELECT count(*) FROM output")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_for(WAIT, || stored() > 0),
        "no output stored: {}",
        daemon.log_text()
    );
    cluster
        .restart(true)
        .expect("pg_ctl -m immediate stop, then start");
    assert!(
        wait_for(WAIT, || daemon.job("flow")["state"] == "Completed"),
        "never Completed after the server's restart: {}\n{}",
        daemon.job("flow"),
        daemon.log_text()
    );
    let r = ran(daemon.rjob().args(["receive", "flow"]));
    assert_eq!(r.code, 0, "{r}");
    let want: Vec<String> = (1..=40_000).map(|n| n.to_string()).collect();
    for agent in &fleet.agents {
        let got = r.lines_of(&agent.host());
        assert!(
            got == want,
            "{}: {} lines, first difference at {:?}",
            agent.host(),
            got.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
    }
}
