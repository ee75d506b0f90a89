//! Starting a run: the request's own checks first (sizes, names, environment: no work for a
//! bad request), then the client's run quota, then the policy with one user lookup, then the
//! password through PAM (all in [`super::authorize`]), then the run. An audit record either
//! way.

use std::sync::Arc;

use rjob_proto::v1 as pb;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::AgentError;
use super::validate;
use super::AgentService;
use crate::run::{Run, RunLimits, RunRecord};

impl AgentService {
    /// Checks the request, the client's quota and the policy (and the password, through
    /// PAM), and starts the run, with audit records either way.
    pub(crate) async fn start(
        &self,
        identities: Vec<String>,
        mut req: pb::StartRunRequest,
    ) -> Result<Arc<Run>, AgentError> {
        let client = identities.first().cloned().unwrap_or_default();
        // The password leaves the request at once and is wiped after the check.
        let password = Zeroizing::new(std::mem::take(&mut req.password));
        let script_sha256 = hex::encode(Sha256::digest(req.script.as_bytes()));
        let checked = async {
            let checked = validate::request(&req, &self.config)?;
            self.check_quota(&client)?;
            let user = self.authorize(&identities, &req.run_as, password).await?;
            Ok::<_, AgentError>((checked, user))
        };
        let (checked, user) = match checked.await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(target: "audit", client, run_as = %validate::shown(&req.run_as), script_sha256, refused = %e, "run refused");
                return Err(e);
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
            max_chunk_bytes: crate::run::chunk_size(req.max_chunk_bytes),
        };
        let started = {
            // The quota again, and the start, under one lock: the client's last slot is taken once.
            let _quota = self.quota.lock().unwrap_or_else(|p| p.into_inner());
            self.check_quota(&client)
                .and_then(|()| Ok(self.runs.start(&spec, record, limits)?))
        };
        let run = started.inspect_err(|e| {
            tracing::info!(target: "audit", client, script_sha256, refused = %e, "run refused");
        })?;
        tracing::info!(target: "audit", client, run = run.id(), run_as = %run.record.run_as, script_sha256, pid = run.record.pid, "run started");
        Ok(run)
    }
}
