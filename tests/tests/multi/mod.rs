//! Shared by the tests of several daemons on one PostgreSQL store: a fleet, a database,
//! three `rjob serve --store postgres://…` daemons, and what the tests read back from the
//! store, the agents and `rjob receive`.

#![allow(dead_code)] // each test file uses its own part of these helpers

use std::path::Path;
use std::time::Duration;

use rjob_tests::pg::{Cluster, Database};
use rjob_tests::{ran, wait_for, Daemon, Fleet};

/// How long a whole job may take under heavy load.
pub const LONG: Duration = Duration::from_secs(180);

/// A short lease, so that takeovers happen within seconds even under load: a heartbeat
/// every 500 ms, a TTL of 3 s.
pub const SHORT_LEASE: [(&str, &str); 2] = [("RJOB_HEARTBEAT_MS", "500"), ("RJOB_LEASE_TTL_MS", "3000")];

pub struct Multi<'c> {
    pub fleet: Fleet,
    pub db: Database<'c>,
    pub daemons: Vec<Daemon>,
}

/// `agents` agents, a database of `cluster`, and `daemons` daemons on it with `env`.
pub fn start<'c>(cluster: &'c Cluster, agents: usize, daemons: usize, env: &[(&str, &str)]) -> Multi<'c> {
    let fleet = Fleet::start(agents).expect("fleet");
    let db = cluster.database().expect("database");
    let url = db.url();
    let daemons = (0..daemons)
        .map(|i| {
            Daemon::start_named_env(&fleet, &format!("daemon-{i}"), &["--store", &url], env).expect("daemon")
        })
        .collect();
    Multi { fleet, db, daemons }
}

impl Multi<'_> {
    /// One number from the store.
    pub fn num(&self, sql: &str) -> i64 {
        self.db
            .psql(sql)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    }

    /// The Id of job `name`.
    pub fn job_id(&self, name: &str) -> i64 {
        self.num(&format!("SELECT id FROM jobs WHERE name = '{name}'"))
    }

    /// The latest registration (lease epoch) of daemon `i`.
    pub fn epoch(&self, i: usize) -> i64 {
        let dir = self.daemons[i].state_dir.display().to_string();
        self.num(&format!(
            "SELECT coalesce(max(id), -1) FROM daemons WHERE node LIKE '%:{dir}'"
        ))
    }

    /// How many unfinished children of job `id` daemon epoch `epoch` owns.
    pub fn owned_by(&self, id: i64, epoch: i64) -> i64 {
        self.num(&format!(
            "SELECT count(*) FROM children WHERE job_id = {id} AND owner = {epoch} AND state NOT IN (3, 4, 5)"
        ))
    }

    /// How many children of job `id` have a start mark.
    pub fn started(&self, id: i64) -> i64 {
        self.num(&format!(
            "SELECT count(*) FROM children WHERE job_id = {id} AND started_at_ms IS NOT NULL"
        ))
    }

    /// The logs of every daemon, for failure messages.
    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .enumerate()
            .map(|(i, d)| format!("--- daemon {i}\n{}", d.log_text()))
            .collect()
    }

    /// Waits (up to [`LONG`]) for job `name` to end Completed, as daemon 0 sees it.
    pub fn wait_completed(&self, name: &str) {
        let d = &self.daemons[0];
        assert!(
            wait_for(LONG, || d.job(name)["state"] == "Completed"),
            "job {name} never Completed: {}\n{}",
            d.job(name),
            self.logs()
        );
    }

    /// `rjob receive JOB --keep --output-dir` from daemon `i`: every host's stdout is
    /// `want_out` and its stderr `want_err`, exactly, each host once.
    pub fn check_output(&self, i: usize, name: &str, want_out: &[u8], want_err: &[u8]) {
        let dir = self.fleet.scratch().join(format!("received-{name}-{i}"));
        let r = ran(self.daemons[i]
            .rjob()
            .args(["receive", name, "--keep", "--output-dir"])
            .arg(&dir));
        assert_eq!(r.code, 0, "{r}");
        let hosts = received(&dir);
        assert_eq!(hosts.len(), self.fleet.agents.len(), "one set of files per host");
        for (host, out, err) in hosts {
            assert!(
                out == want_out,
                "{host}'s stdout differs: {} bytes of {}, first difference at {:?}",
                out.len(),
                want_out.len(),
                out.iter().zip(want_out).position(|(a, b)| a != b)
            );
            assert_eq!(err, want_err, "{host}'s stderr");
        }
    }

    /// Every agent started exactly one run (its audit log says so).
    pub fn check_one_run_per_agent(&self) {
        for agent in &self.fleet.agents {
            let log = agent.log_text();
            let runs = log.lines().filter(|l| l.contains("run started")).count();
            assert_eq!(runs, 1, "agent {} started {runs} runs:\n{log}", agent.host());
        }
    }
}

/// The `(stdout, stderr)` bytes of each host, by file name stem, from `receive --output-dir`.
pub fn received(dir: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
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

/// `seq from to` as bytes.
pub fn seq(from: u32, to: u32) -> Vec<u8> {
    (from..=to).flat_map(|n| format!("{n}\n").into_bytes()).collect()
}

/// A script that prints `seq 1 3000`, waits for the file `go`, then prints `seq 3001 6000`
/// and `done` on stderr.
pub fn gated_script(go: &Path) -> String {
    format!(
        "seq 1 3000; while [ ! -e {go} ]; do sleep 0.05; done; seq 3001 6000; echo done >&2",
        go = go.display()
    )
}
