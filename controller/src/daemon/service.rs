//! The daemon's gRPC edge for the CLI: validates, hands over to the [`Manager`], maps errors.

use std::sync::Arc;
use std::time::Duration;

use rjob_proto::v1 as pb;
use rjob_proto::v1::controller_server::Controller;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::daemon::admin::Admin;
use crate::daemon::manager::{JobError, Manager};
use crate::daemon::{invoke, sessions};

pub struct ControllerService {
    manager: Arc<Manager>,
    admin: Arc<Admin>,
}

impl ControllerService {
    pub fn new(manager: Arc<Manager>, admin: Arc<Admin>) -> Self {
        ControllerService { manager, admin }
    }
}

pub(crate) fn status(e: JobError) -> Status {
    match e {
        JobError::NotFound(_) => Status::not_found(e.to_string()),
        JobError::Ambiguous { .. } | JobError::Invalid(_) => Status::invalid_argument(e.to_string()),
        JobError::WrongState(_) | JobError::Receiving { .. } => Status::failed_precondition(e.to_string()),
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

    async fn daemon_status(
        &self,
        _request: Request<pb::DaemonStatusRequest>,
    ) -> Result<Response<pb::DaemonStatusResponse>, Status> {
        Ok(Response::new(
            self.admin.status(&self.manager).await.map_err(status)?,
        ))
    }

    async fn stop_daemon(
        &self,
        _request: Request<pb::StopDaemonRequest>,
    ) -> Result<Response<pb::StopDaemonResponse>, Status> {
        Ok(Response::new(
            self.admin.stop(&self.manager).await.map_err(status)?,
        ))
    }

    async fn rerun_job(
        &self,
        request: Request<pb::RerunJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let req = request.into_inner();
        let of = req.job.clone();
        let info = self.manager.rerun(req).await.map_err(status)?;
        tracing::info!(job = info.id, name = %info.name, of = %of, children = info.children.len(), "job rerun");
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
        let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
        let waited = self
            .manager
            .wait(&req.jobs, req.any, req.force, timeout)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::WaitJobsResponse {
            timed_out: waited.timed_out,
            jobs: waited.jobs,
        }))
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
        let stream = self.manager.receive(req, inbound).await.map_err(status)?;
        Ok(Response::new(stream))
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

    async fn new_session(
        &self,
        request: Request<pb::NewSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        Ok(Response::new(
            sessions::new_session(&self.manager, request.into_inner()).await?,
        ))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let sessions = sessions::list(&self.manager, &request.into_inner().names)?;
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn remove_session(
        &self,
        request: Request<pb::RemoveSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        Ok(Response::new(sessions::remove(
            &self.manager,
            &request.into_inner().name,
        )?))
    }

    type InvokeSessionStream = invoke::Events;

    async fn invoke_session(
        &self,
        request: Request<Streaming<pb::InvokeMessage>>,
    ) -> Result<Response<Self::InvokeSessionStream>, Status> {
        Ok(Response::new(
            invoke::invoke(&self.manager, request.into_inner()).await?,
        ))
    }
}
