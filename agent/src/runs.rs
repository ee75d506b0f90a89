//! The agent's table of runs: it owns them, enforces the concurrency limit, and keeps their
//! files (`*.run`, one a run) in the spool directory until the caller acknowledged their output;
//! emptied files are kept for the next runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{AgentConfig, DEFAULT_MAX_SPOOL_BYTES};
use crate::contain::{self, Containment};
use crate::run::{self, Control, Phase, Run, RunLimits, RunRecord};
use crate::runner::{self, RunSpec, RunnerError};
use crate::spool::{FilePool, Spool};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the agent is at its limit of {limit} concurrent runs; retry later or raise max_concurrent_runs"
    )]
    Busy { limit: u32 },
    #[error(
        "the agent's spool holds {used} bytes, at its limit of max_spool_bytes = {limit}: new runs are refused until ended runs' output is received or expires; retry later or raise max_spool_bytes"
    )]
    SpoolFull { used: u64, limit: u64 },
    #[error("cannot give the run a cgroup of its own: {0}")]
    Contain(#[source] std::io::Error),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("cannot set up the run's spool: {0:#}")]
    Storage(anyhow::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("no run {id} on this agent (it may have been acknowledged and removed, or never existed)")]
pub struct NotFound {
    pub id: String,
}

/// The extension of a run's file in the spool directory.
const RUN_EXTENSION: &str = "run";

/// How a table of runs is set up.
#[derive(Debug, Clone, Copy)]
pub struct RunsOptions {
    pub max_concurrent: u32,
    /// New runs are refused while the spool's files hold this many bytes together.
    pub max_spool_bytes: u64,
    pub containment: contain::Mode,
}

impl RunsOptions {
    pub fn of(config: &AgentConfig) -> RunsOptions {
        RunsOptions {
            max_concurrent: config.max_concurrent_runs,
            max_spool_bytes: config.max_spool_bytes,
            containment: config.containment,
        }
    }
}

/// Stands in for runs' processes where thousands of agents share one process
/// (`rjob-bench swarm`): every run ends at once as [`StandIn::outcome`] says, and no process
/// is started. Only [`Runs::with_stand_in`] puts one in place: the agent never does, and a
/// table of runs without one starts every run's real process.
pub trait StandIn: Send + Sync {
    /// How the run of `spec` ends.
    fn outcome(&self, spec: &RunSpec) -> run::Outcome;
}

pub struct Runs {
    dir: PathBuf,
    pool: FilePool,
    max_concurrent: u32,
    max_spool_bytes: u64,
    /// Bytes of every run's file together.
    spool_bytes: Arc<AtomicU64>,
    containment: Arc<Containment>,
    running: Arc<AtomicU32>,
    map: Arc<Mutex<HashMap<String, Arc<Run>>>>,
    /// `None` (always, in the agent): runs are real processes.
    stand_in: Option<Arc<dyn StandIn>>,
}

impl Runs {
    /// Opens the spool directory, loading the runs an earlier agent left there, with the
    /// default spool quota and containment.
    pub fn open(dir: &Path, max_concurrent: u32) -> anyhow::Result<Runs> {
        Runs::open_with(
            dir,
            RunsOptions {
                max_concurrent,
                max_spool_bytes: DEFAULT_MAX_SPOOL_BYTES,
                containment: contain::Mode::Auto,
            },
        )
    }

    /// Opens the spool directory (created 0700 when missing; refused unless it is a real
    /// directory of the agent's user with mode 0700), sets up the containment of runs, and
    /// loads the runs an earlier agent left there.
    pub fn open_with(dir: &Path, options: RunsOptions) -> anyhow::Result<Runs> {
        use anyhow::Context as _;
        crate::private_dir::ensure_private_dir(dir, "spool directory")?;
        let containment = Containment::init(options.containment)?;
        let spool_bytes = Arc::new(AtomicU64::new(0));
        let max_concurrent = options.max_concurrent;
        let mut map = HashMap::new();
        // Room for a burst of runs as large as the concurrency limit, within reason.
        let pool = FilePool::new(usize::try_from(max_concurrent.min(256)).unwrap_or(256));
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading spool directory {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.join("run.json").is_file() {
                tracing::warn!(path = %path.display(), "a run left by an older agent version, whose spool format this agent does not read; leaving it as it is");
                continue;
            }
            if path.extension().is_none_or(|e| e != RUN_EXTENSION) {
                continue;
            }
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                // Emptied after its run was acknowledged: kept for reuse.
                if !pool.offer(path.clone()) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            match Run::load(&path, &containment) {
                Ok(run) => {
                    run.spool.count_in(spool_bytes.clone());
                    map.insert(run.id().to_string(), run);
                }
                Err(e) => {
                    // Never delete what could not be read: move it aside and say so.
                    let aside = path.with_extension("unreadable");
                    tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %format!("{e:#}"), "cannot load a run; moving it aside");
                    let _ = std::fs::rename(&path, &aside);
                }
            }
        }
        Ok(Runs {
            dir: dir.to_owned(),
            pool,
            max_concurrent,
            max_spool_bytes: options.max_spool_bytes,
            spool_bytes,
            containment,
            running: Arc::new(AtomicU32::new(0)),
            map: Arc::new(Mutex::new(map)),
            stand_in: None,
        })
    }

    /// The same table, with `stand_in` in place of every later run's process (see
    /// [`StandIn`]).
    pub fn with_stand_in(mut self, stand_in: Arc<dyn StandIn>) -> Runs {
        self.stand_in = Some(stand_in);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Bytes the spool's run files hold together.
    pub fn spool_bytes(&self) -> u64 {
        self.spool_bytes.load(Ordering::Acquire)
    }

    /// The mechanism that contains runs here (`cgroup` or `subreaper`).
    pub fn containment(&self) -> &'static str {
        self.containment.name()
    }

    /// Starts a run. `record` holds what the caller knows (label, user, client, script hash).
    pub fn start(
        &self,
        spec: &RunSpec,
        record: RunRecord,
        limits: RunLimits,
    ) -> Result<Arc<Run>, StartError> {
        let limit = self.max_concurrent;
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| StartError::Busy { limit })?;
        let release = SlotGuard(self.running.clone());
        // Runs going are never cut for the quota: it only keeps new ones out.
        let used = self.spool_bytes();
        if used >= self.max_spool_bytes {
            return Err(StartError::SpoolFull {
                used,
                limit: self.max_spool_bytes,
            });
        }
        let path = self.dir.join(format!("{}.{RUN_EXTENSION}", record.id));
        let spool =
            Arc::new(Spool::create_from(&path, &self.pool).map_err(|e| StartError::Storage(e.into()))?);
        spool.count_in(self.spool_bytes.clone());
        let result = self.start_in(spool.clone(), spec, record, limits, release);
        if result.is_err() {
            // Nothing ran: the file goes (back to the pool) and out of the count.
            let _ = spool.remove(&self.pool);
        }
        result
    }

    fn start_in(
        &self,
        spool: Arc<Spool>,
        spec: &RunSpec,
        record: RunRecord,
        limits: RunLimits,
        slot: SlotGuard,
    ) -> Result<Arc<Run>, StartError> {
        let mut record = record;
        record.containment = self.containment.name().to_string();
        // The record exists before the process does: nothing runs unrecorded.
        run::write_record(&spool, &record).map_err(StartError::Storage)?;
        if let Some(stand_in) = &self.stand_in {
            let run = Run::ended(record, spool, stand_in.outcome(spec)).map_err(StartError::Storage)?;
            drop(slot);
            audit_end(&run);
            self.lock().insert(run.id().to_string(), run.clone());
            return Ok(run);
        }
        let contained = self
            .containment
            .prepare(&record.id)
            .map_err(StartError::Contain)?;
        let spawned = match runner::spawn_contained(spec, &contained) {
            Ok(spawned) => spawned,
            Err(e) => {
                contained.release();
                return Err(e.into());
            }
        };
        let run = run::start(record, spawned, contained, spool, limits, move |run| {
            drop(slot);
            audit_end(run);
        })
        .map_err(StartError::Storage)?;
        self.lock().insert(run.id().to_string(), run.clone());
        Ok(run)
    }

    pub fn get(&self, id: &str) -> Result<Arc<Run>, NotFound> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| NotFound { id: id.to_string() })
    }

    pub fn list(&self) -> Vec<Arc<Run>> {
        let mut runs: Vec<_> = self.lock().values().cloned().collect();
        runs.sort_by_key(|r| r.record.started_at_ms);
        runs
    }

    /// The caller has stored everything up to `seq`: once the run has ended and all of its
    /// output is acknowledged, its spool is removed.
    pub fn ack(&self, id: &str, seq: u64) -> Result<(), NotFound> {
        let run = self.get(id)?;
        let status = run.status();
        if matches!(status.phase, Phase::Ended { .. }) && seq >= status.extent.last_seq {
            self.remove(&run);
        }
        Ok(())
    }

    fn remove(&self, run: &Run) {
        self.lock().remove(run.id());
        if let Err(e) = run.spool.remove(&self.pool) {
            tracing::warn!(run = run.id(), error = %e, "cannot remove the run's spool");
        }
    }

    /// Removes ended runs older than `retention`, acknowledged or not.
    pub fn expire(&self, retention: Duration) {
        let cutoff = run::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        for run in self.list() {
            if let Phase::Ended { ended_at_ms, .. } = run.status().phase {
                if ended_at_ms < cutoff {
                    tracing::info!(run = run.id(), "retention expired; removing its output");
                    self.remove(&run);
                }
            }
        }
    }

    /// Stops every run (agent shutdown) and waits up to `grace` for them to end.
    pub async fn stop_all(&self, grace: Duration) {
        for run in self.list() {
            run.control(Control::Shutdown).await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // What is not yet acknowledged is made durable before the agent exits.
        for run in self.list() {
            if let Err(e) = run.spool.sync() {
                tracing::error!(run = run.id(), error = %e, "cannot flush the run's file");
            }
        }
    }
}

/// The audit record of a run's end.
fn audit_end(run: &Run) {
    let status = run.status();
    if let Phase::Ended { outcome, ended_at_ms } = &status.phase {
        let r = &run.record;
        tracing::info!(
            target: "audit",
            client = %r.client,
            run = %r.id,
            run_as = %r.run_as,
            script_sha256 = %r.script_sha256,
            started_at_ms = r.started_at_ms,
            ended_at_ms,
            state = ?outcome.state(),
            exit_code = ?outcome.to_result(0).exit_code,
            reason = %outcome.reason(),
            output_bytes = status.extent.data_bytes,
            "run ended"
        );
    }
}

/// Holds one of the concurrency slots until the run ends.
struct SlotGuard(Arc<AtomicU32>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
