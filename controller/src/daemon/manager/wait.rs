//! Waiting for jobs (Wait-Job): until every job named (or, with `any`, one of them) has
//! ended its wait ([`crate::state::State::ends_wait`]), or the timeout passes. Each pass
//! reads the jobs named, then sleeps until one of them changes.

use std::time::Duration;

use rjob_proto::v1 as pb;
use tokio::sync::watch;

use super::{state_of, JobError, Manager};

/// What a wait ended with.
pub struct Waited {
    /// The timeout passed first.
    pub timed_out: bool,
    /// The jobs, as they were then.
    pub jobs: Vec<pb::JobInfo>,
}

impl Manager {
    pub async fn wait(
        &self,
        refs: &[String],
        any: bool,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<Waited, JobError> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let ids: Vec<(i64, &String)> = {
            let jobs = self.resolve_all(refs).await?;
            jobs.iter().map(|j| j.id).zip(refs).collect()
        };
        let mut changes: Vec<watch::Receiver<u64>> =
            ids.iter().map(|(id, _)| self.changes.subscribe(*id)).collect();
        loop {
            for c in &mut changes {
                c.borrow_and_update();
            }
            let mut jobs = Vec::with_capacity(ids.len());
            let mut ended = 0;
            for (id, reference) in &ids {
                let job = self
                    .store
                    .job(*id)
                    .await?
                    .ok_or_else(|| JobError::NotFound(reference.to_string()))?;
                let children = self.store.children(*id).await?;
                if state_of(&job, &children).state().ends_wait(force) {
                    ended += 1;
                }
                jobs.push(self.info_of(&job, &children));
            }
            if (any && ended > 0) || ended == jobs.len() {
                return Ok(Waited {
                    timed_out: false,
                    jobs,
                });
            }
            let change = futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
            let (changed, which) = match deadline {
                Some(at) => match tokio::time::timeout_at(at, change).await {
                    Ok((changed, which, _)) => (changed, which),
                    Err(_) => {
                        return Ok(Waited {
                            timed_out: true,
                            jobs,
                        })
                    }
                },
                None => {
                    let (changed, which, _) = change.await;
                    (changed, which)
                }
            };
            if changed.is_err() {
                // The job was removed: the next pass says so. Watch it afresh meanwhile.
                changes[which] = self.changes.subscribe(ids[which].0);
            }
        }
    }
}
