//! Starting a run: the request's own checks first (sizes, names, environment: no work for a
//! bad request), then the client's run quota, then the policy with one user lookup, then the
//! password through PAM, then the run. An audit record either way.

use std::sync::Arc;

use rjob_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::Status;
use zeroize::Zeroizing;

use crate::policy::Refusal;
use crate::run::{Phase, Run, RunLimits, RunRecord};
use crate::runner::{RunUser, RunnerError};
use crate::runs::StartError;
use crate::service::AgentService;
use crate::users::{Undecided, Users};
use crate::validate;

impl AgentService {
    /// Checks the request, the client's quota and the policy (and the password, through
    /// PAM), and starts the run, with audit records either way.
    pub(crate) async fn start(
        &self,
        identities: Vec<String>,
        mut req: pb::StartRunRequest,
    ) -> Result<Arc<Run>, Status> {
        let client = identities.first().cloned().unwrap_or_default();
        // The password leaves the request at once and is wiped after the check.
        let password = Zeroizing::new(std::mem::take(&mut req.password));
        let script_sha256 = hex::encode(Sha256::digest(req.script.as_bytes()));
        let checked = async {
            let checked = validate::request(&req, &self.config)?;
            self.check_quota(&client)?;
            let user = self.authorize(&identities, &req.run_as, password).await?;
            Ok::<_, Status>((checked, user))
        };
        let (checked, user) = match checked.await {
            Ok(v) => v,
            Err(status) => {
                tracing::info!(target: "audit", client, run_as = %validate::shown(&req.run_as), script_sha256, refused = status.message(), "run refused");
                return Err(status);
            }
        };
        let timeout = checked.timeout;
        let spec = checked.into_spec(&req, user, &self.config.lang);
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
        let started = {
            // The quota again, and the start, under one lock: the client's last slot is taken once.
            let _quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
            self.check_quota(&client)
                .and_then(|()| self.runs.start(&spec, record, limits).map_err(start_error))
        };
        let run = started.inspect_err(|status| {
            tracing::info!(target: "audit", client, script_sha256, refused = status.message(), "run refused");
        })?;
        tracing::info!(target: "audit", client, run = run.id(), run_as = %run.record.run_as, script_sha256, pid = run.record.pid, "run started");
        Ok(run)
    }

    /// Refuses a client that has `max_runs_per_identity` runs going (not yet ended).
    fn check_quota(&self, client: &str) -> Result<(), Status> {
        let limit = self.config.max_runs_per_identity;
        if limit >= self.config.max_concurrent_runs {
            // No stricter than the agent's own limit, which the start enforces (and names).
            return Ok(());
        }
        let going = self
            .runs
            .list()
            .iter()
            .filter(|r| r.record.client == client && !matches!(r.status().phase, Phase::Ended { .. }))
            .count();
        if going >= limit as usize {
            // Back-pressure, as at the agent's own limit: the controller waits and retries.
            return Err(rjob_proto::pushback::busy(
                format!(
                    "client {client:?} has {going} runs going on this agent, the most one client may have (max_runs_per_identity = {limit}); retry when one has ended"
                ),
                BUSY_PUSHBACK,
            ));
        }
        Ok(())
    }

    /// Decides who the run runs as, checking the password when the policy asks for one. The
    /// user is looked up once, and that record both decides root and runs.
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
        let target = self.policy.target(identities, requested).map_err(refused)?;
        validate::user_name(&target)?;
        let has_password = !password.is_empty();
        // Most requests name no one but the agent's own user, known from memory; anything
        // else needs the user database, which may block (NSS can ask the network), so it is
        // asked off the runtime's thread.
        let mut decided = Users::offline(&self.user).decide(&self.policy, identities, &target, has_password);
        if matches!(decided, Err(Undecided::Offline)) {
            let (policy, own) = (self.policy.clone(), self.user.clone());
            let identities = identities.to_vec();
            let target = target.clone();
            decided = tokio::task::spawn_blocking(move || {
                Users::online(&own).decide(&policy, &identities, &target, has_password)
            })
            .await
            .map_err(|e| Status::internal(format!("user lookup failed: {e}")))?;
        }
        let (grant, user) = match decided {
            Ok(v) => v,
            Err(Undecided::Refused(refusal)) => return Err(refused(refusal)),
            Err(Undecided::Lookup(e)) => {
                tracing::warn!(user = %target, error = %e, "user lookup failed; refusing the run");
                return Err(Status::unavailable(format!(
                    "{e} (on {}); the run is refused: retry when the user database answers",
                    self.hostname
                )));
            }
            Err(Undecided::Offline) => return Err(Status::internal("the user database was not asked")),
        };
        if grant.password_required
            && !self
                .pam
                .check(&shown, &grant.user, user.is_some(), password)
                .await
        {
            return Err(Status::unauthenticated(format!(
                "authentication failed for {} on {}",
                grant.user, self.hostname
            )));
        }
        // The policy names this user without a password: say plainly that it is missing.
        user.ok_or_else(|| {
            Status::failed_precondition(format!(
                "no user {} on {}: check the name, or create the user",
                grant.user, self.hostname
            ))
        })
    }
}

fn refused(refusal: Refusal) -> Status {
    match refusal {
        Refusal::PasswordRequired(_) | Refusal::NoDefault(_) => Status::invalid_argument(refusal.to_string()),
        _ => Status::permission_denied(refusal.to_string()),
    }
}

/// The earliest retry a caller refused at the concurrency limit is told to make.
const BUSY_PUSHBACK: std::time::Duration = std::time::Duration::from_millis(250);

fn start_error(e: StartError) -> Status {
    match &e {
        // Back-pressure: the client may wait and try again.
        StartError::Busy { .. } => rjob_proto::pushback::busy(e.to_string(), BUSY_PUSHBACK),
        StartError::Runner(RunnerError::WorkingDir { .. }) => Status::invalid_argument(e.to_string()),
        StartError::Runner(RunnerError::Spawn { source, .. })
            if source.raw_os_error() == Some(libc::E2BIG) =>
        {
            Status::invalid_argument(format!(
                "{e}: the arguments and environment together are more than the system passes to a program; send fewer or smaller ones"
            ))
        }
        StartError::SpoolFull { .. } => Status::resource_exhausted(e.to_string()),
        StartError::Runner(_) | StartError::Storage(_) | StartError::Contain(_) => Status::internal(e.to_string()),
    }
}
