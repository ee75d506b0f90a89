//! The gRPC edge: validates requests, turns them into runs, and maps errors to `Status`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_server::Agent;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use zeroize::Zeroizing;

use crate::auth::{self, FailureLimiter};
use crate::config::{AgentConfig, DEFAULT_INTERPRETER};
use crate::policy::{Policy, Refusal};
use crate::run::{Control, Phase, Run, RunLimits, RunRecord};
use crate::runner::{RunSpec, RunUser, RunnerError};
use crate::runs::{NotFound, Runs, StartError};

pub struct AgentService {
    config: AgentConfig,
    runs: Arc<Runs>,
    /// The user the agent runs as.
    user: RunUser,
    hostname: String,
    policy: Arc<Policy>,
    failures: FailureLimiter,
    /// One password check at a time per client identity.
    pam_gates: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Password checks in flight overall.
    pam_slots: tokio::sync::Semaphore,
    /// The identity of callers without a certificate (the daemon's private socket).
    local_identity: Option<String>,
    /// Names of the client certificates seen lately, by certificate.
    cert_names: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<String>>>,
}

/// How many client certificates' names are kept parsed (a handful of controllers is usual).
const CERT_NAMES_KEPT: usize = 64;

impl AgentService {
    /// Checks the request against the policy (and the password, through PAM) and starts the
    /// run, with audit records either way.
    async fn start(&self, identities: Vec<String>, mut req: pb::StartRunRequest) -> Result<Arc<Run>, Status> {
        let client = identities.first().cloned().unwrap_or_default();
        // The password leaves the request at once and is wiped after the check.
        let password = Zeroizing::new(std::mem::take(&mut req.password));
        let script_sha256 = hex::encode(Sha256::digest(req.script.as_bytes()));
        let checked = match self.authorize(&identities, &req.run_as, password).await {
            Ok(user) => self.validate(&req, user),
            Err(status) => Err(status),
        };
        let (spec, timeout) = match checked {
            Ok(v) => v,
            Err(status) => {
                tracing::info!(target: "audit", client, run_as = %req.run_as, script_sha256, refused = status.message(), "run refused");
                return Err(status);
            }
        };
        let record = RunRecord {
            id: uuid::Uuid::new_v4().to_string(),
            label: req.label.clone(),
            run_as: spec.user.name.clone(),
            client: client.clone(),
            script_sha256: script_sha256.clone(),
            pid: 0,
            boot_id: String::new(),
            pid_start_time: 0,
            sid: 0,
            containment: String::new(),
            started_at_ms: crate::run::now_ms(),
            ended_at_ms: None,
            outcome: None,
        };
        let limits = RunLimits {
            timeout,
            max_output_bytes: self.config.max_output_bytes,
            kill_grace: self.config.kill_grace,
        };
        let run = self.runs.start(&spec, record, limits).map_err(|e| {
            tracing::info!(target: "audit", client, script_sha256, refused = %e, "run refused");
            match e {
                StartError::Busy { .. } | StartError::SpoolFull { .. } => {
                    Status::resource_exhausted(e.to_string())
                }
                StartError::Runner(RunnerError::WorkingDir { .. }) => Status::invalid_argument(e.to_string()),
                StartError::Runner(_) | StartError::Storage(_) | StartError::Contain(_) => {
                    Status::internal(e.to_string())
                }
            }
        })?;
        tracing::info!(target: "audit", client, run = run.id(), run_as = %run.record.run_as, script_sha256, pid = run.record.pid, "run started");
        Ok(run)
    }

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
        AgentService {
            config,
            runs,
            user,
            hostname,
            policy: Arc::new(policy),
            failures: FailureLimiter::default(),
            pam_gates: std::sync::Mutex::new(std::collections::HashMap::new()),
            pam_slots: tokio::sync::Semaphore::new(4),
            local_identity,
            cert_names: std::sync::Mutex::new(std::collections::HashMap::new()),
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

    /// Decides who the run runs as, checking the password when the policy asks for one.
    async fn authorize(
        &self,
        identities: &[String],
        requested: &str,
        password: Zeroizing<String>,
    ) -> Result<RunUser, Status> {
        let shown = identities.first().cloned().unwrap_or_else(|| "unknown".into());
        let requested = (!requested.is_empty()).then_some(requested);
        if self.user.uid != 0 {
            if let Some(other) = requested.filter(|u| *u != self.user.name) {
                return Err(Status::permission_denied(format!(
                    "this agent runs as {} and can only run scripts as {}; it was asked to run as {other}",
                    self.user.name, self.user.name
                )));
            }
        }
        let has_password = !password.is_empty();
        // Most requests name no one but the agent's own user, known from memory; anything
        // else needs the user database, which may block (NSS can ask the network), so it is
        // asked off the runtime's thread.
        let offline = Users::offline(&self.user);
        let mut decided = offline.decide(&self.policy, identities, requested, has_password);
        if offline.missed() {
            let (policy, own) = (self.policy.clone(), self.user.clone());
            let identities = identities.to_vec();
            let requested = requested.map(str::to_string);
            decided = tokio::task::spawn_blocking(move || {
                Users::online(&own).decide(&policy, &identities, requested.as_deref(), has_password)
            })
            .await
            .map_err(|e| Status::internal(format!("user lookup failed: {e}")))?;
        }
        let (grant, user) = decided;
        let grant = grant.map_err(|refusal| match refusal {
            Refusal::PasswordRequired(_) | Refusal::NoDefault(_) => {
                Status::invalid_argument(refusal.to_string())
            }
            _ => Status::permission_denied(refusal.to_string()),
        })?;
        let failed = || {
            Status::unauthenticated(format!(
                "authentication failed for {} on {}",
                grant.user, self.hostname
            ))
        };
        if grant.password_required {
            // One password check at a time per client (so parallel guesses wait for each
            // other's delays), and a few at a time overall.
            let gate = self.pam_gate(&shown);
            let _mine = gate.acquire_owned().await.map_err(|_| failed())?;
            let _any = self.pam_slots.acquire().await.map_err(|_| failed())?;
            let service = self.config.pam_service.clone();
            let name = grant.user.clone();
            // PAM runs even for an unknown user, so both fail the same way.
            let accepted = tokio::task::spawn_blocking(move || auth::pam_check(&service, &name, password))
                .await
                .unwrap_or(false);
            if !accepted || user.is_none() {
                let delay = self.failures.failed(&shown);
                tokio::time::sleep(delay).await;
                return Err(failed());
            }
            self.failures.succeeded(&shown);
        }
        // The policy names this user without a password: say plainly that it is missing.
        user.ok_or_else(|| {
            Status::failed_precondition(format!(
                "no user {} on {}: check the name, or create the user",
                grant.user, self.hostname
            ))
        })
    }

    fn pam_gate(&self, identity: &str) -> Arc<tokio::sync::Semaphore> {
        let mut gates = self.pam_gates.lock().unwrap_or_else(|p| p.into_inner());
        // Forget idle gates so the map does not grow with every identity ever seen.
        gates.retain(|_, g| Arc::strong_count(g) > 1);
        gates
            .entry(identity.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
            .clone()
    }

    fn validate(&self, req: &pb::StartRunRequest, user: RunUser) -> Result<(RunSpec, Duration), Status> {
        let c = &self.config;
        if req.script.len() as u64 > c.max_script_bytes {
            return Err(Status::invalid_argument(format!(
                "script is {} bytes; this agent accepts at most {} (max_script_bytes)",
                req.script.len(),
                c.max_script_bytes
            )));
        }
        if req.script.contains('\0') {
            return Err(Status::invalid_argument("script contains a NUL byte"));
        }
        let name = if req.interpreter.is_empty() {
            DEFAULT_INTERPRETER
        } else {
            &req.interpreter
        };
        let interpreter = c.interpreters.get(name).cloned().ok_or_else(|| {
            let offered: Vec<_> = c.interpreters.keys().map(String::as_str).collect();
            Status::invalid_argument(format!(
                "interpreter {name:?} is not allowed on this agent; it offers: {}",
                offered.join(", ")
            ))
        })?;
        if let Some(arg) = req.args.iter().find(|a| a.contains('\0')) {
            return Err(Status::invalid_argument(format!(
                "argument {arg:?} contains a NUL byte"
            )));
        }
        let stdin_len = req.stdin.as_ref().map_or(0, Vec::len) as u64;
        if stdin_len > c.max_stdin_bytes {
            return Err(Status::invalid_argument(format!(
                "stdin is {stdin_len} bytes; this agent accepts at most {} (max_stdin_bytes)",
                c.max_stdin_bytes
            )));
        }
        let mut env = BTreeMap::new();
        for (k, v) in &req.env {
            let valid_name = !k.is_empty()
                && !k.starts_with(|ch: char| ch.is_ascii_digit())
                && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !valid_name {
                return Err(Status::invalid_argument(format!(
                    "environment variable name {k:?} is invalid: use letters, digits and _"
                )));
            }
            if v.contains('\0') {
                return Err(Status::invalid_argument(format!(
                    "environment variable {k} contains a NUL byte"
                )));
            }
            env.insert(k.clone(), v.clone());
        }
        let working_dir = if req.working_dir.is_empty() {
            None
        } else {
            let dir = PathBuf::from(&req.working_dir);
            if !dir.is_absolute() {
                return Err(Status::invalid_argument(format!(
                    "working directory {:?} must be an absolute path",
                    req.working_dir
                )));
            }
            Some(dir)
        };
        let timeout = match req.timeout_ms {
            0 => c.default_timeout,
            ms => Duration::from_millis(ms),
        };
        if timeout > c.max_timeout {
            return Err(Status::invalid_argument(format!(
                "timeout {} is longer than this agent allows ({})",
                humantime::format_duration(timeout),
                humantime::format_duration(c.max_timeout)
            )));
        }
        Ok((
            RunSpec {
                interpreter,
                script: req.script.clone(),
                args: req.args.clone(),
                stdin: req.stdin.clone(),
                env,
                working_dir,
                user,
                lang: c.lang.clone(),
            },
            timeout,
        ))
    }
}

/// User lookups for one request. The agent's own user comes from memory; anyone else, and
/// any group, from the user and group databases when `online`. Offline, such a lookup is not
/// made but noted (`missed`), so that the caller can decide again where blocking is allowed.
struct Users<'a> {
    own: &'a RunUser,
    online: bool,
    missed: std::cell::Cell<bool>,
}

impl<'a> Users<'a> {
    fn offline(own: &'a RunUser) -> Users<'a> {
        Users {
            own,
            online: false,
            missed: std::cell::Cell::new(false),
        }
    }

    fn online(own: &'a RunUser) -> Users<'a> {
        Users {
            online: true,
            ..Users::offline(own)
        }
    }

    fn missed(&self) -> bool {
        self.missed.get()
    }

    fn get(&self, name: &str) -> Option<RunUser> {
        if name == self.own.name {
            return Some(self.own.clone());
        }
        if !self.online {
            self.missed.set(true);
            return None;
        }
        RunUser::lookup(name).ok().flatten()
    }

    fn in_group(&self, user: &str, group: &str) -> bool {
        if !self.online {
            self.missed.set(true);
            return false;
        }
        self.get(user).is_some_and(|u| u.in_group(group))
    }

    fn is_root(&self, user: &str) -> bool {
        self.get(user).is_some_and(|u| u.uid == 0)
    }

    /// The policy's decision, and the user it grants when there is one.
    fn decide(
        &self,
        policy: &Policy,
        identities: &[String],
        requested: Option<&str>,
        has_password: bool,
    ) -> (Result<crate::policy::Grant, Refusal>, Option<RunUser>) {
        let grant = policy.decide(
            identities,
            requested,
            has_password,
            |user, group| self.in_group(user, group),
            |user| self.is_root(user),
        );
        let user = grant.as_ref().ok().and_then(|g| self.get(&g.user));
        (grant, user)
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

/// The caller's side of a StartAndAttachRun stream: acknowledgements of the run it started.
struct Acks {
    requests: tonic::Streaming<pb::RunStreamRequest>,
    runs: Arc<Runs>,
}

impl Acks {
    /// Applies the caller's next acknowledgement; `None` once the caller has closed its side
    /// (or sent something else, which ends the conversation too).
    async fn next(&mut self, run: &Run) -> Option<u64> {
        match self.requests.message().await {
            Ok(Some(pb::RunStreamRequest {
                request: Some(pb::run_stream_request::Request::AckSeq(seq)),
            })) => {
                // The run is ours and known: it can't be missing.
                let _ = self.runs.ack(run.id(), seq);
                Some(seq)
            }
            _ => None,
        }
    }
}

/// A run's events from `after_seq` on, live until its result, after `first` if given. With
/// `acks` (a StartAndAttachRun stream), the caller's acknowledgements are applied as they
/// come, and the stream stays open after the result until everything is acknowledged.
fn attach(
    run: Arc<Run>,
    after_seq: u64,
    first: Option<pb::RunEvent>,
    mut acks: Option<Acks>,
) -> Result<ReceiverStream<Result<pb::RunEvent, Status>>, Status> {
    let mut status = run.subscribe();
    let mut cursor = run
        .spool
        .cursor(after_seq)
        .map_err(|e| Status::internal(e.to_string()))?;
    let (tx, rx) = mpsc::channel(16);
    if let Some(first) = first {
        // The channel is new and empty: there is room.
        let _ = tx.try_send(Ok(first));
    }
    tokio::spawn(async move {
        loop {
            let now = status.borrow_and_update().clone();
            loop {
                match cursor.next_chunk(now.extent) {
                    Ok(Some(chunk)) => {
                        let event = pb::RunEvent {
                            event: Some(pb::run_event::Event::Chunk(pb::OutputChunk {
                                seq: chunk.seq,
                                stream: chunk.stream as i32,
                                data: chunk.data,
                            })),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return; // the reader went away
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(Status::data_loss(e.to_string()))).await;
                        return;
                    }
                }
            }
            if let Phase::Ended { outcome, .. } = &now.phase {
                let last_seq = now.extent.last_seq;
                let result = outcome.to_result(last_seq);
                let sent = tx.send(Ok(pb::RunEvent {
                    event: Some(pb::run_event::Event::Result(result)),
                }));
                if sent.await.is_err() {
                    return;
                }
                // Until the caller has everything: its acknowledgement, or its side closed.
                if let Some(acks) = acks.as_mut() {
                    loop {
                        tokio::select! {
                            acked = acks.next(&run) => match acked {
                                Some(seq) if seq >= last_seq => return,
                                Some(_) => {}
                                None => return,
                            },
                            () = tx.closed() => return,
                        }
                    }
                }
                return;
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                acked = async { acks.as_mut()?.next(&run).await }, if acks.is_some() => {
                    if acked.is_none() {
                        acks = None; // the caller closed its side: nothing more to acknowledge
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
