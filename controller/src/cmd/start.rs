//! `rjob start` (Start-Job) and `rjob invoke --as-job` (Invoke-Command -AsJob): hand a job
//! to the daemon and return at once with its Id and Name.

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::{InvokeArgs, OutputFormat, StartArgs};
use crate::request::{command_text, host_list, run_request};
use crate::UsageError;

/// `rjob invoke --as-job`.
pub async fn invoke_as_job(args: &InvokeArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let hosts = host_list(args)?;
    let request = remote_job(args, &hosts, None)?;
    create(daemon, request, args.output).await
}

/// `rjob invoke --session NAME --as-job`: the session's `hosts` (as listed), over its
/// connections.
pub async fn invoke_as_job_over(
    args: &InvokeArgs,
    client: &mut crate::daemon::client::DaemonClient,
    session: &str,
    hosts: &[crate::hosts::Host],
) -> anyhow::Result<u8> {
    let request = remote_job(args, hosts, Some(session))?;
    let job = client
        .create_job(request)
        .await
        .map_err(from_status)?
        .into_inner();
    created(&job, args.output)
}

/// The job of `rjob invoke --as-job` on `hosts` (a session's, named, when `session` is).
fn remote_job(
    args: &InvokeArgs,
    hosts: &[crate::hosts::Host],
    session: Option<&str>,
) -> anyhow::Result<pb::CreateJobRequest> {
    let run = run_request(&args.script)?;
    Ok(pb::CreateJobRequest {
        name: args.job_name.clone().unwrap_or_default(),
        hosts: match session {
            Some(_) => Vec::new(),
            None => hosts
                .iter()
                .map(|h| pb::HostAddr {
                    name: h.name.clone(),
                    port: u32::from(h.port),
                })
                .collect(),
        },
        session: session.unwrap_or_default().to_string(),
        run: Some(run),
        throttle_limit: crate::invoke::throttle_of(args, hosts.len()) as u32,
        max_errors: args.max_errors.map(|m| m.of(hosts.len())),
        connect_timeout_ms: u64::try_from(args.connect_timeout.as_millis()).unwrap_or(u64::MAX),
        command: command_text(&args.script),
    })
}

/// Start-Job's directory: the caller's current one (`--cwd` overrides it).
fn caller_dir() -> anyhow::Result<String> {
    let dir = std::env::current_dir().map_err(|e| {
        UsageError(format!(
            "cannot read the current directory ({e}): give the job's directory with --cwd"
        ))
    })?;
    match dir.to_str() {
        Some(text) => Ok(text.to_string()),
        None => Err(UsageError(format!(
            "the current directory {} is not valid UTF-8: give the job's directory with --cwd",
            dir.display()
        ))
        .into()),
    }
}

/// `rjob start`: a background job on this machine, in the caller's current directory.
pub async fn start(args: &StartArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut run = run_request(&args.script)?;
    if args.script.cwd.is_none() {
        run.working_dir = caller_dir()?;
    }
    let request = pb::CreateJobRequest {
        name: args.name.clone().unwrap_or_default(),
        hosts: Vec::new(),
        run: Some(run),
        throttle_limit: 1,
        max_errors: None,
        connect_timeout_ms: 10_000,
        command: command_text(&args.script),
        session: String::new(),
    };
    create(daemon, request, args.output).await
}

async fn create(
    daemon: &DaemonAddr,
    request: pb::CreateJobRequest,
    output: OutputFormat,
) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let job = client
        .create_job(request)
        .await
        .map_err(from_status)?
        .into_inner();
    created(&job, output)
}

/// Prints a new job's Id, Name and InstanceId (or its JSON record); the exit status.
pub(super) fn created(job: &pb::JobInfo, output: OutputFormat) -> anyhow::Result<u8> {
    let mut out = super::stdout::Out::new();
    match output {
        OutputFormat::Text => out.line(&format!(
            "Id {}  Name {}  InstanceId {}",
            job.id,
            crate::escape::text(&job.name),
            job.instance_id
        ))?,
        OutputFormat::Json => out.line(&serde_json::to_string(&crate::records::StartedRecord {
            id: job.id,
            name: job.name.clone(),
            instance_id: job.instance_id.clone(),
            children: job.children.len(),
        })?)?,
    }
    Ok(out.status(0))
}
