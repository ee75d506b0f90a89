//! One run: its typed state, its record (kept in its spool file), and the task that supervises
//! its process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use rjob_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::contain::{Contained, Containment};
use crate::leftovers::kill_leftovers;
use crate::procfs::boot_id;
use crate::runner::Spawned;
use crate::spool::{Extent, Spool};

mod supervise;
#[cfg(test)]
mod supervise_tests;

use supervise::supervise;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The process exited with this code.
    Exited { code: i32 },
    /// A signal the run did not ask for ended the process.
    Signaled { signal: i32 },
    /// The run outlived its timeout and was killed.
    TimedOut { after_ms: u64 },
    /// Stopped on request.
    Stopped,
    /// It wrote more than the agent allows and was killed.
    OutputLimit { limit: u64 },
    /// The agent could not keep the run going (its output could not be stored, the agent
    /// restarted or shut down, ...).
    Lost { reason: String },
}

impl Outcome {
    pub fn state(&self) -> pb::RunState {
        match self {
            Outcome::Exited { code: 0 } => pb::RunState::Completed,
            Outcome::Stopped => pb::RunState::Stopped,
            _ => pb::RunState::Failed,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Outcome::Exited { code: 0 } => String::new(),
            Outcome::Exited { code } => format!("exited with status {code}"),
            Outcome::Signaled { signal } => match Signal::try_from(*signal) {
                Ok(s) => format!("killed by signal {s}"),
                Err(_) => format!("killed by signal {signal}"),
            },
            Outcome::TimedOut { after_ms } => {
                format!(
                    "timed out after {}",
                    humantime::format_duration(Duration::from_millis(*after_ms))
                )
            }
            Outcome::Stopped => "stopped on request".to_string(),
            Outcome::OutputLimit { limit } => {
                format!("output limit of {limit} bytes exceeded; the run was killed")
            }
            Outcome::Lost { reason } => reason.clone(),
        }
    }

    /// Why the run ended, for programs (what [`Outcome::reason`] says in words).
    pub fn cause(&self) -> pb::RunCause {
        match self {
            Outcome::Exited { .. } => pb::RunCause::Exited,
            Outcome::Signaled { .. } => pb::RunCause::Signalled,
            Outcome::TimedOut { .. } => pb::RunCause::TimedOut,
            Outcome::Stopped => pb::RunCause::Stopped,
            Outcome::OutputLimit { .. } => pb::RunCause::OutputLimit,
            Outcome::Lost { .. } => pb::RunCause::Lost,
        }
    }

    pub fn to_result(&self, last_seq: u64) -> pb::RunResult {
        pb::RunResult {
            cause: self.cause() as i32,
            state: self.state() as i32,
            exit_code: match self {
                Outcome::Exited { code } => Some(*code),
                _ => None,
            },
            signal: match self {
                Outcome::Signaled { signal } => Some(*signal),
                _ => None,
            },
            reason: self.reason(),
            last_seq,
        }
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Running,
    Suspended,
    /// A stop or timeout is under way.
    Stopping,
    Ended {
        outcome: Outcome,
        ended_at_ms: i64,
    },
}

/// What readers watch: the phase and how much output is stored.
#[derive(Debug, Clone)]
pub struct Status {
    pub phase: Phase,
    pub extent: Extent,
}

/// Requests to a running run's supervisor.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Stop,
    /// The agent is shutting down: like a stop, but recorded as the agent's doing.
    Shutdown,
    Suspend,
    Resume,
}

/// What the agent stores about a run beside its output (meta records of its spool file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub id: String,
    pub label: String,
    pub run_as: String,
    pub client: String,
    pub script_sha256: String,
    pub pid: u32,
    /// The boot and the process start time (clock ticks after boot) of `pid`, so that a
    /// restarted agent signals the run's process group only if it is still that process.
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub pid_start_time: u64,
    /// The session of `pid` at its start, and the mechanism that contained the run
    /// (`cgroup`, `subreaper`; empty in records of older agents).
    #[serde(default)]
    pub sid: u32,
    #[serde(default)]
    pub containment: String,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub outcome: Option<Outcome>,
}

pub struct Run {
    pub record: RunRecord,
    pub spool: Arc<Spool>,
    status: watch::Sender<Status>,
    control: Option<mpsc::Sender<Control>>,
}

impl Run {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Sends a control request; false when the run has already ended.
    pub async fn control(&self, c: Control) -> bool {
        match &self.control {
            Some(tx) => tx.send(c).await.is_ok(),
            None => false,
        }
    }

    pub fn info(&self) -> pb::RunInfo {
        let status = self.status();
        let (state, ended_at_ms, result) = match &status.phase {
            Phase::Running | Phase::Stopping => (pb::RunState::Running, 0, None),
            Phase::Suspended => (pb::RunState::Suspended, 0, None),
            Phase::Ended { outcome, ended_at_ms } => (
                outcome.state(),
                *ended_at_ms,
                Some(outcome.to_result(status.extent.last_seq)),
            ),
        };
        pb::RunInfo {
            run_id: self.record.id.clone(),
            state: state as i32,
            label: self.record.label.clone(),
            run_as: self.record.run_as.clone(),
            started_at_ms: self.record.started_at_ms,
            ended_at_ms,
            result,
            last_seq: status.extent.last_seq,
            pid: self.record.pid,
        }
    }

    /// Loads a run left on disk by an earlier agent process. A run that had not ended is
    /// recorded as lost: its process is no longer supervised, so it can't be trusted to end.
    /// What is left of it is killed only where that is provably the run's (see
    /// [`kill_leftovers`]): a record in the spool never gets another process killed.
    pub fn load(path: &Path, containment: &Containment) -> anyhow::Result<Arc<Run>> {
        use anyhow::Context as _;
        let (spool, meta) = Spool::open(path)?;
        let meta = meta.with_context(|| format!("{} holds no run record", path.display()))?;
        let mut record: RunRecord = serde_json::from_slice(&meta)
            .with_context(|| format!("parsing the run record in {}", path.display()))?;
        let spool = Arc::new(spool);
        let ended_at_ms = match (&record.outcome, record.ended_at_ms) {
            (Some(_), Some(t)) => t,
            _ => {
                // Whatever is left of it would write into a pipe nobody reads.
                kill_leftovers(&record, containment);
                let now = now_ms();
                record.outcome = Some(Outcome::Lost {
                    reason: "the agent restarted while the run was going; its output up to then is kept"
                        .to_string(),
                });
                record.ended_at_ms = Some(now);
                write_record(&spool, &record)?;
                spool.sync()?;
                now
            }
        };
        Ok(Run::ended_from(record, spool, ended_at_ms))
    }

    /// A run that ended as `outcome` without any process, recorded in its spool as such:
    /// what a [`crate::runs::StandIn`] makes of a run.
    pub fn ended(mut record: RunRecord, spool: Arc<Spool>, outcome: Outcome) -> anyhow::Result<Arc<Run>> {
        let now = now_ms();
        record.outcome = Some(outcome);
        record.ended_at_ms = Some(now);
        write_record(&spool, &record)?;
        Ok(Run::ended_from(record, spool, now))
    }

    fn ended_from(record: RunRecord, spool: Arc<Spool>, ended_at_ms: i64) -> Arc<Run> {
        let outcome = record.outcome.clone().unwrap_or(Outcome::Lost {
            reason: "unknown".to_string(),
        });
        let (status, _) = watch::channel(Status {
            phase: Phase::Ended { outcome, ended_at_ms },
            extent: spool.extent(),
        });
        Arc::new(Run {
            record,
            spool,
            status,
            control: None,
        })
    }
}

/// How long after its end an unacknowledged run's file is flushed to stable storage.
pub const SYNC_AFTER: Duration = Duration::from_secs(1);

/// Limits a supervisor enforces.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub timeout: Duration,
    pub max_output_bytes: u64,
    /// Time between SIGTERM and SIGKILL when a run is stopped or times out.
    pub kill_grace: Duration,
    /// The largest output chunk stored (and sent): [`chunk_size`] of what the caller asked.
    pub max_chunk_bytes: usize,
}

/// The largest output chunk: 64 KiB, the most a pump reads from a run's pipe at once.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// The smallest chunk size a caller may ask for (smaller would only cost per-chunk work).
pub const MIN_CHUNK_BYTES: usize = 4 * 1024;

/// The chunk size for a caller's `max_chunk_bytes` (0: [`MAX_CHUNK_BYTES`]), within
/// [`MIN_CHUNK_BYTES`]..=[`MAX_CHUNK_BYTES`].
pub fn chunk_size(asked: u32) -> usize {
    match usize::try_from(asked) {
        Ok(0) | Err(_) => MAX_CHUNK_BYTES,
        Ok(n) => n.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
    }
}

/// Records the run's pid and starts supervising its process.
pub fn start(
    mut record: RunRecord,
    spawned: Spawned,
    contained: Contained,
    spool: Arc<Spool>,
    limits: RunLimits,
    on_end: impl FnOnce(&Run) + Send + 'static,
) -> anyhow::Result<Arc<Run>> {
    record.pid = spawned.pid;
    record.boot_id = boot_id();
    record.pid_start_time = spawned.start_time;
    record.sid = spawned.sid;
    record.containment = match contained {
        Contained::Cgroup(_) => "cgroup",
        Contained::Subreaper => "subreaper",
    }
    .to_string();
    // The record was written before the spawn; this adds the pid. The process is supervised
    // whether or not this write works, so a failure is only logged.
    if let Err(e) = write_record(&spool, &record) {
        tracing::error!(run = %record.id, error = %format!("{e:#}"), "cannot record the run's pid");
    }
    let (status, _) = watch::channel(Status {
        phase: Phase::Running,
        extent: Extent::default(),
    });
    let (control_tx, control_rx) = mpsc::channel(8);
    let run = Arc::new(Run {
        record,
        spool,
        status,
        control: Some(control_tx),
    });
    let supervised = run.clone();
    tokio::spawn(async move {
        supervise(&supervised, spawned, &contained, limits, control_rx).await;
        contained.release();
        on_end(&supervised);
        // Most runs are taken and acknowledged within milliseconds of their end, and then
        // there is nothing left to flush: what is still unacknowledged after SYNC_AFTER is
        // made durable then (the page cache already keeps it safe from an agent crash).
        tokio::time::sleep(SYNC_AFTER).await;
        if supervised.spool.is_removed() {
            return;
        }
        let spool = supervised.spool.clone();
        match tokio::task::spawn_blocking(move || spool.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(run = supervised.id(), error = %e, "cannot flush the run's file"),
            Err(e) => tracing::error!(run = supervised.id(), error = %e, "cannot flush the run's file"),
        }
    });
    Ok(run)
}

/// Appends the run's record to its spool file (not synced: the caller decides).
pub fn write_record(spool: &Spool, record: &RunRecord) -> anyhow::Result<()> {
    spool.append_meta(&serde_json::to_vec(record)?)?;
    Ok(())
}

pub use rjob_proto::process::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_says_its_cause_on_the_wire() {
        let cases = [
            (Outcome::Exited { code: 0 }, pb::RunCause::Exited),
            (Outcome::Exited { code: 2 }, pb::RunCause::Exited),
            (Outcome::Signaled { signal: 9 }, pb::RunCause::Signalled),
            (Outcome::TimedOut { after_ms: 1000 }, pb::RunCause::TimedOut),
            (Outcome::Stopped, pb::RunCause::Stopped),
            (Outcome::OutputLimit { limit: 10 }, pb::RunCause::OutputLimit),
            (
                Outcome::Lost {
                    reason: "the agent restarted".into(),
                },
                pb::RunCause::Lost,
            ),
        ];
        for (outcome, cause) in cases {
            assert_eq!(outcome.to_result(7).cause, cause as i32, "{outcome:?}");
        }
    }
}
