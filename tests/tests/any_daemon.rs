//! Any daemon answers any job: two `rjob serve --store postgres://…` daemons on one
//! database, a job created (and run) on daemon A, and everything asked of daemon B: `receive
//! --follow` sees live output (LISTEN/NOTIFY), `wait` returns when the job ends, `jobs`
//! lists it; `stop`, `suspend`, `resume` and `remove` reach the runs on A's agents; a
//! consuming receive is exclusive across the two; a PostgreSQL restart mid-follow is ridden
//! out.
//!
//! Both daemons start before the job is made: a daemon picks up at its start the unfinished
//! jobs it finds in the store, so one started later would run A's job too.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use rjob_tests::pg::{Cluster, Database};
use rjob_tests::{process_alive, ran, wait_for, Daemon, Fleet, WAIT};

/// Daemons A and B on one database.
fn two_daemons(fleet: &Fleet, db: &Database<'_>) -> (Daemon, Daemon) {
    let url = db.url();
    let a = Daemon::start_named(fleet, "state-a", &["--store", &url]).expect("daemon A");
    let b = Daemon::start_named(fleet, "state-b", &["--store", &url]).expect("daemon B");
    (a, b)
}

/// A script that prints `first`, waits for `gate`, then prints `second`.
fn gated(gate: &Path) -> String {
    format!(
        "echo first; while [ ! -e {g} ]; do sleep 0.02; done; echo second",
        g = gate.display()
    )
}

/// A running `rjob receive --follow`, its lines read as they come, each with when.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Follower {
    fn start(daemon: &Daemon, job: &str) -> Follower {
        let mut child = daemon
            .rjob()
            .args(["receive", job, "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rjob receive --follow");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for `line`; when it was read.
    fn until(&mut self, line: &str) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, got)) => {
                    let done = got == line;
                    self.seen.push(got);
                    if done {
                        return at;
                    }
                }
                Err(_) => panic!("the follower never printed {line:?}; it printed {:?}", self.seen),
            }
        }
    }

    /// Waits for the follower to end; its exit code and stderr.
    fn end(mut self) -> (i32, Vec<String>, String) {
        let ended = wait_for(WAIT, || matches!(self.child.try_wait(), Ok(Some(_))));
        if !ended {
            let _ = self.child.kill();
        }
        let code = self.child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
        self.seen.extend(self.lines.try_iter().map(|(_, l)| l));
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        assert!(ended, "the follower did not end: {:?}", self.seen);
        (code, self.seen, stderr)
    }
}

/// The child's exit once it ended (within the harness's wait).
fn ended(child: &mut Child) -> Option<i32> {
    let mut code = None;
    wait_for(WAIT, || match child.try_wait() {
        Ok(Some(status)) => {
            code = Some(status.code().unwrap_or(-1));
            true
        }
        _ => false,
    });
    code
}

/// A process's state letter (`R`, `S`, `T` stopped, ...) from /proc.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The pid the script wrote to `file`, once it is there.
fn pid_in(file: &Path) -> i32 {
    let read = || {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
    };
    assert!(wait_for(WAIT, || read().is_some()), "the script never started");
    read().unwrap_or(0)
}

#[test]
fn follow_wait_and_jobs_through_b_see_a_job_running_on_a() {
    let fleet = Fleet::start(1).expect("fleet");
    let db = Cluster::shared().database().expect("database");
    let (a, b) = two_daemons(&fleet, &db);
    let host = fleet.agents[0].host();
    let gate = fleet.scratch().join("gate");
    let out = a.invoke_job(&fleet.hosts(), "live", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");

    let mut follower = Follower::start(&b, "live");
    let mut waiter = b
        .rjob()
        .args(["wait", "live"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn rjob wait");
    // When the first line is stored, as seen from here by polling the database.
    let stored_at = {
        let mut at = None;
        wait_for(WAIT, || {
            let n = db
                .psql("SELECT count(*) FROM output")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if n > 0 {
                at = Some(Instant::now());
            }
            n > 0
        });
        at.expect("the first line was never stored")
    };
    let seen_at = follower.until(&format!("{host}: first"));
    let latency = seen_at.saturating_duration_since(stored_at);
    eprintln!(
        "live output through daemon B: seen {latency:?} after the test saw it stored (0 s: seen before the poll saw it)"
    );
    let job = b.job("live");
    assert_eq!(job["state"], "Running", "B lists the job running on A: {job}");
    assert_eq!(job["children"][0]["state"], "Running", "{job}");
    assert!(
        matches!(waiter.try_wait(), Ok(None)),
        "wait through B returned while the job still runs"
    );

    std::fs::write(&gate, b"").expect("gate");
    follower.until(&format!("{host}: second"));
    let (code, seen, stderr) = follower.end();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        seen,
        [format!("{host}: first"), format!("{host}: second")],
        "each line once"
    );
    assert_eq!(ended(&mut waiter), Some(0), "wait through B ends with the job");
    let job = b.job("live");
    assert_eq!(job["state"], "Completed", "{job}");
    assert_eq!(job["children"][0]["state"], "Completed", "{job}");
    assert_eq!(a.job("live")["state"], "Completed");
    // The follow took the output: nothing left for a consuming receive through A.
    let r = ran(a.rjob().args(["receive", "live"]));
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{r}");
}

#[test]
fn stop_through_b_ends_the_run_on_a() {
    let fleet = Fleet::start(1).expect("fleet");
    let db = Cluster::shared().database().expect("database");
    let (a, b) = two_daemons(&fleet, &db);
    let pid_file = fleet.scratch().join("pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let out = a.invoke_job(&fleet.hosts(), "sleeper", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    let pid = pid_in(&pid_file);
    assert!(b.wait_state("sleeper", "Running"), "{}", b.job("sleeper"));

    let sent = Instant::now();
    let out = ran(b.rjob().args(["stop", "sleeper"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_for(WAIT, || !process_alive(pid)),
        "the run on A's agent survived a stop sent to B: {}",
        a.log_text()
    );
    eprintln!(
        "a stop sent to daemon B ended the run of daemon A's job in {:?}",
        sent.elapsed()
    );
    assert!(b.wait_state("sleeper", "Stopped"), "{}", b.job("sleeper"));
    let job = a.job("sleeper");
    assert_eq!(job["state"], "Stopped", "{job}");
    assert_eq!(job["children"][0]["state"], "Stopped", "{job}");
}

#[test]
fn suspend_resume_and_remove_through_b() {
    let fleet = Fleet::start(1).expect("fleet");
    let db = Cluster::shared().database().expect("database");
    let (a, b) = two_daemons(&fleet, &db);
    let pid_file = fleet.scratch().join("pid");
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let out = a.invoke_job(&fleet.hosts(), "held", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    let pid = pid_in(&pid_file);
    assert!(b.wait_state("held", "Running"), "{}", b.job("held"));

    let out = ran(b.rjob().args(["suspend", "held"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_for(WAIT, || proc_state(pid) == Some('T')),
        "the run on A's agent was not suspended: {:?}",
        proc_state(pid)
    );
    assert!(b.wait_state("held", "Suspended"), "{}", b.job("held"));
    assert!(a.wait_state("held", "Suspended"), "{}", a.job("held"));

    let out = ran(b.rjob().args(["resume", "held"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_for(WAIT, || matches!(proc_state(pid), Some(s) if s != 'T')),
        "the run on A's agent was not resumed"
    );
    assert!(b.wait_state("held", "Running"), "{}", b.job("held"));

    // Removed through B while A runs it: stopped first, then gone from both; A goes on.
    let out = ran(b.rjob().args(["remove", "held", "--force"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_for(WAIT, || !process_alive(pid)),
        "the run survived its job's removal"
    );
    for (name, d) in [("A", &a), ("B", &b)] {
        let r = ran(d.rjob().args(["jobs", "--output", "json"]));
        assert_eq!(r.code, 0, "{name}: {r}");
        assert_eq!(r.stdout.trim(), "[]", "{name} lists no job: {r}");
    }
    // A finished job, removed through B.
    let out = a.invoke_job(&fleet.hosts(), "done", "echo hi", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(a.wait_state("done", "Completed"), "{}", a.job("done"));
    let out = ran(b.rjob().args(["remove", "done"]));
    assert_eq!(out.code, 0, "{out}");
    let r = ran(a.rjob().args(["jobs", "done"]));
    assert_ne!(r.code, 0, "A no longer has the job: {r}");
    // A still runs jobs.
    let out = a.invoke_job(&fleet.hosts(), "after", "echo still here", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        a.wait_state("after", "Completed"),
        "{}\n{}",
        a.job("after"),
        a.log_text()
    );
    assert!(!a.log_text().contains("panicked"), "{}", a.log_text());
}

#[test]
fn a_consuming_receive_is_exclusive_across_daemons() {
    let fleet = Fleet::start(1).expect("fleet");
    let db = Cluster::shared().database().expect("database");
    let (a, b) = two_daemons(&fleet, &db);
    let host = fleet.agents[0].host();
    let gate = fleet.scratch().join("gate");
    let out = a.invoke_job(&fleet.hosts(), "one", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    let mut follower = Follower::start(&a, "one");
    follower.until(&format!("{host}: first"));

    let second = ran(b.rjob().args(["receive", "one"]));
    assert_ne!(second.code, 0, "{second}");
    assert!(
        second
            .stderr
            .contains("is being received by another `rjob receive`"),
        "{second}"
    );
    // A kept receive takes no part.
    let kept = ran(b.rjob().args(["receive", "one", "--keep"]));
    assert_eq!(kept.code, 0, "{kept}");
    assert!(kept.stdout.contains(&format!("{host}: first")), "{kept}");

    std::fs::write(&gate, b"").expect("gate");
    let (code, seen, stderr) = follower.end();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(seen, [format!("{host}: first"), format!("{host}: second")]);
    // Free again once the first ended: nothing left to take.
    let after = ran(b.rjob().args(["receive", "one"]));
    assert_eq!((after.code, after.stdout.as_str()), (0, ""), "{after}");
}

#[test]
fn a_follow_through_b_goes_on_after_postgres_restarted() {
    // A cluster of its own: the shared one stays up for the other tests.
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.database().expect("database");
    let fleet = Fleet::start(1).expect("fleet");
    let (a, b) = two_daemons(&fleet, &db);
    let host = fleet.agents[0].host();
    let gate = fleet.scratch().join("gate");
    let out = a.invoke_job(&fleet.hosts(), "through", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    let mut follower = Follower::start(&b, "through");
    follower.until(&format!("{host}: first"));

    cluster
        .restart(true)
        .expect("pg_ctl -m immediate stop, then start");
    // Whether B listens again before the next line is stored or after (then it resyncs),
    // the follow goes on.
    std::fs::write(&gate, b"").expect("gate");
    follower.until(&format!("{host}: second"));
    let (code, seen, stderr) = follower.end();
    assert_eq!(code, 0, "{stderr}\n{}", b.log_text());
    assert_eq!(seen, [format!("{host}: first"), format!("{host}: second")]);
    assert!(a.wait_state("through", "Completed"), "{}", a.job("through"));
    assert_eq!(b.job("through")["state"], "Completed");
}
