//! Stop, suspend, resume and remove: each checks the job's state first
//! ([`crate::state::Job`]'s `can_*`), then applies the change to the job going on and records
//! it in the store.

use std::time::Duration;

use rjob_proto::v1 as pb;

use super::{JobError, Manager};
use crate::child::Desired;
use crate::store::JobRow;

impl Manager {
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
        self.changed(job.id);
        Ok(())
    }

    pub async fn stop(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.job_state(&job).await?.can_stop()?;
        self.set_desired(&job, |d| d.stop = true).await?;
        self.info(&job).await
    }

    pub async fn suspend(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.job_state(&job).await?.can_suspend()?;
        self.set_desired(&job, |d| d.suspend = true).await?;
        self.info(&job).await
    }

    pub async fn resume(&self, reference: &str) -> Result<pb::JobInfo, JobError> {
        let job = self.resolve(reference).await?;
        self.job_state(&job).await?.can_resume()?;
        self.set_desired(&job, |d| d.suspend = false).await?;
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
            if self.active().contains_key(&job.id) {
                let mut changes = self.changes.subscribe(job.id);
                self.set_desired(&job, |d| d.stop = true).await?;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                while self.active().contains_key(&job.id) {
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
        }
        Ok(removed)
    }
}
