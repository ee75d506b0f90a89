//! `rjob serve --retention AGE --max-store-size SIZE [--force-retention]`, on the real daemon
//! over real agents, in both stores (SQLite and a throwaway PostgreSQL): finished jobs go by
//! age and by size, the oldest first; jobs not finished and jobs with unreceived output stay,
//! unless forced (and then only finished ones go by age, and a running job only when the
//! store is still over its size once every finished job is gone).

use std::process::{Command, Stdio};

use rjob_tests::pg::{Cluster, Database};
use rjob_tests::{bin, ran, wait_for, Daemon, Fleet, WAIT};

/// The two stores: `rjob serve` arguments for each (and the database, kept while it runs).
enum Store {
    Sqlite,
    Postgres(Database<'static>),
}

impl Store {
    fn postgres() -> Store {
        Store::Postgres(Cluster::shared().database().expect("a database of its own"))
    }

    fn args(&self) -> Vec<String> {
        match self {
            Store::Sqlite => Vec::new(),
            Store::Postgres(db) => vec!["--store".into(), db.url()],
        }
    }
}

/// Starts a daemon on `store` with `more` arguments, sweeping every 200 ms.
fn daemon(fleet: &Fleet, store: &Store, more: &[&str]) -> Daemon {
    let mut args = store.args();
    args.extend(["--retention-interval", "200ms"].map(String::from));
    args.extend(more.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_with(fleet, &args).expect("daemon")
}

/// The names of the daemon's jobs; `None` when `rjob jobs` did not answer.
fn names(daemon: &Daemon) -> Option<Vec<String>> {
    let out = ran(daemon.rjob().args(["jobs", "--output", "json"]));
    if out.code != 0 {
        return None;
    }
    let jobs: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    Some(
        jobs.as_array()?
            .iter()
            .filter_map(|j| j["name"].as_str().map(str::to_string))
            .collect(),
    )
}

fn has(daemon: &Daemon, name: &str) -> bool {
    names(daemon).is_some_and(|n| n.iter().any(|j| j == name))
}

/// Waits until `name` is gone from `rjob jobs` (which answered).
fn gone(daemon: &Daemon, name: &str) -> bool {
    wait_for(WAIT, || {
        names(daemon).is_some_and(|n| !n.iter().any(|j| j == name))
    })
}

/// Runs `script` as job `name` and waits for it to complete.
fn completed(daemon: &Daemon, fleet: &Fleet, name: &str, script: &str) {
    let out = daemon.invoke_job(&fleet.hosts(), name, script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state(name, "Completed"),
        "{name} never completed: {}",
        daemon.job(name)
    );
}

/// Takes a job's output with a consuming receive.
fn receive(daemon: &Daemon, name: &str) {
    let r = ran(daemon.rjob().args(["receive", name]));
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(daemon.job(name)["has_more_data"], false, "{}", daemon.job(name));
}

fn by_age(store: Store) {
    let fleet = Fleet::start(1).expect("fleet");
    let mut d = daemon(&fleet, &store, &["--retention", "3s"]);
    // Ended first, never received: past the age before `received` is, and still kept.
    completed(&d, &fleet, "unreceived", "echo b");
    completed(&d, &fleet, "received", "echo a");
    receive(&d, "received");
    let out = d.invoke_job(&fleet.hosts(), "running", "echo started; sleep 600", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(d.wait_state("running", "Running"), "{}", d.job("running"));
    assert!(gone(&d, "received"), "never removed by age: {}", d.log_text());
    assert!(has(&d, "unreceived"), "a job with unreceived output stays");
    assert!(has(&d, "running"), "a job still going stays");
    let log = d.log_text();
    assert!(
        log.contains("retention: removed job") && log.contains("more than the retention of 3s"),
        "each removal is logged with why: {log}"
    );

    // Forced: the unreceived one goes by age too; the running one never does.
    drop(d);
    d = daemon(&fleet, &store, &["--retention", "3s", "--force-retention"]);
    assert!(
        gone(&d, "unreceived"),
        "never removed when forced: {}",
        d.log_text()
    );
    assert!(has(&d, "running"), "a running job is not old: it stays");
    assert_eq!(d.job("running")["state"], "Running", "{}", d.job("running"));
    let r = ran(d.rjob().args(["stop", "running"]));
    assert_eq!(r.code, 0, "{r}");
}

/// A script writing about 700 KB of base64 noise (nothing compresses it).
const NOISE: &str = "head -c 525000 /dev/urandom | base64";

fn by_size(store: Store) {
    let fleet = Fleet::start(1).expect("fleet");
    let mut d = daemon(&fleet, &store, &[]);
    for name in ["a", "b", "c"] {
        completed(&d, &fleet, name, NOISE);
    }
    receive(&d, "a");
    receive(&d, "b");
    let out = d.invoke_job(&fleet.hosts(), "d", "echo started; sleep 600", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(d.wait_state("d", "Running"), "{}", d.job("d"));

    // About 2.1 MB stored, the limit 1 MiB: a and b go (the oldest first), c stays
    // (unreceived) and d too (running), over the limit or not.
    drop(d);
    d = daemon(&fleet, &store, &["--max-store-size", "1MiB"]);
    assert!(gone(&d, "a"), "a never removed by size: {}", d.log_text());
    assert!(gone(&d, "b"), "b never removed by size: {}", d.log_text());
    assert!(has(&d, "c") && has(&d, "d"), "{:?}", names(&d));
    let log = d.log_text();
    assert!(
        log.contains("over its limit of 1.0 MiB"),
        "each removal is logged with why: {log}"
    );

    // Forced, under a limit c alone is over (about 0.7 MB stored): c goes (finished,
    // unreceived), and the store is then under its limit: d, still going, stays.
    drop(d);
    d = daemon(
        &fleet,
        &store,
        &["--max-store-size", "400KiB", "--force-retention"],
    );
    assert!(gone(&d, "c"), "c never removed when forced: {}", d.log_text());
    assert!(
        has(&d, "d"),
        "under the limit without d: it stays ({:?})",
        names(&d)
    );
    assert_eq!(d.job("d")["state"], "Running", "{}", d.job("d"));
    let r = ran(d.rjob().args(["stop", "d"]));
    assert_eq!(r.code, 0, "{r}");
}

#[test]
fn sqlite_removes_finished_jobs_by_age_and_keeps_the_rest_unless_forced() {
    by_age(Store::Sqlite);
}

#[test]
fn postgres_removes_finished_jobs_by_age_and_keeps_the_rest_unless_forced() {
    by_age(Store::postgres());
}

#[test]
fn sqlite_removes_the_oldest_finished_jobs_by_size() {
    by_size(Store::Sqlite);
}

#[test]
fn postgres_removes_the_oldest_finished_jobs_by_size() {
    by_size(Store::postgres());
}

#[test]
fn retention_comes_from_the_config_file_and_bad_values_are_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let rjob = |args: &[&str], text: &str| {
        std::fs::write(&config, text).expect("write config");
        ran(Command::new(bin("rjob"))
            .args(args)
            .env("RJOB_CONFIG", &config)
            .env("RJOB_STATE_DIR", dir.path().join("state"))
            .env_remove("RJOB_LOG")
            .stdin(Stdio::null()))
    };
    let r = rjob(
        &["config", "show"],
        "retention = \"30d\"\nmax_store_size = \"10GiB\"\nforce_retention = true\n",
    );
    assert_eq!(r.code, 0, "{r}");
    for (key, value) in [
        ("retention", "30days"),
        ("max_store_size", "10.0 GiB"),
        ("force_retention", "true"),
    ] {
        let line = r.stdout.lines().find(|l| l.starts_with(key)).unwrap_or_default();
        assert!(
            line.contains(value) && line.contains("(file "),
            "{key}: {line:?} in {r}"
        );
    }
    let r = rjob(&["config", "show"], "");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("retention") && l.contains("none") && l.contains("(default)")),
        "{r}"
    );
    let r = rjob(&["config", "show"], "max_store_size = \"lots\"\n");
    assert_eq!(r.code, 2, "{r}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{r}");
    assert!(
        r.stderr.contains("max_store_size") && r.stderr.contains("10GiB"),
        "{r}"
    );
    let r = rjob(&["config", "show"], "retentoin = \"30d\"\n");
    assert_eq!(r.code, 2, "unknown keys are refused: {r}");
    for (flag, value) in [("--retention", "soon"), ("--max-store-size", "0")] {
        let r = ran(Command::new(bin("rjob"))
            .args(["serve", "--state-dir"])
            .arg(dir.path().join("state"))
            .args([flag, value])
            .env_remove("RJOB_CONFIG")
            .stdin(Stdio::null()));
        assert_eq!(r.code, 2, "{r}");
        assert!(r.stderr.contains(flag), "{r}");
        assert!(!r.stderr.contains("panicked"), "{r}");
    }
}
