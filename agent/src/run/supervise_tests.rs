//! The supervisor on real processes: how a run ends (exit, signal, timeout, output limit,
//! stop with kill escalation) and that its output is stored before its end is recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::contain::{Containment, Mode};
use crate::run::{self, Control, Outcome, Phase, Run, RunLimits, RunRecord};
use crate::runner::{self, RunSpec, RunUser};
use crate::spool::Spool;

/// Long enough for a loaded machine; every wait below ends as soon as its condition holds.
const PATIENCE: Duration = Duration::from_secs(60);

fn limits() -> RunLimits {
    RunLimits {
        timeout: Duration::from_secs(120),
        max_output_bytes: 1 << 30,
        kill_grace: Duration::from_millis(300),
        max_chunk_bytes: crate::run::MAX_CHUNK_BYTES,
    }
}

fn containment() -> Arc<Containment> {
    static CONTAINMENT: std::sync::OnceLock<Arc<Containment>> = std::sync::OnceLock::new();
    CONTAINMENT
        .get_or_init(|| Containment::init(Mode::Subreaper).expect("the subreaper is always there"))
        .clone()
}

/// Starts `script` under `sh` as the current user, supervised with `limits`.
fn start(dir: &tempfile::TempDir, script: &str, limits: RunLimits) -> Arc<Run> {
    let id = uuid::Uuid::new_v4().to_string();
    let spool = Arc::new(Spool::create(&dir.path().join(&id)).expect("a spool file"));
    let contained = containment().prepare(&id).expect("containment for the run");
    let spec = RunSpec {
        interpreter: PathBuf::from("/bin/sh"),
        script: script.to_string(),
        args: Vec::new(),
        stdin: None,
        env: BTreeMap::new(),
        working_dir: Some(dir.path().to_path_buf()),
        user: RunUser::current().expect("the current user"),
        lang: "C.UTF-8".to_string(),
    };
    let spawned = runner::spawn_contained(&spec, &contained).expect("the process starts");
    let record = RunRecord {
        id,
        label: "supervisor-test".into(),
        run_as: spec.user.name.clone(),
        client: "test".into(),
        script_sha256: String::new(),
        pid: 0,
        boot_id: String::new(),
        pid_start_time: 0,
        sid: 0,
        containment: String::new(),
        started_at_ms: run::now_ms(),
        ended_at_ms: None,
        outcome: None,
    };
    run::start(record, spawned, contained, spool, limits, |_| {}).expect("supervision starts")
}

/// The run's outcome once it has ended, and the output bytes it stored by then.
async fn ended(run: &Run) -> (Outcome, u64) {
    let mut status = run.subscribe();
    let wait = async {
        loop {
            let now = status.borrow_and_update().clone();
            if let Phase::Ended { outcome, .. } = now.phase {
                return (outcome, now.extent.data_bytes);
            }
            status.changed().await.expect("the supervisor keeps its status");
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("the run ends")
}

#[tokio::test]
async fn an_exit_code_is_the_outcome_and_all_output_is_stored_first() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let run = start(&dir, "head -c 300000 /dev/zero; echo err >&2; exit 3", limits());
    let (outcome, bytes) = ended(&run).await;
    assert_eq!(outcome, Outcome::Exited { code: 3 });
    assert_eq!(
        bytes,
        300_000 + 4,
        "every byte of both streams is stored before the end"
    );
}

#[tokio::test]
async fn a_signal_that_ends_the_process_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let run = start(&dir, "kill -9 $$", limits());
    assert_eq!(ended(&run).await.0, Outcome::Signaled { signal: 9 });
}

#[tokio::test]
async fn the_timeout_ends_a_run_that_outlives_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let limits = RunLimits {
        timeout: Duration::from_millis(200),
        ..limits()
    };
    let run = start(&dir, "sleep 60", limits);
    assert_eq!(ended(&run).await.0, Outcome::TimedOut { after_ms: 200 });
}

#[tokio::test]
async fn the_output_limit_kills_a_run_that_writes_past_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let limits = RunLimits {
        max_output_bytes: 1000,
        ..limits()
    };
    let run = start(&dir, "while :; do echo 0123456789; done", limits);
    let (outcome, bytes) = ended(&run).await;
    assert_eq!(outcome, Outcome::OutputLimit { limit: 1000 });
    assert!(bytes <= 1000, "nothing past the limit is stored ({bytes} bytes)");
}

#[tokio::test]
async fn a_stop_escalates_to_sigkill_when_the_run_ignores_sigterm() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ready = dir.path().join("ready");
    let script = format!(
        "trap '' TERM; touch {}; while :; do sleep 1; done",
        ready.display()
    );
    let run = start(&dir, &script, limits());
    let wait_ready = async {
        while !ready.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait_ready)
        .await
        .expect("the script set its trap");
    assert!(run.control(Control::Stop).await, "the supervisor takes the stop");
    assert_eq!(ended(&run).await.0, Outcome::Stopped);
}

#[tokio::test]
async fn suspend_and_resume_hold_and_release_the_process() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let go = dir.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; exit 7", go.display());
    let run = start(&dir, &script, limits());
    assert!(run.control(Control::Suspend).await);
    let mut status = run.subscribe();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| s.phase == Phase::Suspended))
        .await
        .expect("the run is suspended")
        .expect("the supervisor keeps its status");
    std::fs::write(&go, b"").expect("the go file");
    assert!(run.control(Control::Resume).await);
    assert_eq!(ended(&run).await.0, Outcome::Exited { code: 7 });
}
