//! Running a job: the children this daemon claimed ([`super::lease`]), in batches under the
//! throttled fan-out ([`FanOut`]), each followed on its agent and recorded in the store.

use std::sync::Arc;
use std::time::Duration;

use rjob_proto::v1 as pb;
use tokio::sync::watch;

use super::{now_ms, Manager};
use crate::budget::ErrorBudget;
use crate::child::{self, Cause, ChildOutcome, ChildSettings, ChildSink, Desired, Resume, Target};
use crate::daemon::info::{child_end, decode_request};
use crate::daemon::writer::{fenced, StoreSink};
use crate::fanout::{FanOut, Runner};
use crate::hosts::Host;
use crate::pool::Connections;
use crate::state::State;
use crate::store::{ChildRow, JobRow, StoreError};
use crate::throttle::Slot;

impl Manager {
    /// Runs a batch of a job's children that this daemon claimed: unfinished ones, under
    /// the throttled fan-out, following what the job wants of them (shared by its batches).
    pub(super) fn launch(self: &Arc<Self>, job: JobRow, children: Vec<ChildRow>) {
        let id = job.id;
        let mut batches = self.batches();
        let desired = self
            .active()
            .entry(id)
            .or_insert_with(|| {
                watch::channel(Desired {
                    stop: job.stop_requested,
                    suspend: job.suspended,
                })
                .0
            })
            .subscribe();
        let key = batches.add(id);
        let manager = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = manager.run_job(job, children, desired).await {
                tracing::error!(job = id, error = %e, "job runner failed");
            }
            manager.batch_ended(key, id).await;
        });
        batches.started(key, id, task);
    }

    /// A batch of job `id` ended: the job is no longer going here once it was the last, and
    /// its password is forgotten once every child has finished.
    async fn batch_ended(self: &Arc<Self>, key: u64, id: i64) {
        let last = self.batches().ended(key, id);
        if last {
            self.active().remove(&id);
            let finished = match self.store.child_states(id).await {
                Ok(states) => states.iter().all(|s| s.is_finished()),
                Err(_) => false,
            };
            if finished {
                self.passwords().remove(&id);
                self.job_sessions().remove(&id);
                self.kicks().forget(id);
            }
        }
        self.changed(id);
        self.kick(id);
    }

    async fn run_job(
        self: &Arc<Self>,
        job: JobRow,
        mut children: Vec<ChildRow>,
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
        // What an error budget has spent already (read only for a job with a budget: each
        // claimed batch of a shared store's job starts here).
        let already_failed = match job.max_errors {
            Some(_) => self
                .store
                .child_states(job.id)
                .await?
                .iter()
                .filter(|s| **s == State::Failed)
                .count(),
            None => 0,
        };
        children.retain(|c| !c.state.is_finished());
        // Children that had started go first: they hold the throttle slots they had.
        children.sort_by_key(|c| (c.run_id.is_none(), c.idx));
        let runner = Arc::new(JobRunner {
            manager: self.clone(),
            settings: ChildSettings {
                tls: self.tls(),
                connect_timeout: Duration::from_millis(job.connect_timeout_ms),
                reconnect_window: self.reconnect_window,
                dialin: Some(self.dialin.clone()),
            },
            request: request.clone().unwrap_or_default(),
            conns: self.job_sessions().get(&job.id).cloned(),
            job: job.clone(),
        });
        if let Err(reason) = &request {
            let (unreadable, started): (Vec<_>, Vec<_>) =
                children.into_iter().partition(|c| c.run_id.is_none());
            for child in unreadable {
                let reason = format!("{reason}: it cannot be started");
                let outcome = ChildOutcome::new(
                    State::Failed,
                    Cause::StoreFailed,
                    reason,
                    std::time::Instant::now(),
                );
                runner.ended(&child, outcome).await;
            }
            children = started;
        }
        let mut fanout = FanOut::new(job.throttle_limit as usize);
        if let Some(allowed) = job.max_errors {
            // A job picked up after a restart keeps what its budget had spent.
            let failed = u32::try_from(already_failed).unwrap_or(u32::MAX);
            fanout = fanout.with_policy(Arc::new(ErrorBudget::spent(allowed, failed)));
        }
        fanout.run(runner, children, desired).await;
        // What the fan-out's connections and chunks took goes back to the system.
        crate::memory::give_back();
        Ok(())
    }
}

/// Runs one job's children on their agents and records them in the store.
struct JobRunner {
    manager: Arc<Manager>,
    job: JobRow,
    /// What every child runs (empty when the job's request cannot be read: only children
    /// already running are followed then).
    request: pb::StartRunRequest,
    settings: ChildSettings,
    /// The session the job runs over, when it has one (and this daemon made it).
    conns: Option<Arc<dyn Connections>>,
}

impl JobRunner {
    fn target(&self, child: &ChildRow) -> Target {
        if self.job.location == "local" {
            return Target::Local(self.manager.local_socket.clone());
        }
        let host = Host {
            name: child.host.clone(),
            port: child.port,
        };
        match &self.conns {
            Some(conns) => Target::Pooled(host, conns.clone()),
            None => Target::Remote(host),
        }
    }
}

impl Runner for JobRunner {
    type Child = ChildRow;

    async fn run(
        &self,
        child: &ChildRow,
        slot: Arc<Slot>,
        desired: watch::Receiver<Desired>,
    ) -> ChildOutcome {
        let (manager, job) = (&*self.manager, &self.job);
        let mut request = self.request.clone();
        request.label = format!("{}/{}", job.instance_id, child.idx);
        // The host's own user (the inventory's or the config's), kept with the child.
        if let Some(user) = &child.run_as {
            request.run_as.clone_from(user);
        }
        if let Some(password) = manager.passwords().get(&job.id) {
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
            manager,
            job_id: job.id,
            idx: child.idx,
            slot,
        };
        let target = self.target(child);
        let outcome = child::drive(&target, request, &self.settings, &sink, desired, resume).await;
        // Whatever ended the child, its output is committed before its end is.
        if !sink.flush().await && outcome.state == State::Completed {
            return ChildOutcome::new(
                State::Failed,
                Cause::StoreFailed,
                "its output could not be stored",
                std::time::Instant::now(),
            );
        }
        outcome
    }

    async fn ended(&self, child: &ChildRow, outcome: ChildOutcome) {
        // Retried until it is recorded: a full disk holds the child Running (with the reason
        // shown), never loses its end.
        let (manager, job_id) = (&self.manager, self.job.id);
        let end = child_end(&outcome, now_ms());
        let recorded = manager
            .health
            .retry_owned("a child's end", || {
                manager.store.finish_child(job_id, child.idx, &end)
            })
            .await;
        if recorded.is_none() {
            fenced().await
        }
        tracing::info!(job = job_id, child = child.idx, host = %self.target(child).label(), state = %outcome.state, "child job ended");
        manager.changed(job_id);
        // A slot is free: claim the next child (on a shared store).
        manager.slot_freed(job_id);
    }
}
