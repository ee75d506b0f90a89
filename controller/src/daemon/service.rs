//! The daemon's gRPC edge for the CLI: validates, hands over to the [`Manager`], maps errors.

use std::sync::Arc;
use std::time::Duration;

use rjob_proto::v1 as pb;
use rjob_proto::v1::controller_server::Controller;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::daemon::jobs::{JobError, Manager};
use crate::state::State;

pub struct ControllerService {
    manager: Arc<Manager>,
}

impl ControllerService {
    pub fn new(manager: Arc<Manager>) -> Self {
        ControllerService { manager }
    }
}

fn status(e: JobError) -> Status {
    match e {
        JobError::NotFound(_) => Status::not_found(e.to_string()),
        JobError::Ambiguous { .. } | JobError::Invalid(_) => Status::invalid_argument(e.to_string()),
        JobError::Running { .. } => Status::failed_precondition(e.to_string()),
        JobError::Store(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_job(
        &self,
        request: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let info = self.manager.create(request.into_inner()).map_err(status)?;
        tracing::info!(job = info.id, name = %info.name, children = info.children.len(), "job created");
        Ok(Response::new(info))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self.manager.list(&request.into_inner().jobs).map_err(status)?;
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn wait_jobs(
        &self,
        request: Request<pb::WaitJobsRequest>,
    ) -> Result<Response<pb::WaitJobsResponse>, Status> {
        let req = request.into_inner();
        if req.jobs.is_empty() {
            return Err(Status::invalid_argument("name at least one job to wait for"));
        }
        let deadline =
            (req.timeout_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(req.timeout_ms));
        let mut changes = self.manager.subscribe();
        loop {
            let jobs = self.manager.list(&req.jobs).map_err(status)?;
            let finished = jobs
                .iter()
                .filter(|j| State::from_pb(j.state).is_finished())
                .count();
            if (req.any && finished > 0) || finished == jobs.len() {
                return Ok(Response::new(pb::WaitJobsResponse {
                    timed_out: false,
                    jobs,
                }));
            }
            let changed = match deadline {
                Some(at) => tokio::time::timeout_at(at, changes.changed()).await,
                None => Ok(changes.changed().await),
            };
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("the daemon is shutting down")),
                Err(_) => {
                    return Ok(Response::new(pb::WaitJobsResponse {
                        timed_out: true,
                        jobs,
                    }))
                }
            }
        }
    }

    type ReceiveJobStream = ReceiverStream<Result<pb::JobOutput, Status>>;

    async fn receive_job(
        &self,
        request: Request<pb::ReceiveJobRequest>,
    ) -> Result<Response<Self::ReceiveJobStream>, Status> {
        let req = request.into_inner();
        let job = self.manager.resolve(&req.job).map_err(status)?;
        let children = self
            .manager
            .store()
            .children(job.id)
            .map_err(|e| status(e.into()))?;
        let labels: Vec<String> = children.iter().map(|c| c.label(&job.location)).collect();
        let selected: Vec<u32> = children
            .iter()
            .zip(&labels)
            .filter(|(_, label)| req.host.is_empty() || **label == req.host)
            .map(|(c, _)| c.idx)
            .collect();
        if selected.is_empty() {
            return Err(Status::invalid_argument(format!(
                "job {} has no host {:?}; its hosts: {}",
                job.name,
                req.host,
                labels.join(", ")
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let manager = self.manager.clone();
        tokio::spawn(async move {
            if let Err(e) =
                stream_output(&manager, job.id, &selected, &labels, kept(&req), req.follow, &tx).await
            {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stop_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.manager.stop(&request.into_inner().job).map_err(status)?,
        ))
    }

    async fn suspend_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.manager.suspend(&request.into_inner().job).map_err(status)?,
        ))
    }

    async fn resume_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.manager.resume(&request.into_inner().job).map_err(status)?,
        ))
    }

    async fn remove_job(
        &self,
        request: Request<pb::RemoveJobRequest>,
    ) -> Result<Response<pb::RemoveJobResponse>, Status> {
        let req = request.into_inner();
        if req.jobs.is_empty() {
            return Err(Status::invalid_argument("name at least one job to remove"));
        }
        let removed = self.manager.remove(&req.jobs, req.force).await.map_err(status)?;
        Ok(Response::new(pb::RemoveJobResponse { removed }))
    }
}

/// With `keep`, where the receive starts for each child past what was received: `after_seq`
/// (a receive that marks output received never skips any).
fn kept(req: &pb::ReceiveJobRequest) -> Option<u64> {
    req.keep.then_some(req.after_seq)
}

/// Sends output not yet received (child by child, in order); with `follow`, goes on with live
/// output until the job has ended and everything was sent. Without `keep`, what was sent is
/// marked received; with `keep: Some(after_seq)`, it is left unreceived.
async fn stream_output(
    manager: &Manager,
    job_id: i64,
    selected: &[u32],
    labels: &[String],
    keep: Option<u64>,
    follow: bool,
    tx: &mpsc::Sender<Result<pb::JobOutput, Status>>,
) -> Result<(), JobError> {
    let store = manager.store();
    let mut changes = manager.subscribe();
    let start = store.children(job_id)?;
    let mut cursors: Vec<u64> = selected
        .iter()
        .map(|idx| {
            start
                .iter()
                .find(|c| c.idx == *idx)
                .map_or(0, |c| c.received_seq)
                .max(keep.unwrap_or(0))
        })
        .collect();
    loop {
        changes.borrow_and_update();
        let children = store.children(job_id)?;
        if children.is_empty() {
            return Err(JobError::NotFound(job_id.to_string())); // removed meanwhile
        }
        for (slot, idx) in selected.iter().enumerate() {
            let Some(child) = children.iter().find(|c| c.idx == *idx) else {
                continue;
            };
            loop {
                let rows = store.output(job_id, *idx, cursors[slot], child.last_seq, 256)?;
                let Some(last) = rows.last().map(|r| r.0) else {
                    break;
                };
                for (seq, stream, data) in rows {
                    let out = pb::JobOutput {
                        child: *idx,
                        host: labels.get(*idx as usize).cloned().unwrap_or_default(),
                        stream: stream as i32,
                        seq,
                        data,
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return Ok(()); // the reader went away; what it did not get stays unreceived
                    }
                }
                cursors[slot] = last;
                if keep.is_none() {
                    store.mark_received(job_id, *idx, last)?;
                }
            }
        }
        if !follow {
            return Ok(());
        }
        let all_sent_and_done = selected.iter().enumerate().all(|(slot, idx)| {
            children
                .iter()
                .find(|c| c.idx == *idx)
                .is_none_or(|c| c.state.is_finished() && cursors[slot] >= c.last_seq)
        });
        if all_sent_and_done {
            return Ok(());
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Ok(()) },
            () = tx.closed() => return Ok(()),
        }
    }
}
