//! The gRPC edge: who the caller is, the handlers, and the mapping of errors to `Status`.
//! Starting a run (checks, policy, password) is in [`crate::start`], streaming one in
//! [`crate::attach`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_server::Agent;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::attach::{attach, Acks};
use crate::auth;
use crate::config::AgentConfig;
use crate::pam_gate::PamGate;
use crate::policy::Policy;
use crate::run::Control;
use crate::runner::RunUser;
use crate::runs::{NotFound, Runs};

pub struct AgentService {
    pub(crate) config: AgentConfig,
    pub(crate) runs: Arc<Runs>,
    /// The user the agent runs as.
    pub(crate) user: RunUser,
    pub(crate) hostname: String,
    pub(crate) policy: Arc<Policy>,
    pub(crate) pam: PamGate,
    /// Held from the per-identity count of runs to the run's start, so that two requests
    /// of one client cannot both take its last slot.
    pub(crate) quota: Mutex<()>,
    /// The identity of callers without a certificate (the daemon's private socket).
    local_identity: Option<String>,
    /// Names of the client certificates seen lately, by certificate.
    cert_names: Mutex<HashMap<Vec<u8>, Vec<String>>>,
}

/// How many client certificates' names are kept parsed (a handful of controllers is usual).
const CERT_NAMES_KEPT: usize = 64;

impl AgentService {
    /// The agent service for TLS clients, with the policy from the config: a root agent without
    /// a policy refuses everything; a non-root one runs only as its own user.
    pub fn new(config: AgentConfig, runs: Arc<Runs>) -> anyhow::Result<AgentService> {
        let mut user = RunUser::current()?;
        // The agent's own user with its groups, looked up once (this also loads the user and
        // group database modules now rather than in the first run).
        match RunUser::lookup(&user.name) {
            Ok(Some(found)) => user = found,
            Ok(None) => {
                tracing::warn!(user = %user.name, "the agent's own user is not in the user database by name")
            }
            Err(e) => tracing::warn!(error = %e, "cannot look up the agent's own user and groups"),
        }
        let policy = match &config.policy {
            Some(path) => Policy::load(path)?,
            None if user.uid == 0 => {
                tracing::warn!("running as root with no --policy: every request will be refused");
                Policy::default()
            }
            None => Policy::own_user_only(&user.name),
        };
        Ok(AgentService::with_policy(config, runs, user, policy, None))
    }

    /// An agent service with an explicit policy; callers without a certificate count as
    /// `local_identity` (the controller daemon's embedded agent for local jobs).
    pub fn with_policy(
        config: AgentConfig,
        runs: Arc<Runs>,
        user: RunUser,
        policy: Policy,
        local_identity: Option<String>,
    ) -> AgentService {
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pam = PamGate::new(&config.pam_service);
        // Start requests over the environment limits are refused before they are decoded.
        rjob_proto::codec::limit_environment(u64::from(config.max_env_entries), config.max_env_bytes);
        AgentService {
            config,
            runs,
            user,
            hostname,
            policy: Arc::new(policy),
            pam,
            quota: Mutex::new(()),
            local_identity,
            cert_names: Mutex::new(HashMap::new()),
        }
    }

    /// The names the caller goes by: its certificate's CN and DNS SANs.
    fn identities<T>(&self, req: &Request<T>) -> Vec<String> {
        let names = match req.peer_certs() {
            Some(certs) => certs
                .first()
                .map(|c| self.certificate_names(c.as_ref()))
                .unwrap_or_default(),
            None => self.local_identity.iter().cloned().collect(),
        };
        if names.is_empty() {
            // A certificate without a name is still someone: its fingerprint.
            return vec![client_identity(req)];
        }
        names
    }

    /// The names in a client certificate, parsed once per certificate: a controller presents
    /// the same one on every connection.
    fn certificate_names(&self, der: &[u8]) -> Vec<String> {
        let mut known = self.cert_names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(names) = known.get(der) {
            return names.clone();
        }
        let names = auth::certificate_names(der);
        if known.len() >= CERT_NAMES_KEPT {
            known.clear();
        }
        known.insert(der.to_vec(), names.clone());
        names
    }
}

/// The caller's identity: the SHA-256 fingerprint of its certificate.
fn client_identity<T>(req: &Request<T>) -> String {
    req.peer_certs()
        .and_then(|certs| {
            certs
                .first()
                .map(|c| hex::encode(&Sha256::digest(c.as_ref())[..8]))
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn not_found(e: NotFound) -> Status {
    Status::not_found(e.to_string())
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let identities = self.identities(&request);
        let run = self.start(identities, request.into_inner()).await?;
        Ok(Response::new(pb::StartRunResponse {
            run_id: run.id().to_string(),
            info: Some(run.info()),
        }))
    }

    type StartAndAttachRunStream = ReceiverStream<Result<pb::RunEvent, Status>>;

    async fn start_and_attach_run(
        &self,
        request: Request<tonic::Streaming<pb::RunStreamRequest>>,
    ) -> Result<Response<Self::StartAndAttachRunStream>, Status> {
        let identities = self.identities(&request);
        let mut requests = request.into_inner();
        let start = match requests.message().await? {
            Some(pb::RunStreamRequest {
                request: Some(pb::run_stream_request::Request::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of StartAndAttachRun must be the start request",
                ))
            }
        };
        let run = self.start(identities, start).await?;
        let started = pb::RunEvent {
            event: Some(pb::run_event::Event::Started(run.info())),
        };
        let acks = Acks {
            requests,
            runs: self.runs.clone(),
        };
        Ok(Response::new(attach(run, 0, Some(started), Some(acks))?))
    }

    type AttachRunStream = ReceiverStream<Result<pb::RunEvent, Status>>;

    async fn attach_run(
        &self,
        request: Request<pb::AttachRunRequest>,
    ) -> Result<Response<Self::AttachRunStream>, Status> {
        let run = self.owned_run(&request, &request.get_ref().run_id)?;
        let req = request.into_inner();
        Ok(Response::new(attach(run, req.after_seq, None, None)?))
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::RunInfo>, Status> {
        let run = self.owned_run(&request, &request.get_ref().run_id)?;
        Ok(Response::new(run.info()))
    }

    async fn stop_run(
        &self,
        request: Request<pb::RunControlRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        self.control(request, Control::Stop).await
    }

    async fn suspend_run(
        &self,
        request: Request<pb::RunControlRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        self.control(request, Control::Suspend).await
    }

    async fn resume_run(
        &self,
        request: Request<pb::RunControlRequest>,
    ) -> Result<Response<pb::RunInfo>, Status> {
        self.control(request, Control::Resume).await
    }

    async fn ack_run(
        &self,
        request: Request<pb::AckRunRequest>,
    ) -> Result<Response<pb::AckRunResponse>, Status> {
        self.owned_run(&request, &request.get_ref().run_id)?;
        let req = request.into_inner();
        self.runs.ack(&req.run_id, req.seq).map_err(not_found)?;
        Ok(Response::new(pb::AckRunResponse {}))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        // Each client sees only its own runs.
        let identities = self.identities(&request);
        let runs = self
            .runs
            .list()
            .iter()
            .filter(|r| identities.contains(&r.record.client))
            .map(|r| r.info())
            .collect();
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_agent_info(
        &self,
        request: Request<pb::GetAgentInfoRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let c = &self.config;
        Ok(Response::new(pb::AgentInfo {
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            max_concurrent_runs: c.max_concurrent_runs,
            running: self.runs.running(),
            max_script_bytes: c.max_script_bytes,
            max_output_bytes: c.max_output_bytes,
            interpreters: c.interpreters.keys().cloned().collect(),
            client_identity: client_identity(&request),
        }))
    }
}

impl AgentService {
    /// A run, if it belongs to the caller: only the client that started a run may read,
    /// control or acknowledge it.
    fn owned_run<T>(&self, request: &Request<T>, id: &str) -> Result<Arc<crate::run::Run>, Status> {
        let run = self.runs.get(id).map_err(not_found)?;
        if !self.identities(request).contains(&run.record.client) {
            return Err(Status::permission_denied(format!(
                "run {id} belongs to another client"
            )));
        }
        Ok(run)
    }

    async fn control(
        &self,
        request: Request<pb::RunControlRequest>,
        c: Control,
    ) -> Result<Response<pb::RunInfo>, Status> {
        let run = self.owned_run(&request, &request.get_ref().run_id)?;
        let client = run.record.client.clone();
        tracing::info!(target: "audit", client, run = run.id(), control = ?c, "run control");
        run.control(c).await;
        Ok(Response::new(run.info()))
    }
}
