//! Waiting for jobs (Wait-Job): until every job named (or, with `any`, one of them) has
//! ended its wait ([`crate::state::State::ends_wait`]), or the timeout passes. Each pass
//! reads the jobs named, then sleeps until one of them changes.

use std::time::Duration;

use rjob_proto::v1 as pb;
use tokio::sync::watch;

use super::{state_of, JobError, Manager};
use crate::state::{parent_state, State};

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
            // Each pass reads the jobs' rows and their children's states only; the whole rows
            // once those say the wait ends, and the reply is what those say.
            if ends(&self.pass(&ids, false).await?.0, any, force) {
                let (states, jobs) = self.pass(&ids, true).await?;
                if ends(&states, any, force) {
                    return Ok(Waited {
                        timed_out: false,
                        jobs,
                    });
                }
            }
            let change = futures::future::select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
            let (changed, which) = match deadline {
                Some(at) => match tokio::time::timeout_at(at, change).await {
                    Ok((changed, which, _)) => (changed, which),
                    Err(_) => {
                        return Ok(Waited {
                            timed_out: true,
                            jobs: self.pass(&ids, true).await?.1,
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

    /// The jobs' states now and, read `whole` (every child's row), the jobs as the reply
    /// shows them; otherwise only their children's states are read (and no job comes back).
    async fn pass(
        &self,
        ids: &[(i64, &String)],
        whole: bool,
    ) -> Result<(Vec<State>, Vec<pb::JobInfo>), JobError> {
        let (mut states, mut jobs) = (Vec::with_capacity(ids.len()), Vec::new());
        for (id, reference) in ids {
            let job = self
                .store
                .job(*id)
                .await?
                .ok_or_else(|| JobError::NotFound(reference.to_string()))?;
            states.push(if whole {
                let children = self.store.children(*id).await?;
                jobs.push(self.info_of(&job, &children));
                state_of(&job, &children).state()
            } else {
                parent_state(&self.store.child_states(*id).await?, job.suspended)
            });
        }
        Ok((states, jobs))
    }
}

/// Whether jobs in these states end a wait: every one of them, or with `any` one of them.
fn ends(states: &[State], any: bool, force: bool) -> bool {
    let ended = states.iter().filter(|s| s.ends_wait(force)).count();
    (any && ended > 0) || ended == states.len()
}
