//! The RPC handlers: each checks who asks, hands the request to the table of runs, and
//! answers a typed [`AgentError`] that [`respond`] maps to the wire.

use std::sync::Arc;

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_server::Agent;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::error::{respond, AgentError};
use super::{client_identity, AgentService};
use crate::attach::{attach, Acks};
use crate::run::{Control, Run};

type Events = ReceiverStream<Result<pb::RunEvent, Status>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        respond(self.start_one(request).await)
    }

    type StartAndAttachRunStream = Events;

    async fn start_and_attach_run(
        &self,
        request: Request<tonic::Streaming<pb::RunStreamRequest>>,
    ) -> Result<Response<Events>, Status> {
        respond(self.start_attached(request).await)
    }

    type AttachRunStream = Events;

    async fn attach_run(&self, request: Request<pb::AttachRunRequest>) -> Result<Response<Events>, Status> {
        respond(self.attach_one(request))
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::RunInfo>, Status> {
        respond(
            self.owned_run(&request, &request.get_ref().run_id)
                .map(|run| run.info()),
        )
    }

    async fn stop_run(
        &self,
        request: Request<pb::RunControlRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        respond(self.control(request, Control::Stop).await)
    }

    async fn suspend_run(
        &self,
        request: Request<pb::RunControlRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        respond(self.control(request, Control::Suspend).await)
    }

    async fn resume_run(
        &self,
        request: Request<pb::RunControlRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        respond(self.control(request, Control::Resume).await)
    }

    async fn ack_run(
        &self,
        request: Request<pb::AckRunRequest>,
    ) -> Result<Response<pb::AckRunResponse>, Status> {
        respond(self.ack(request))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        respond(Ok(self.list(&request)))
    }

    async fn get_agent_info(
        &self,
        request: Request<pb::GetAgentInfoRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        respond(Ok(self.agent_info(&request)))
    }
}

impl AgentService {
    async fn start_one(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<pb::StartRunResponse, AgentError> {
        let identities = self.identities(&request);
        let run = self.start(identities, request.into_inner()).await?;
        Ok(pb::StartRunResponse {
            run_id: run.id().to_string(),
            info: Some(run.info()),
        })
    }

    /// StartAndAttachRun: the start request first, then the run's events, with the caller's
    /// acknowledgements on the same stream.
    async fn start_attached(
        &self,
        request: Request<tonic::Streaming<pb::RunStreamRequest>>,
    ) -> Result<Events, AgentError> {
        let identities = self.identities(&request);
        let mut requests = request.into_inner();
        let start = match requests.message().await.map_err(AgentError::Wire)? {
            Some(pb::RunStreamRequest {
                request: Some(pb::run_stream_request::Request::Start(start)),
            }) => start,
            _ => return Err(AgentError::FirstMessage),
        };
        let run = self.start(identities, start).await?;
        let started = pb::RunEvent {
            event: Some(pb::run_event::Event::Started(run.info())),
        };
        let acks = Acks {
            requests,
            runs: self.runs.clone(),
        };
        attach(run, 0, Some(started), Some(acks))
    }

    fn attach_one(&self, request: Request<pb::AttachRunRequest>) -> Result<Events, AgentError> {
        let run = self.owned_run(&request, &request.get_ref().run_id)?;
        attach(run, request.get_ref().after_seq, None, None)
    }

    fn ack(&self, request: Request<pb::AckRunRequest>) -> Result<pb::AckRunResponse, AgentError> {
        self.owned_run(&request, &request.get_ref().run_id)?;
        let req = request.into_inner();
        self.runs.ack(&req.run_id, req.seq)?;
        Ok(pb::AckRunResponse {})
    }

    /// Each client sees only its own runs.
    fn list(&self, request: &Request<pb::ListRunsRequest>) -> pb::ListRunsResponse {
        let identities = self.identities(request);
        let runs = self
            .runs
            .list()
            .iter()
            .filter(|r| identities.contains(&r.record.client))
            .map(|r| r.info())
            .collect();
        pb::ListRunsResponse { runs }
    }

    fn agent_info(&self, request: &Request<pb::GetAgentInfoRequest>) -> pb::AgentInfo {
        let c = &self.config;
        pb::AgentInfo {
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            max_concurrent_runs: c.max_concurrent_runs,
            running: self.runs.running(),
            max_script_bytes: c.max_script_bytes,
            max_output_bytes: c.max_output_bytes,
            interpreters: c.interpreters.keys().cloned().collect(),
            client_identity: client_identity(request),
        }
    }

    /// A run, if it belongs to the caller: only the client that started a run may read,
    /// control or acknowledge it.
    fn owned_run<T>(&self, request: &Request<T>, id: &str) -> Result<Arc<Run>, AgentError> {
        let run = self.runs.get(id)?;
        if !self.identities(request).contains(&run.record.client) {
            return Err(AgentError::OtherClient { id: id.to_string() });
        }
        Ok(run)
    }

    async fn control(
        &self,
        request: Request<pb::RunControlRequest>,
        c: Control,
    ) -> Result<pb::RunInfo, AgentError> {
        let run = self.owned_run(&request, &request.get_ref().run_id)?;
        let client = run.record.client.clone();
        tracing::info!(target: "audit", client, run = run.id(), control = ?c, "run control");
        run.control(c).await;
        Ok(run.info())
    }
}
