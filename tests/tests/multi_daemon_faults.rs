//! Several daemons on one PostgreSQL store, under faults (issue 16): a daemon paused past
//! its lease (SIGSTOP) writes nothing more once it is resumed, its children adopted by the
//! others; and PostgreSQL restarted mid-job (`pg_ctl -m immediate stop`, then start): the
//! daemons reconnect and nothing is lost.

mod multi;

use std::time::Duration;

use multi::{gated_script, seq, SHORT_LEASE};
use nix::sys::signal::Signal;
use rjob_tests::pg::Cluster;
use rjob_tests::wait_for;

#[test]
fn a_daemon_paused_past_its_lease_writes_nothing_after_it_and_the_job_stays_exact() {
    let m = multi::start(Cluster::shared(), 12, 3, &SHORT_LEASE);
    let go = m.fleet.scratch().join("go");
    let r = m.daemons[0].invoke_job(
        &m.fleet.hosts(),
        "pause",
        &gated_script(&go),
        &["--throttle-limit", "12"],
    );
    assert_eq!(r.code, 0, "{r}");
    let id = m.job_id("pause");
    assert!(
        wait_for(multi::LONG, || m.started(id) == 12),
        "12 children never started: {}\n{}",
        m.started(id),
        m.logs()
    );
    let paused = (1..3)
        .find(|&i| wait_for(Duration::from_secs(10), || m.owned_by(id, m.epoch(i)) > 0))
        .unwrap_or_else(|| panic!("no daemon but 0 claimed children:\n{}", m.logs()));
    let epoch = m.epoch(paused);
    m.daemons[paused].signal(Signal::SIGSTOP).expect("SIGSTOP");
    // Its lease lapses (3 s) and the others adopt its children.
    assert!(
        wait_for(multi::LONG, || m.owned_by(id, epoch) == 0),
        "the paused daemon's children were never adopted:\n{}",
        m.logs()
    );
    // What it wrote, as the store holds it now: nothing of it may change from here on.
    let snapshot = |m: &multi::Multi| {
        let output = m.num(&format!("SELECT count(*) FROM output WHERE written_by = {epoch}"));
        let children =
            m.db.psql(&format!(
                "SELECT idx, state, run_id, last_seq, ended_at_ms FROM children
                 WHERE job_id = {id} AND written_by = {epoch} ORDER BY idx"
            ))
            .expect("psql");
        let lease = m.num(&format!(
            "SELECT count(*) FROM daemons WHERE id = {epoch} AND expires_at > clock_timestamp()"
        ));
        (output, children, lease)
    };
    let before = snapshot(&m);
    assert_eq!(before.2, 0, "the paused daemon's lease lapsed");
    // Resumed while its children's runs still go (and then go on): its tasks see output
    // on their old streams, and every write of theirs is fenced.
    m.daemons[paused].signal(Signal::SIGCONT).expect("SIGCONT");
    std::fs::write(&go, b"").expect("go");
    assert!(
        wait_for(multi::LONG, || m.epoch(paused) > epoch),
        "the resumed daemon never registered again:\n{}",
        m.logs()
    );
    m.wait_completed("pause");
    assert_eq!(
        snapshot(&m),
        before,
        "the paused daemon wrote after losing its lease"
    );
    let log = m.daemons[paused].log_text();
    assert!(log.contains("lease on the job store lapsed"), "{log}");
    m.check_output(0, "pause", &seq(1, 6000), b"done\n");
    m.check_output(paused, "pause", &seq(1, 6000), b"done\n");
    m.check_one_run_per_agent();
}

#[test]
fn postgres_restarted_under_three_daemons_loses_nothing() {
    // A cluster of its own: the shared one stays up for the other tests.
    let cluster = Cluster::start().expect("cluster");
    let env = [("RJOB_HEARTBEAT_MS", "1000"), ("RJOB_LEASE_TTL_MS", "8000")];
    let m = multi::start(&cluster, 12, 3, &env);
    // 20,000 lines over a few seconds on each host, so that the server goes down while
    // output flows; 12 hosts at throttle 6, so that claims go on across the restart.
    let script = "for i in $(seq 1 20); do seq $((i*1000-999)) $((i*1000)); sleep 0.1; done";
    let r = m.daemons[0].invoke_job(&m.fleet.hosts(), "flow", script, &["--throttle-limit", "6"]);
    assert_eq!(r.code, 0, "{r}");
    let id = m.job_id("flow");
    assert!(
        wait_for(multi::LONG, || m
            .num(&format!("SELECT count(*) FROM output WHERE job_id = {id}"))
            > 0),
        "no output stored:\n{}",
        m.logs()
    );
    cluster
        .restart(true)
        .expect("pg_ctl -m immediate stop, then start");
    m.wait_completed("flow");
    m.check_output(1, "flow", &seq(1, 20_000), b"");
    m.check_one_run_per_agent();
}
