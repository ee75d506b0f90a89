//! Stop, suspend, resume and remove: each checks the job's state first
//! ([`crate::state::Job`]'s `can_*`), then applies the change to the job going on and records
//! it in the store.

use std::time::Duration;

use rjob_proto::v1 as pb;

use super::{JobError, Manager};
use crate::store::JobRow;

impl Manager {
    /// Sets the flags given (`None`: unchanged) on the job: on its children running here at
    /// once, and in the store, which tells the daemon running them when it is another.
    async fn set_desired(
        &self,
        job: &JobRow,
        stop: Option<bool>,
        suspend: Option<bool>,
    ) -> Result<(), JobError> {
        let active = if let Some(tx) = self.active().get(&job.id) {
            tx.send_modify(|want| {
                want.stop = stop.unwrap_or(want.stop);
                want.suspend = suspend.unwrap_or(want.suspend);
            });
            true
        } else {
            false
        };
        // Only the flag changed is written: a stop and a suspend sent to two daemons at once
        // both hold.
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
        self.changed(job.id);
        Ok(())
    }

    /// Whether job `id` still runs: here, or (as the store says) on another daemon.
    async fn still_running(&self, id: i64) -> Result<bool, JobError> {
        if self.active().contains_key(&id) {
            return Ok(true);
        }
        let children = self.store.children(id).await?;
        Ok(children.iter().any(|c| !c.state.is_finished()))
    }

    pub async fn stop(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.job_state(&job).await?.can_stop()?;
        self.set_desired(&job, Some(true), None).await?;
        self.info(&job).await
    }

    pub async fn suspend(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.job_state(&job).await?.can_suspend()?;
        self.set_desired(&job, None, Some(true)).await?;
        self.info(&job).await
    }

    pub async fn resume(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.job_state(&job).await?.can_resume()?;
        self.set_desired(&job, None, Some(false)).await?;
        self.info(&job).await
    }

    /// Removes jobs and their stored output; a job still going needs `force` (it is stopped first).
    pub async fn remove(&self, refs: &[String], force: bool) -> Result<Vec<pb::JobInfo>, JobError> {
        let jobs = self.resolve_all(refs).await?;
        for job in &jobs {
            self.job_state(job).await?.can_remove(force)?;
        }
        let mut removed = Vec::new();
        for job in jobs {
            // Running here or on another daemon: stopped first, and removed once it ended.
            let mut changes = self.changes.subscribe(job.id);
            if self.still_running(job.id).await? {
                self.set_desired(&job, Some(true), None).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while self.still_running(job.id).await? {
                    match tokio::time::timeout_at(deadline, changes.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break, // removed meanwhile
                        Err(_) => {
                            tracing::warn!(
                                job = job.id,
                                "the job did not stop within 30s; removing it anyway"
                            );
                            break;
                        }
                    }
                }
            }
            removed.push(self.info(&job).await?);
            self.store.remove_job(job.id).await?;
            // Its waiters and receivers look once more, find it gone, and end.
            self.changes.removed(job.id);
            self.kicks().forget(job.id);
        }
        Ok(removed)
    }
}
