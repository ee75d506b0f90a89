//! `rjob rerun JOB [--failed|--unreachable|--all]`: the daemon starts a new job with the
//! earlier job's script, arguments, interpreter and settings on the chosen hosts; the
//! password, never stored, is read again here.

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::RerunArgs;
use crate::password::{self, Source};

pub async fn run(args: &RerunArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let hosts = if args.all {
        pb::RerunHosts::All
    } else if args.unreachable {
        pb::RerunHosts::Unreachable
    } else {
        pb::RerunHosts::Failed
    };
    let how = Source {
        ask: args.ask_password,
        file: args.password_file.as_deref(),
        stdin: args.password_stdin,
    };
    let password = password::read_from(&how, "password for the job's run-as user: ")?;
    let request = pb::RerunJobRequest {
        job: args.job.clone(),
        hosts: hosts.into(),
        name: args.job_name.clone().unwrap_or_default(),
        password: password.as_deref().map(String::from).unwrap_or_default(),
    };
    let mut client = daemon.connect().await?;
    let job = client.rerun_job(request).await.map_err(from_status)?.into_inner();
    super::start::created(&job, args.output)
}
