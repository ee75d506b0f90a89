//! The stand-in seam of the table of runs ([`rjob_agent::runs::StandIn`], for `rjob-bench
//! swarm`): a table without one (the agent's) starts the run's real process; one with a
//! stand-in ends the run at once, as the stand-in says, with no process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rjob_agent::run::{Outcome, Phase, RunLimits, RunRecord};
use rjob_agent::runner::{RunSpec, RunUser};
use rjob_agent::runs::{Runs, StandIn};

struct ExitsZero;

impl StandIn for ExitsZero {
    fn outcome(&self, _: &RunSpec) -> Outcome {
        Outcome::Exited { code: 0 }
    }
}

fn spec(dir: &std::path::Path) -> anyhow::Result<RunSpec> {
    Ok(RunSpec {
        interpreter: PathBuf::from("/bin/sh"),
        script: "exit 3".to_string(),
        args: Vec::new(),
        stdin: None,
        env: BTreeMap::new(),
        working_dir: Some(dir.to_path_buf()),
        user: RunUser::current()?,
        lang: "C.UTF-8".to_string(),
    })
}

fn record(spec: &RunSpec) -> RunRecord {
    RunRecord {
        id: uuid::Uuid::new_v4().to_string(),
        label: "stand-in-test".into(),
        run_as: spec.user.name.clone(),
        client: "test".into(),
        script_sha256: String::new(),
        pid: 0,
        boot_id: String::new(),
        pid_start_time: 0,
        sid: 0,
        containment: String::new(),
        started_at_ms: rjob_agent::run::now_ms(),
        ended_at_ms: None,
        outcome: None,
    }
}

const LIMITS: RunLimits = RunLimits {
    timeout: Duration::from_secs(60),
    max_output_bytes: 1 << 20,
    kill_grace: Duration::from_secs(1),
    max_chunk_bytes: rjob_agent::run::MAX_CHUNK_BYTES,
};

#[tokio::test]
async fn without_a_stand_in_the_run_is_a_real_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runs = Runs::open(&dir.path().join("spool"), 4)?;
    let spec = spec(dir.path())?;
    let run = runs.start(&spec, record(&spec), LIMITS)?;
    assert_ne!(run.record.pid, 0, "a process was started");
    let mut status = run.subscribe();
    let ended = tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| matches!(s.phase, Phase::Ended { .. })),
    )
    .await??
    .clone();
    // The script's own exit status, not a stand-in's.
    assert!(
        matches!(
            ended.phase,
            Phase::Ended {
                outcome: Outcome::Exited { code: 3 },
                ..
            }
        ),
        "{:?}",
        ended.phase
    );
    Ok(())
}

#[tokio::test]
async fn a_stand_in_ends_the_run_at_once_without_a_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runs = Runs::open(&dir.path().join("spool"), 4)?.with_stand_in(Arc::new(ExitsZero));
    let spec = spec(dir.path())?;
    let run = runs.start(&spec, record(&spec), LIMITS)?;
    assert_eq!(run.record.pid, 0, "no process");
    assert!(
        matches!(
            run.status().phase,
            Phase::Ended {
                outcome: Outcome::Exited { code: 0 },
                ..
            }
        ),
        "{:?}",
        run.status().phase
    );
    assert_eq!(runs.running(), 0, "its slot is free again");
    // It is in the table like any run, and goes once acknowledged.
    let id = run.id().to_string();
    assert!(runs.get(&id).is_ok());
    runs.ack(&id, run.status().extent.last_seq)?;
    assert!(runs.get(&id).is_err());
    Ok(())
}
