//! The progress line over the children of some jobs, read from the daemon while `rjob wait`
//! or `rjob receive --follow` waits.

use std::sync::{Arc, Mutex, PoisonError};

use rjob_proto::v1 as pb;

use crate::daemon::client::DaemonClient;
use crate::state::State;

/// How often the progress line's counts are read from the daemon.
const POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Shows the progress line over the children of some jobs, read from the daemon every
/// [`POLL`], until dropped (which clears the line). `rjob wait` and `rjob receive --follow`.
pub struct ProgressPoller {
    task: Option<tokio::task::JoinHandle<()>>,
    /// Set when dropped; the task updates the line only while holding it unset, so a task
    /// still running on another thread never draws the line again once it was cleared.
    stopped: Arc<Mutex<bool>>,
}

impl ProgressPoller {
    pub fn start(client: &DaemonClient, jobs: &[String], shown: bool) -> ProgressPoller {
        let stopped = Arc::new(Mutex::new(false));
        if !shown {
            return ProgressPoller { task: None, stopped };
        }
        let mut lister = client.clone();
        let jobs = jobs.to_vec();
        let flag = stopped.clone();
        let task = tokio::spawn(async move {
            let mut begun = false;
            loop {
                let listed = lister
                    .list_jobs(pb::ListJobsRequest { jobs: jobs.clone() })
                    .await
                    .map(|r| r.into_inner().jobs);
                if let Ok(listed) = listed {
                    let counts = counts(&listed);
                    let stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
                    if *stopped {
                        return;
                    }
                    if !begun {
                        crate::progress::begin(counts.total, true);
                        begun = true;
                    }
                    crate::progress::set(counts);
                }
                tokio::time::sleep(POLL).await;
            }
        });
        ProgressPoller {
            task: Some(task),
            stopped,
        }
    }
}

impl Drop for ProgressPoller {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
            crate::progress::end();
        }
    }
}

/// The progress line's counts over the children of `jobs`.
pub fn counts(jobs: &[pb::JobInfo]) -> crate::progress::Counts {
    let mut counts = crate::progress::Counts::default();
    for child in jobs.iter().flat_map(|j| &j.children) {
        let state = State::from_pb(child.state);
        counts.total += 1;
        if state.is_finished() {
            counts.done += 1;
            counts.failed += usize::from(state != State::Completed);
        } else if state == State::Running {
            counts.running += 1;
        }
    }
    counts
}
