//! `rjob stop`, `suspend`, `resume` and `remove`.

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::{JobRefs, RemoveArgs};
use crate::state::State;

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Stop,
    Suspend,
    Resume,
}

pub async fn run(action: Action, args: &JobRefs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let mut out = super::stdout::Out::new();
    let Some(jobs) = super::select::targets(&mut client, &args.jobs, args.state.as_deref()).await? else {
        return Ok(0);
    };
    for job in &jobs {
        let request = pb::JobRef { job: job.clone() };
        let info = match action {
            Action::Stop => client.stop_job(request).await,
            Action::Suspend => client.suspend_job(request).await,
            Action::Resume => client.resume_job(request).await,
        }
        .map_err(from_status)?
        .into_inner();
        out.line(&format!(
            "{} {}: {}",
            info.id,
            crate::escape::text(&info.name),
            State::from_pb(info.state)
        ))?;
    }
    Ok(out.status(0))
}

pub async fn remove(args: &RemoveArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let Some(jobs) = super::select::targets(&mut client, &args.jobs, args.state.as_deref()).await? else {
        return Ok(0);
    };
    let request = pb::RemoveJobRequest {
        jobs,
        force: args.force,
    };
    let removed = client
        .remove_job(request)
        .await
        .map_err(from_status)?
        .into_inner()
        .removed;
    let mut out = super::stdout::Out::new();
    for job in removed {
        out.line(&format!("removed {} {}", job.id, crate::escape::text(&job.name)))?;
    }
    Ok(out.status(0))
}
