//! `rjob wait` (Wait-Job).

use rjob_proto::v1 as pb;

use super::poller::ProgressPoller;
use super::{from_status, DaemonAddr};
use crate::cli::{OutputFormat, WaitArgs};
use crate::state::State;
use crate::{EXIT_FAILED, EXIT_PAUSED, EXIT_TIMEOUT};

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
        OutputFormat::Json => out.line(&serde_json::to_string(&crate::records::WaitRecord {
            timed_out: reply.timed_out,
            jobs: reply.jobs.iter().map(super::jobs::job_record).collect(),
        })?)?,
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
