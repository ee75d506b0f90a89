//! The daemon's jobs: creating them, running their children under the throttle limit,
//! applying stop/suspend/resume, and picking everything up again after a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::child::{self, ChildOutcome, ChildSettings, ChildSink, Desired, Resume, Target};
use crate::connect::Tls;
use crate::daemon::health::Health;
use crate::daemon::info::{child_end, decode_request, encode_request, job_info};
use crate::daemon::orphans::Orphans;
use crate::daemon::writer::{write_output, StoreSink, WriteOp};
use crate::hosts::Host;
use crate::state::State;
use crate::store::{ChildRow, JobRow, JobStore, NewJob, StoreError};
use crate::throttle::Slot;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job {0:?}: `rjob jobs` lists them")]
    NotFound(String),
    #[error("job name {name:?} is ambiguous: jobs {ids} have it; name one by its Id")]
    Ambiguous { name: String, ids: String },
    #[error("job {name} (Id {id}) is {state}: stop it first, or remove it with --force")]
    Running { id: i64, name: String, state: State },
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
    /// Bumped on every change of any job; waiters re-read the store.
    changes: watch::Sender<u64>,
    /// What each job still in progress wants of its children.
    active: Mutex<HashMap<i64, watch::Sender<Desired>>>,
    /// Passwords of jobs still going, in memory only: never in the store.
    passwords: Mutex<HashMap<i64, zeroize::Zeroizing<String>>>,
    tls: Option<Tls>,
    local_socket: PathBuf,
    reconnect_window: Duration,
    /// Runs given up on, stopped once their agents answer.
    pub(super) orphans: Arc<Orphans>,
}

pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

impl Manager {
    pub fn new(
        store: Arc<dyn JobStore>,
        tls: Option<Tls>,
        local_socket: PathBuf,
        reconnect_window: Duration,
        orphans: Arc<Orphans>,
    ) -> Arc<Manager> {
        let (writer, rx) = mpsc::channel(1024);
        let (changes, _) = watch::channel(0u64);
        let health = Arc::new(Health::default());
        let runtime = tokio::runtime::Handle::current();
        let manager = Arc::new(Manager {
            store: store.clone(),
            health: health.clone(),
            writer,
            changes: changes.clone(),
            active: Mutex::new(HashMap::new()),
            passwords: Mutex::new(HashMap::new()),
            tls,
            local_socket,
            reconnect_window,
            orphans,
        });
        std::thread::Builder::new()
            .name("rjob-output-writer".into())
            .spawn(move || write_output(&runtime, &*store, &health, rx, &changes))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the output writer"));
        manager
    }

    pub fn store(&self) -> &dyn JobStore {
        &*self.store
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(super) fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<i64, watch::Sender<Desired>>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a job and starts running it.
    pub async fn create(self: &Arc<Self>, req: pb::CreateJobRequest) -> Result<pb::JobInfo, JobError> {
        crate::checks::create_job(&req).map_err(JobError::Invalid)?;
        let mut run = req
            .run
            .ok_or_else(|| JobError::Invalid("the job has nothing to run".into()))?;
        // The password stays in memory, never in the store.
        let password = zeroize::Zeroizing::new(std::mem::take(&mut run.password));
        let local = req.hosts.is_empty();
        if !local && self.tls.is_none() {
            return Err(JobError::Invalid(
                "the daemon has no controller identity: run `rjob pki init`, then restart the daemon (`rjob serve`)"
                    .into(),
            ));
        }
        if req.throttle_limit == 0 {
            return Err(JobError::Invalid("the throttle limit must be at least 1".into()));
        }
        let hosts: Vec<(String, u16)> = if local {
            vec![("localhost".to_string(), 0)]
        } else {
            req.hosts
                .iter()
                .map(|h| {
                    Ok((
                        h.name.clone(),
                        u16::try_from(h.port)
                            .map_err(|_| JobError::Invalid(format!("bad port {}", h.port)))?,
                    ))
                })
                .collect::<Result<_, JobError>>()?
        };
        let job = NewJob {
            instance_id: uuid::Uuid::new_v4().to_string(),
            name: req.name.clone(),
            command: req.command.clone(),
            location: if local { "local" } else { "remote" }.to_string(),
            request: encode_request(&run),
            throttle_limit: req.throttle_limit,
            connect_timeout_ms: req.connect_timeout_ms.max(1),
            created_at_ms: now_ms(),
            hosts,
        };
        let id = self.store.create_job(&job).await?;
        let job = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if !password.is_empty() {
            self.passwords
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, password);
        }
        self.launch(job.clone());
        self.changed();
        self.info(&job).await
    }

    /// Runs (or goes on running) a job's unfinished children.
    fn launch(self: &Arc<Self>, job: JobRow) {
        let (tx, rx) = watch::channel(Desired {
            stop: job.stop_requested,
            suspend: job.suspended,
        });
        self.active().insert(job.id, tx);
        let manager = self.clone();
        tokio::spawn(async move {
            let id = job.id;
            if let Err(e) = manager.run_job(job, rx).await {
                tracing::error!(job = id, error = %e, "job runner failed");
            }
            manager.active().remove(&id);
            manager
                .passwords
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            manager.changed();
        });
    }

    /// Picks up every unfinished job left by an earlier daemon.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut n = 0;
        for job in self.store.jobs().await? {
            let children = self.store.children(job.id).await?;
            if children.iter().any(|c| !c.state.is_finished()) {
                tracing::info!(job = job.id, name = %job.name, "resuming a job left by an earlier daemon");
                self.launch(job);
                n += 1;
            }
        }
        Ok(n)
    }

    async fn run_job(
        self: &Arc<Self>,
        job: JobRow,
        desired: watch::Receiver<Desired>,
    ) -> Result<(), StoreError> {
        // A request that cannot be read: children already running on their agents are followed
        // (their request is not needed any more); the others end Failed with the reason.
        let stored = self.store.job_request(job.id).await;
        let request = match stored.and_then(|bytes| decode_request(job.id, &bytes)) {
            Ok(request) => Ok(request),
            Err(e @ StoreError::Corrupt { .. }) => {
                tracing::error!(job = job.id, error = %e, "a job's request cannot be read");
                Err(e.to_string())
            }
            Err(e) => return Err(e),
        };
        let mut children = self.store.children(job.id).await?;
        // Children that had started go first: they hold the throttle slots they had.
        children.sort_by_key(|c| (c.run_id.is_none(), c.idx));
        let throttle = Arc::new(Semaphore::new(job.throttle_limit as usize));
        let settings = Arc::new(ChildSettings {
            tls: self.tls.clone(),
            connect_timeout: Duration::from_millis(job.connect_timeout_ms),
            reconnect_window: self.reconnect_window,
        });
        let mut running = tokio::task::JoinSet::new();
        for child in children.into_iter().filter(|c| !c.state.is_finished()) {
            let request = match (&request, &child.run_id) {
                (Ok(request), _) => request.clone(),
                (Err(_), Some(_)) => pb::StartRunRequest::default(),
                (Err(reason), None) => {
                    let reason = format!("{reason}: it cannot be started");
                    let outcome = ChildOutcome::new(State::Failed, reason, std::time::Instant::now());
                    let end = child_end(&outcome, now_ms());
                    self.health
                        .retry("a child's end", || {
                            self.store.finish_child(job.id, child.idx, &end)
                        })
                        .await;
                    self.changed();
                    continue;
                }
            };
            let Some(permit) = self.wait_for_slot(&throttle, desired.clone()).await else {
                // Stopped while queued: it never starts.
                let outcome = ChildOutcome::new(
                    State::Stopped,
                    "stopped before it started",
                    std::time::Instant::now(),
                );
                let end = child_end(&outcome, now_ms());
                self.health
                    .retry("a child's end", || {
                        self.store.finish_child(job.id, child.idx, &end)
                    })
                    .await;
                self.changed();
                continue;
            };
            let manager = self.clone();
            let job = job.clone();
            let settings = settings.clone();
            let desired = desired.clone();
            let slot = Slot::new(throttle.clone(), permit);
            running.spawn(async move {
                manager
                    .run_child(&job, request, child, &settings, desired, slot)
                    .await;
            });
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }

    /// A throttle slot, once the job is not suspended; `None` when the job is stopped.
    async fn wait_for_slot(
        &self,
        throttle: &Arc<Semaphore>,
        mut desired: watch::Receiver<Desired>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            let want = *desired.borrow_and_update();
            if want.stop {
                return None;
            }
            if want.suspend {
                if desired.changed().await.is_err() {
                    return None;
                }
                continue;
            }
            tokio::select! {
                permit = throttle.clone().acquire_owned() => {
                    let permit = permit.ok()?;
                    // Re-check: a stop or suspend may have come while we waited.
                    let want = *desired.borrow();
                    if !want.stop && !want.suspend {
                        return Some(permit);
                    }
                }
                changed = desired.changed() => if changed.is_err() { return None },
            }
        }
    }

    async fn run_child(
        &self,
        job: &JobRow,
        mut request: pb::StartRunRequest,
        child: ChildRow,
        settings: &ChildSettings,
        desired: watch::Receiver<Desired>,
        slot: Slot,
    ) {
        let target = if job.location == "local" {
            Target::Local(self.local_socket.clone())
        } else {
            Target::Remote(Host {
                name: child.host.clone(),
                port: child.port,
            })
        };
        request.label = format!("{}/{}", job.instance_id, child.idx);
        if let Some(password) = self
            .passwords
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job.id)
        {
            request.password = password.to_string();
        }
        let resume = Resume {
            run_id: child.run_id.clone(),
            // Marked just before the start request goes out.
            maybe_started: child.started_at_ms.is_some(),
            last_seq: child.last_seq,
            suspended: child.state == State::Suspended,
        };
        let sink = StoreSink {
            manager: self,
            job_id: job.id,
            idx: child.idx,
            slot,
        };
        let mut outcome = child::drive(&target, request, settings, &sink, desired, resume).await;
        // Whatever ended the child, its output is committed before its end is.
        if !sink.flush().await && outcome.state == State::Completed {
            outcome = ChildOutcome::new(
                State::Failed,
                "its output could not be stored",
                std::time::Instant::now(),
            );
        }
        // Retried until it is recorded: a full disk holds the child Running (with the reason
        // shown), never loses its end.
        let end = child_end(&outcome, now_ms());
        self.health
            .retry("a child's end", || {
                self.store.finish_child(job.id, child.idx, &end)
            })
            .await;
        tracing::info!(job = job.id, child = child.idx, host = %target.label(), state = %outcome.state, "child job ended");
        self.changed();
    }

    /// Resolves a job by Id, InstanceId or Name.
    pub async fn resolve(&self, reference: &str) -> Result<JobRow, JobError> {
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
        let mut info = job_info(job, &children);
        // While store writes wait, what the store says of a job still going is behind: say why.
        if let Some(reason) = self.health.reason() {
            for child in &mut info.children {
                if !State::from_pb(child.state).is_finished() {
                    child.reason.clone_from(&reason);
                }
            }
        }
        Ok(info)
    }

    pub async fn list(&self, refs: &[String]) -> Result<Vec<pb::JobInfo>, JobError> {
        let jobs = if refs.is_empty() {
            self.store.jobs().await?
        } else {
            try_join_all(refs.iter().map(|r| self.resolve(r))).await?
        };
        try_join_all(jobs.iter().map(|j| self.info(j))).await
    }

    async fn set_desired(&self, job: &JobRow, change: impl FnOnce(&mut Desired)) -> Result<(), JobError> {
        let mut want = Desired {
            stop: job.stop_requested,
            suspend: job.suspended,
        };
        let active = if let Some(tx) = self.active().get(&job.id) {
            want = *tx.borrow();
            change(&mut want);
            tx.send_replace(want);
            true
        } else {
            change(&mut want);
            false
        };
        let (stop, suspend) = (Some(want.stop), Some(want.suspend));
        match self.store.set_job_flags(job.id, stop, suspend).await {
            Ok(()) => {}
            // Applied already to the job going on: it is recorded once the store takes it.
            Err(_) if active => {
                let (store, health, id) = (self.store.clone(), self.health.clone(), job.id);
                tokio::spawn(async move {
                    health
                        .retry("a job's stop or suspend", || {
                            store.set_job_flags(id, stop, suspend)
                        })
                        .await;
                });
            }
            Err(e) => return Err(e.into()),
        }
        self.changed();
        Ok(())
    }

    pub async fn stop(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.set_desired(&job, |d| d.stop = true).await?;
        self.info(&job).await
    }

    pub async fn suspend(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        let info = self.info(&job).await?;
        let state = State::from_pb(info.state);
        if state.is_finished() {
            return Err(JobError::Invalid(format!(
                "job {} is {state}: nothing to suspend",
                job.name
            )));
        }
        self.set_desired(&job, |d| d.suspend = true).await?;
        self.info(&job).await
    }

    pub async fn resume(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        let state = State::from_pb(self.info(&job).await?.state);
        if !job.suspended && !state.can_resume() {
            return Err(JobError::Invalid(format!(
                "job {} is {state}: nothing to resume",
                job.name
            )));
        }
        self.set_desired(&job, |d| d.suspend = false).await?;
        self.info(&job).await
    }

    /// Removes jobs and their stored output; a job still going needs `force` (it is stopped first).
    pub async fn remove(&self, refs: &[String], force: bool) -> Result<Vec<pb::JobInfo>, JobError> {
        let jobs: Vec<JobRow> = try_join_all(refs.iter().map(|r| self.resolve(r))).await?;
        for job in &jobs {
            let state = State::from_pb(self.info(job).await?.state);
            if !state.is_finished() && !force {
                return Err(JobError::Running {
                    id: job.id,
                    name: job.name.clone(),
                    state,
                });
            }
        }
        let mut removed = Vec::new();
        for job in jobs {
            if self.active().contains_key(&job.id) {
                self.set_desired(&job, |d| d.stop = true).await?;
                let mut changes = self.subscribe();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while self.active().contains_key(&job.id) {
                    if tokio::time::timeout_at(deadline, changes.changed())
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            job = job.id,
                            "the job did not stop within 30s; removing it anyway"
                        );
                        break;
                    }
                }
            }
            removed.push(self.info(&job).await?);
            self.store.remove_job(job.id).await?;
        }
        self.changed();
        Ok(removed)
    }
}
