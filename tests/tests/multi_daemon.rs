//! Several `rjob serve --store postgres://…` daemons on one PostgreSQL store (issue 16):
//! they claim a job's children with leases, the throttle limit holds across all of them
//! (measured on the agents), and a daemon killed mid-job (`kill -9`) has its children
//! adopted by the others, which attach again from the last stored sequence number: nothing
//! lost, nothing repeated, no run started twice.

mod multi;

use std::time::{Duration, Instant};

use multi::{gated_script, seq, SHORT_LEASE};
use rjob_tests::pg::Cluster;
use rjob_tests::wait_for;

/// The most runs in flight at once, from `S <ns>` and `E <ns>` lines the runs wrote with
/// their agent's clock; and how many started.
fn most_in_flight(log: &str) -> (usize, usize) {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let kind = words.next()?;
            let at: u128 = words.next()?.parse().ok()?;
            match kind {
                "S" => Some((at, 1)),
                "E" => Some((at, -1)),
                _ => None,
            }
        })
        .collect();
    // At one instant, ends before starts: a slot freed and taken at once is not two.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in &events {
        now += step;
        most = most.max(now);
    }
    let starts = events.iter().filter(|(_, s)| *s == 1).count();
    (usize::try_from(most).unwrap_or(0), starts)
}

#[test]
fn three_daemons_share_a_60_host_job_and_never_run_more_than_its_throttle() {
    let m = multi::start(Cluster::shared(), 60, 3, &[]);
    let flight = m.fleet.scratch().join("flight.log");
    // Each run notes its start and end (the agent's clock, `date +%s%N`), and lasts a
    // second or so with output on both sides of its pause.
    let script = format!(
        "echo \"S $(date +%s%N)\" >> {log}; seq 1 2000; sleep 1; seq 2001 4000; echo \"E $(date +%s%N)\" >> {log}; echo done >&2",
        log = flight.display()
    );
    let r = m.daemons[0].invoke_job(&m.fleet.hosts(), "wide", &script, &["--throttle-limit", "10"]);
    assert_eq!(r.code, 0, "{r}");
    m.wait_completed("wide");
    let log = std::fs::read_to_string(&flight).unwrap_or_default();
    let (most, starts) = most_in_flight(&log);
    assert_eq!(starts, 60, "every host ran once:\n{log}");
    assert!(
        most <= 10,
        "{most} runs in flight at once, over the throttle limit of 10:\n{log}"
    );
    // Measured, not asserted (load decides): how much the daemons overlapped.
    eprintln!("most runs in flight at once: {most} (throttle 10)");
    // Every daemon took part: each wrote some of the job's children.
    let id = m.job_id("wide");
    let writers = m.num(&format!(
        "SELECT count(DISTINCT written_by) FROM children WHERE job_id = {id}"
    ));
    eprintln!("daemons that ran children of the job: {writers} of 3");
    assert!(
        writers >= 2,
        "the children were spread over the daemons: {writers}\n{}",
        m.logs()
    );
    m.check_output(1, "wide", &seq(1, 4000), b"done\n");
    m.check_one_run_per_agent();
}

#[test]
fn a_daemon_killed_mid_job_has_its_children_adopted_and_nothing_is_lost_or_run_twice() {
    // A short lease (3 s), so that the adoption's 15 s holds under heavy load.
    let mut m = multi::start(Cluster::shared(), 18, 3, &SHORT_LEASE);
    let go = m.fleet.scratch().join("go");
    let r = m.daemons[0].invoke_job(
        &m.fleet.hosts(),
        "crash",
        &gated_script(&go),
        &["--throttle-limit", "12"],
    );
    assert_eq!(r.code, 0, "{r}");
    let id = m.job_id("crash");
    assert!(
        wait_for(multi::LONG, || m.started(id) == 12),
        "12 children never started: {}\n{}",
        m.started(id),
        m.logs()
    );
    // The victim: a daemon other than 0 (which the test talks to) that owns children.
    let victim = (1..3)
        .find(|&i| wait_for(Duration::from_secs(10), || m.owned_by(id, m.epoch(i)) > 0))
        .unwrap_or_else(|| panic!("no daemon but 0 claimed children:\n{}", m.logs()));
    let epoch = m.epoch(victim);
    let orphans = m.owned_by(id, epoch);
    let pid = m.daemons[victim].pid();
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -9 {pid}");
    assert!(
        wait_for(Duration::from_secs(15), || m.owned_by(id, epoch) == 0),
        "the killed daemon's {orphans} children were not adopted within 15 s:\n{}",
        m.logs()
    );
    eprintln!("{orphans} children adopted {:?} after kill -9", killed.elapsed());
    m.daemons[victim].kill9(); // reaped
    std::fs::write(&go, b"").expect("go");
    m.wait_completed("crash");
    m.check_output(0, "crash", &seq(1, 6000), b"done\n");
    m.check_one_run_per_agent();
}

#[test]
fn a_new_job_is_claimed_by_every_daemon_at_once_not_at_their_next_heartbeat() {
    // Heartbeats a minute apart: only the new job's notice can make the other daemons claim.
    let slow = [("RJOB_HEARTBEAT_MS", "60000"), ("RJOB_LEASE_TTL_MS", "180000")];
    let m = multi::start(Cluster::shared(), 12, 3, &slow);
    for i in 0..3 {
        assert!(
            rjob_tests::wait_for(multi::LONG, || m.epoch(i) > 0),
            "daemon {i} never registered:\n{}",
            m.logs()
        );
    }
    let r = m.daemons[0].invoke_job(
        &m.fleet.hosts(),
        "spread",
        "sleep 3; echo ok",
        &["--throttle-limit", "12"],
    );
    assert_eq!(r.code, 0, "{r}");
    m.wait_completed("spread");
    let id = m.job_id("spread");
    let per_daemon =
        m.db.psql(&format!(
            "SELECT count(*) FROM children WHERE job_id = {id} GROUP BY written_by ORDER BY 1 DESC"
        ))
        .unwrap_or_default();
    let counts: Vec<i64> = per_daemon.lines().filter_map(|l| l.trim().parse().ok()).collect();
    // Throttle 12 over three live daemons: a share of 4 each.
    assert_eq!(counts, vec![4, 4, 4], "children per daemon\n{}", m.logs());
    m.check_output(2, "spread", b"ok\n", b"");
    m.check_one_run_per_agent();
}
