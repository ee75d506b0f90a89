//! `rjob wait` (Wait-Job).

use std::sync::{Arc, Mutex, PoisonError};

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::{OutputFormat, WaitArgs};
use crate::daemon::client::DaemonClient;
use crate::state::State;
use crate::{EXIT_FAILED, EXIT_PAUSED, EXIT_TIMEOUT};

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

/// Exit status: 0 when the jobs waited for finished and completed; 1 when they finished but
/// some failed or were stopped; 3 when the timeout passed first; 4 (without `--force`) when
/// the wait ended on a Suspended or Disconnected job.
pub async fn run(args: &WaitArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let Some(jobs) = super::select::targets(&mut client, &args.jobs, args.state.as_deref()).await? else {
        return Ok(0);
    };
    let request = pb::WaitJobsRequest {
        jobs: jobs.clone(),
        any: args.any,
        force: args.force,
        timeout_ms: args
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)),
    };
    let poller = ProgressPoller::start(&client, &jobs, crate::progress::wanted(args.quiet, args.output));
    let reply = client.wait_jobs(request).await.map_err(from_status);
    drop(poller);
    let reply = reply?.into_inner();
    let mut out = super::stdout::Out::new();
    match args.output {
        OutputFormat::Json => out.line(
            &serde_json::json!({
                "timed_out": reply.timed_out,
                "jobs": reply.jobs.iter().map(super::jobs::job_json).collect::<Vec<_>>(),
            })
            .to_string(),
        )?,
        OutputFormat::Text => out.print(&super::jobs::table(&reply.jobs, false))?,
    }
    if reply.timed_out {
        eprintln!("rjob: the timeout passed before the jobs finished");
        return Ok(out.status(EXIT_TIMEOUT));
    }
    let states: Vec<State> = reply.jobs.iter().map(|j| State::from_pb(j.state)).collect();
    Ok(out.status(exit_status(&states, args.any, args.force)))
}

/// The exit status of a wait that did not time out, from the jobs' states when it ended.
fn exit_status(states: &[State], any: bool, force: bool) -> u8 {
    let ended: Vec<State> = states.iter().copied().filter(|s| s.ends_wait(force)).collect();
    let completed = |s: &State| *s == State::Completed;
    if any {
        if ended.iter().any(completed) {
            0
        } else if ended.iter().any(|s| s.is_finished()) {
            EXIT_FAILED
        } else {
            EXIT_PAUSED
        }
    } else if ended.iter().any(|s| s.is_paused()) {
        EXIT_PAUSED
    } else if ended.iter().all(completed) {
        0
    } else {
        EXIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn exit_status_of_a_wait() {
        assert_eq!(exit_status(&[Completed, Completed], false, false), 0);
        assert_eq!(exit_status(&[Completed, Failed], false, false), EXIT_FAILED);
        assert_eq!(exit_status(&[Completed, Suspended], false, false), EXIT_PAUSED);
        assert_eq!(exit_status(&[Failed, Disconnected], false, false), EXIT_PAUSED);
        assert_eq!(exit_status(&[Suspended, Completed], true, false), 0);
        assert_eq!(exit_status(&[Suspended, Running], true, false), EXIT_PAUSED);
        assert_eq!(exit_status(&[Stopped, Running], true, true), EXIT_FAILED);
    }
}
