//! The agent's gRPC service, by concern:
//! - here, the service and who a caller is (its certificate's names);
//! - [`handlers`]: the RPC handlers, a thin edge over the table of runs;
//! - [`start`] starts a run: [`validate`] checks the request, [`authorize`] the quota, the
//!   policy ([`users`] looks the user up once) and the password ([`pam_gate`], [`auth`]);
//! - [`error`]: every refusal as one [`AgentError`], and its one mapping to `tonic::Status`.
//!
//! Streaming a run is in [`crate::attach`].

pub mod auth;
mod authorize;
pub mod error;
mod handlers;
pub mod pam_gate;
mod start;
pub mod users;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tonic::Request;

pub use self::error::AgentError;
use self::pam_gate::PamGate;
use crate::config::AgentConfig;
use crate::policy::Policy;
use crate::runner::RunUser;
use crate::runs::Runs;

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
