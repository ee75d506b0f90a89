//! The daemon's job manager: the one owner of the jobs and of the store. The RPC edge
//! (`service`) only validates and calls it. Each concern is a file of its own:
//! [`create`], [`run`] (the children under the fan-out, and the pick-up after a restart),
//! [`control`] (stop, suspend, resume, remove), [`wait`], [`receive`]; each job has its own
//! change notification ([`changes`]), so a waiter wakes only for the jobs it waits on; what
//! other daemons sharing the store change is heard in [`peers`].

mod changes;
mod control;
mod create;
mod lease;
mod peers;
pub mod receive;
mod rerun;
mod run;
mod wait;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::child::Desired;
use crate::connect::Tls;
use crate::daemon::dialin::DialIn;
use crate::daemon::health::Health;
use crate::daemon::identity::Identity;
use crate::daemon::info::{decode_request, job_info};
use crate::daemon::orphans::Orphans;
use crate::daemon::saved_sessions::SavedSessions;
use crate::daemon::writer::{write_output, WriteOp};
use crate::pool::{Connections, Pool};
use crate::state::{self, ChildState, WrongState};
use crate::store::{ChildRow, JobRow, JobStore, StoreError};

pub use changes::Changes;
pub use wait::Waited;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job {0:?}: `rjob jobs` lists them")]
    NotFound(String),
    #[error("job name {name:?} is ambiguous: jobs {ids} have it; name one by its Id")]
    Ambiguous { name: String, ids: String },
    /// The job's state does not allow what was asked.
    #[error(transparent)]
    WrongState(#[from] WrongState),
    /// Another consuming receive has the job.
    #[error(
        "job {name} (Id {id}) is being received by another `rjob receive`; wait for it to end, \
         or add --keep to read the output without taking it"
    )]
    Receiving { id: i64, name: String },
    /// What was asked is not valid in itself.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Manager {
    pub(super) store: Arc<dyn JobStore>,
    /// Whether store writes go through (they are retried until they do).
    pub(super) health: Arc<Health>,
    pub(super) writer: mpsc::Sender<WriteOp>,
    /// The bytes of output on their way to the writer: a child takes its chunk's size before
    /// it queues the chunk, the writer gives it back once the chunk is stored.
    pub(super) writer_room: Arc<tokio::sync::Semaphore>,
    /// Each job's change notification: bumped by its state changes and its stored output.
    pub(super) changes: Arc<Changes>,
    /// What each job still in progress wants of its children.
    active: Mutex<HashMap<i64, watch::Sender<Desired>>>,
    /// Passwords of jobs still going, in memory only: never in the store.
    passwords: Mutex<HashMap<i64, zeroize::Zeroizing<String>>>,
    /// Jobs with a consuming receive going (one at a time per job).
    consumers: receive::Consumers,
    identity: Arc<Identity>,
    local_socket: PathBuf,
    reconnect_window: Duration,
    /// Runs given up on, stopped once their agents answer.
    pub(super) orphans: Arc<Orphans>,
    /// The batches of children running here.
    batches: Mutex<lease::Batches>,
    /// The claims kicks asked for, one at a time per job.
    kicks: Mutex<lease::Kicks>,
    /// Until when this daemon knows its lease on a shared store to be live (`None`: a store
    /// of its own, no lease).
    lease_until: Mutex<Option<std::time::Instant>>,
    timing: crate::store::lease::Timing,
    /// This daemon's sessions (`rjob session`).
    pool: Arc<Pool>,
    /// The sessions asked for, kept across restarts (`STATE_DIR/sessions.json`).
    saved_sessions: SavedSessions,
    /// The session each job in progress runs over (`invoke --session --as-job`), in memory:
    /// a job picked up by a later daemon dials its hosts as any job does.
    job_sessions: Mutex<HashMap<i64, Arc<dyn Connections>>>,
    /// The agents dialled in to this daemon.
    pub(super) dialin: DialIn,
}

pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

impl Manager {
    pub fn new(
        store: Arc<dyn JobStore>,
        identity: Arc<Identity>,
        local_socket: PathBuf,
        reconnect_window: Duration,
        orphans: Arc<Orphans>,
        dialin: DialIn,
        saved_sessions: SavedSessions,
    ) -> Arc<Manager> {
        let (writer, rx) = mpsc::channel(1024);
        let changes = Arc::new(Changes::default());
        let health = Arc::new(Health::default());
        let runtime = tokio::runtime::Handle::current();
        let manager = Arc::new(Manager {
            store: store.clone(),
            health: health.clone(),
            writer,
            writer_room: Arc::new(tokio::sync::Semaphore::new(crate::daemon::writer::writer_budget())),
            changes: changes.clone(),
            active: Mutex::new(HashMap::new()),
            passwords: Mutex::new(HashMap::new()),
            consumers: receive::Consumers::default(),
            identity,
            local_socket,
            reconnect_window,
            orphans,
            batches: Mutex::new(lease::Batches::default()),
            kicks: Mutex::new(lease::Kicks::default()),
            lease_until: Mutex::new(None),
            timing: crate::store::lease::Timing::from_env(),
            pool: Arc::new(Pool::default()),
            saved_sessions,
            job_sessions: Mutex::new(HashMap::new()),
            dialin,
        });
        std::thread::Builder::new()
            .name("rjob-output-writer".into())
            .spawn(move || write_output(&runtime, &*store, &health, rx, &changes))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the output writer"));
        manager.hear_peers();
        manager
    }

    /// Whether the daemon has a controller identity (remote jobs need one).
    pub fn identity_loaded(&self) -> bool {
        self.identity.loaded()
    }

    /// The controller identity for remote jobs (loaded now if it only just appeared).
    pub(crate) fn tls(&self) -> Option<Tls> {
        self.identity.get().ok()
    }

    /// The controller identity, or why there is none (in words, with the step that fixes it).
    pub(crate) fn identity_tls(&self) -> Result<Tls, String> {
        self.identity.get().map_err(|e| self.identity.missing(&e))
    }

    /// This daemon's sessions.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The sessions kept across restarts.
    pub fn saved_sessions(&self) -> &SavedSessions {
        &self.saved_sessions
    }

    fn job_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<dyn Connections>>> {
        self.job_sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agents dialled in to this daemon.
    pub fn dialin(&self) -> &DialIn {
        &self.dialin
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Job `id` changed (its state, its flags, its output).
    pub(super) fn changed(&self, id: i64) {
        self.changes.bump(id);
    }

    fn batches(&self) -> std::sync::MutexGuard<'_, lease::Batches> {
        self.batches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kicks(&self) -> std::sync::MutexGuard<'_, lease::Kicks> {
        self.kicks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<i64, watch::Sender<Desired>>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn passwords(&self) -> std::sync::MutexGuard<'_, HashMap<i64, zeroize::Zeroizing<String>>> {
        self.passwords.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves a job by Id, InstanceId or Name.
    pub(super) async fn resolve(&self, reference: &str) -> Result<JobRow, JobError> {
        let reference = reference.trim();
        let jobs = self.store.jobs().await?;
        if let Ok(id) = reference.parse::<i64>() {
            if let Some(job) = jobs.iter().find(|j| j.id == id) {
                return Ok(job.clone());
            }
        }
        if let Some(job) = jobs.iter().find(|j| j.instance_id == reference) {
            return Ok(job.clone());
        }
        let named: Vec<&JobRow> = jobs.iter().filter(|j| j.name == reference).collect();
        match named.as_slice() {
            [] => match reference.parse::<i64>() {
                Ok(id) if self.store.was_lost(id) => Err(JobError::Invalid(format!(
                    "job {id} was lost from the job store (found missing when the daemon started): its state and output are gone"
                ))),
                _ => Err(JobError::NotFound(reference.to_string())),
            },
            [one] => Ok((*one).clone()),
            many => Err(JobError::Ambiguous {
                name: reference.to_string(),
                ids: many
                    .iter()
                    .map(|j| j.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    pub async fn info(&self, job: &JobRow) -> Result<pb::JobInfo, JobError> {
        let children = self.store.children(job.id).await?;
        Ok(self.info_of(job, &children))
    }

    /// A job as the CLI shows it, from its rows.
    fn info_of(&self, job: &JobRow, children: &[ChildRow]) -> pb::JobInfo {
        let mut info = job_info(job, children);
        // While store writes wait, what the store says of a job still going is behind: say why.
        if let Some(reason) = self.health.reason() {
            for (child, row) in info.children.iter_mut().zip(children) {
                if !row.state.is_finished() {
                    child.reason.clone_from(&reason);
                }
            }
        }
        info
    }

    pub async fn list(&self, refs: &[String]) -> Result<Vec<pb::JobInfo>, JobError> {
        let jobs = if refs.is_empty() {
            self.store.jobs().await?
        } else {
            self.resolve_all(refs).await?
        };
        try_join_all(jobs.iter().map(|j| self.listed(j))).await
    }

    /// A job as `rjob jobs` lists it: with the users its hosts run as.
    async fn listed(&self, job: &JobRow) -> Result<pb::JobInfo, JobError> {
        let children = self.store.children(job.id).await?;
        let mut info = self.info_of(job, &children);
        let default = match self.store.job_request(job.id).await {
            Ok(bytes) => decode_request(job.id, &bytes)
                .map(|r| r.run_as)
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
        let own: Vec<Option<String>> = children.iter().map(|c| c.run_as.clone()).collect();
        let mut users: Vec<String> = crate::password::users_of(&own, &default)
            .into_iter()
            .flatten()
            .collect();
        users.sort_unstable();
        users.dedup();
        info.run_as = users;
        Ok(info)
    }

    pub(super) async fn resolve_all(&self, refs: &[String]) -> Result<Vec<JobRow>, JobError> {
        try_join_all(refs.iter().map(|r| self.resolve(r))).await
    }

    /// A job's state machine, from its rows.
    async fn job_state(&self, job: &JobRow) -> Result<state::Job, JobError> {
        let children = self.store.children(job.id).await?;
        Ok(state_of(job, &children))
    }
}

/// A job's state machine, from its rows.
fn state_of(job: &JobRow, children: &[ChildRow]) -> state::Job {
    state::Job {
        id: job.id,
        name: job.name.clone(),
        suspended: job.suspended,
        children: children.iter().map(child_state).collect(),
    }
}

/// A child's state with its data, from its row.
fn child_state(row: &ChildRow) -> ChildState {
    ChildState::from_stored(state::Stored {
        state: row.state,
        run_id: row.run_id.as_deref(),
        started_at_ms: row.started_at_ms,
        exit_code: row.exit_code,
        signal: row.signal,
        reason: row.reason.as_deref(),
        cause: row.cause.as_deref(),
        ended_at_ms: row.ended_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_consuming_receive_is_told_what_to_do() {
        let e = JobError::Receiving {
            id: 4,
            name: "nightly".into(),
        };
        assert_eq!(
            e.to_string(),
            "job nightly (Id 4) is being received by another `rjob receive`; wait for it to end, \
             or add --keep to read the output without taking it"
        );
    }
}
