//! The daemon's gRPC edge for the CLI: validates, hands over to the [`Manager`], maps errors.

use std::sync::Arc;
use std::time::Duration;

use rjob_proto::v1 as pb;
use rjob_proto::v1::controller_server::Controller;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::jobs::{JobError, Manager};
use crate::daemon::receive;
use crate::state::State;

pub struct ControllerService {
    manager: Arc<Manager>,
    /// Jobs with a consuming receive going (one at a time per job).
    consumers: receive::Consumers,
}

impl ControllerService {
    pub fn new(manager: Arc<Manager>) -> Self {
        ControllerService {
            manager,
            consumers: receive::Consumers::default(),
        }
    }
}

pub(crate) fn status(e: JobError) -> Status {
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
        let info = self.manager.create(request.into_inner()).await.map_err(status)?;
        tracing::info!(job = info.id, name = %info.name, children = info.children.len(), "job created");
        Ok(Response::new(info))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .manager
            .list(&request.into_inner().jobs)
            .await
            .map_err(status)?;
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
            let jobs = self.manager.list(&req.jobs).await.map_err(status)?;
            let finished = jobs
                .iter()
                .filter(|j| State::from_pb(j.state).ends_wait(req.force))
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
        request: Request<Streaming<pb::ReceiveJobMessage>>,
    ) -> Result<Response<Self::ReceiveJobStream>, Status> {
        let mut inbound = request.into_inner();
        let req = match inbound.message().await? {
            Some(pb::ReceiveJobMessage {
                message: Some(pb::receive_job_message::Message::Request(req)),
            }) => req,
            _ => return Err(Status::invalid_argument("a receive starts with its request")),
        };
        let job = self.manager.resolve(&req.job).await.map_err(status)?;
        let children = self
            .manager
            .store()
            .children(job.id)
            .await
            .map_err(|e| status(e.into()))?;
        let selected: Vec<(u32, String)> = children
            .iter()
            .map(|c| (c.idx, c.label(&job.location)))
            .filter(|(_, label)| req.host.is_empty() || *label == req.host)
            .collect();
        if selected.is_empty() {
            let labels: Vec<String> = children.iter().map(|c| c.label(&job.location)).collect();
            return Err(Status::invalid_argument(format!(
                "job {} has no host {:?}; its hosts: {}",
                job.name,
                req.host,
                labels.join(", ")
            )));
        }
        let claim = if req.keep {
            None
        } else {
            Some(self.consumers.claim(job.id).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "job {} (Id {}) is being received by another `rjob receive`; wait for it to end, \
                     or add --keep to read the output without taking it",
                    job.name, job.id
                ))
            })?)
        };
        let plan = receive::Plan {
            job_id: job.id,
            children: selected,
            keep: req.keep,
            after_seq: if req.keep { req.after_seq } else { 0 },
            follow: req.follow,
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(receive::run(self.manager.clone(), plan, inbound, tx, claim));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn stop_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.manager
                .stop(&request.into_inner().job)
                .await
                .map_err(status)?,
        ))
    }

    async fn suspend_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.manager
                .suspend(&request.into_inner().job)
                .await
                .map_err(status)?,
        ))
    }

    async fn resume_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::JobInfo>, Status> {
        Ok(Response::new(
            self.manager
                .resume(&request.into_inner().job)
                .await
                .map_err(status)?,
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
