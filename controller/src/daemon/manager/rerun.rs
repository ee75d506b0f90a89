//! Rerunning a job: a new job with an earlier job's script, arguments, interpreter and
//! settings (throttle limit, connect timeout, error budget), on the hosts of it that failed,
//! were unreachable, or all of them. The password is the rerun's own (never stored).

use std::sync::Arc;

use rjob_proto::v1 as pb;

use super::{JobError, Manager};
use crate::daemon::info::decode_request;
use crate::outcome::Cause;
use crate::state::State;
use crate::store::ChildRow;

/// Whether `child` is one of the hosts a rerun of `which` runs on.
fn chosen(child: &ChildRow, which: pb::RerunHosts) -> bool {
    let unreachable = child.cause.as_deref() == Some(Cause::Unreachable.name());
    match which {
        pb::RerunHosts::All => true,
        pb::RerunHosts::Unreachable => child.state == State::Failed && unreachable,
        pb::RerunHosts::Failed => child.state == State::Failed && !unreachable,
    }
}

fn which_words(which: pb::RerunHosts) -> &'static str {
    match which {
        pb::RerunHosts::All => "hosts",
        pb::RerunHosts::Unreachable => "unreachable hosts",
        pb::RerunHosts::Failed => "failed hosts",
    }
}

impl Manager {
    pub async fn rerun(self: &Arc<Self>, req: pb::RerunJobRequest) -> Result<pb::JobInfo, JobError> {
        let which = pb::RerunHosts::try_from(req.hosts)
            .map_err(|_| JobError::Invalid(format!("unknown host choice {}", req.hosts)))?;
        let job = self.resolve(&req.job).await?;
        let children = self.store.children(job.id).await?;
        let chosen: Vec<&ChildRow> = children.iter().filter(|c| chosen(c, which)).collect();
        if chosen.is_empty() {
            return Err(JobError::Invalid(format!(
                "job {} ({}) has no {} to rerun",
                job.id,
                job.name,
                which_words(which)
            )));
        }
        let mut run = decode_request(job.id, &self.store.job_request(job.id).await?)?;
        run.password = req.password;
        let hosts = if job.location == "local" {
            Vec::new()
        } else {
            chosen
                .iter()
                .map(|c| pb::HostAddr {
                    name: c.host.clone(),
                    port: u32::from(c.port),
                })
                .collect()
        };
        self.create(pb::CreateJobRequest {
            name: req.name,
            hosts,
            run: Some(run),
            throttle_limit: job.throttle_limit,
            connect_timeout_ms: job.connect_timeout_ms,
            command: job.command.clone(),
            max_errors: job.max_errors,
            session: String::new(),
        })
        .await
    }
}
