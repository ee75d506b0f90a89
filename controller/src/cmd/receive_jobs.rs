//! The jobs of one `rjob receive`: naming them, and `--wait --auto-remove` once one was
//! received.

use rjob_proto::v1 as pb;

use super::from_status;
use crate::daemon::client::DaemonClient;

/// The job `reference` names, as the daemon lists it now.
pub async fn list_one(client: &mut DaemonClient, reference: &str) -> anyhow::Result<Option<pb::JobInfo>> {
    Ok(client
        .list_jobs(pb::ListJobsRequest {
            jobs: vec![reference.to_string()],
        })
        .await
        .map_err(from_status)?
        .into_inner()
        .jobs
        .into_iter()
        .next())
}

/// How a job is named in labels and records: its name, else its Id.
pub fn job_tag(job: &pb::JobInfo) -> String {
    if job.name.is_empty() {
        job.id.to_string()
    } else {
        job.name.clone()
    }
}

/// `--wait --auto-remove`, once the receive ended with everything confirmed: removes the job
/// if the daemon agrees that it has ended and holds nothing unreceived; else keeps it, saying so.
pub async fn auto_remove(client: &mut DaemonClient, job: &pb::JobInfo) -> anyhow::Result<u8> {
    let now = list_one(client, &job.instance_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {} is gone", job.id))?;
    let unreceived = now.children.iter().any(|c| c.has_more_data);
    let ended = crate::state::State::from_pb(now.state).is_finished();
    if unreceived || !ended {
        eprintln!(
            "rjob: job {} kept: {}",
            job.id,
            if ended {
                "some of its output is not confirmed as received"
            } else {
                "it has not ended"
            }
        );
        return Ok(crate::EXIT_FAILED);
    }
    client
        .remove_job(pb::RemoveJobRequest {
            jobs: vec![job.instance_id.clone()],
            force: false,
        })
        .await
        .map_err(from_status)?;
    Ok(0)
}
