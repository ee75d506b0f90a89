//! The agent's table of runs: it owns them, enforces the concurrency limit, and keeps their
//! files (`*.run`, one a run) in the spool directory until the caller acknowledged their output;
//! emptied files are kept for the next runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::run::{self, Control, Phase, Run, RunLimits, RunRecord};
use crate::runner::{self, RunSpec, RunnerError};
use crate::spool::{FilePool, Spool};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the agent is at its limit of {limit} concurrent runs; retry later or raise max_concurrent_runs"
    )]
    Busy { limit: u32 },
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

pub struct Runs {
    dir: PathBuf,
    pool: FilePool,
    max_concurrent: u32,
    running: Arc<AtomicU32>,
    map: Arc<Mutex<HashMap<String, Arc<Run>>>>,
}

impl Runs {
    /// Opens the spool directory (mode 0700), loading the runs an earlier agent left there.
    pub fn open(dir: &Path, max_concurrent: u32) -> anyhow::Result<Runs> {
        use anyhow::Context as _;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
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
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                // Emptied after its run was acknowledged: kept for reuse.
                if !pool.offer(path.clone()) {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            match Run::load(&path) {
                Ok(run) => {
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
            running: Arc::new(AtomicU32::new(0)),
            map: Arc::new(Mutex::new(map)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn running(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
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
        let path = self.dir.join(format!("{}.{RUN_EXTENSION}", record.id));
        let spool = Spool::create_from(&path, &self.pool).map_err(|e| StartError::Storage(e.into()))?;
        let file = spool.path().to_owned();
        let result = self.start_in(spool, spec, record, limits, release);
        if result.is_err() {
            let _ = std::fs::remove_file(&file);
        }
        result
    }

    fn start_in(
        &self,
        spool: Spool,
        spec: &RunSpec,
        record: RunRecord,
        limits: RunLimits,
        slot: SlotGuard,
    ) -> Result<Arc<Run>, StartError> {
        // The record exists before the process does: nothing runs unrecorded.
        run::write_record(&spool, &record).map_err(StartError::Storage)?;
        let spawned = runner::spawn(spec)?;
        let run = run::start(record, spawned, Arc::new(spool), limits, move |run| {
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
