//! `rjob wait` (Wait-Job).

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::{OutputFormat, WaitArgs};
use crate::state::State;
use crate::{EXIT_FAILED, EXIT_TIMEOUT};

/// Exit status: 0 when the jobs waited for finished and completed; 1 when they finished but
/// some failed or were stopped; 3 when the timeout passed first.
pub async fn run(args: &WaitArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let request = pb::WaitJobsRequest {
        jobs: args.jobs.clone(),
        any: args.any,
        timeout_ms: args
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)),
    };
    let reply = client.wait_jobs(request).await.map_err(from_status)?.into_inner();
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
    let finished: Vec<State> = reply
        .jobs
        .iter()
        .map(|j| State::from_pb(j.state))
        .filter(|s| s.is_finished())
        .collect();
    let ok = if args.any {
        finished.contains(&State::Completed)
    } else {
        finished.iter().all(|s| *s == State::Completed)
    };
    Ok(out.status(if ok { 0 } else { EXIT_FAILED }))
}
