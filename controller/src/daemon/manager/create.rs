//! Creating a job: the request checked, the job stored, its children started.

use std::sync::Arc;

use rjob_proto::v1 as pb;

use super::{now_ms, JobError, Manager};
use crate::daemon::info::encode_request;
use crate::store::NewJob;

impl Manager {
    pub async fn create(self: &Arc<Self>, mut req: pb::CreateJobRequest) -> Result<pb::JobInfo, JobError> {
        crate::checks::create_job(&req).map_err(JobError::Invalid)?;
        let mut run = req
            .run
            .ok_or_else(|| JobError::Invalid("the job has nothing to run".into()))?;
        // The password stays in memory, never in the store.
        let password = zeroize::Zeroizing::new(std::mem::take(&mut run.password));
        // Over a session: its hosts, its connections.
        let session = match req.session.as_str() {
            "" => None,
            name => {
                if !req.hosts.is_empty() {
                    return Err(JobError::Invalid(
                        "a job over a session runs on the session's hosts: name no hosts".into(),
                    ));
                }
                Some(
                    self.pool()
                        .get(name)
                        .map_err(|e| JobError::Invalid(e.to_string()))?,
                )
            }
        };
        if let Some(session) = &session {
            req.hosts = session
                .conns
                .hosts()
                .into_iter()
                .map(|link| pb::HostAddr {
                    name: link.host.name,
                    port: u32::from(link.host.port),
                    user: String::new(),
                })
                .collect();
        }
        let local = req.hosts.is_empty();
        if !local {
            if let Err(e) = self.identity.get() {
                return Err(JobError::Invalid(self.identity.missing(&e)));
            }
        }
        if req.throttle_limit == 0 {
            return Err(JobError::Invalid("the throttle limit must be at least 1".into()));
        }
        let hosts: Vec<(String, u16)> = if local {
            vec![("localhost".to_string(), 0)]
        } else {
            req.hosts
                .iter()
                .map(|h| {
                    Ok((
                        h.name.clone(),
                        u16::try_from(h.port)
                            .map_err(|_| JobError::Invalid(format!("bad port {}", h.port)))?,
                    ))
                })
                .collect::<Result<_, JobError>>()?
        };
        // Each child's own user; one password is for one user only.
        let run_as: Vec<Option<String>> = req
            .hosts
            .iter()
            .map(|h| (!h.user.is_empty()).then(|| h.user.clone()))
            .collect();
        if !password.is_empty() {
            let own: Vec<Option<String>> = (0..hosts.len())
                .map(|i| run_as.get(i).cloned().flatten())
                .collect();
            let users = crate::password::users_of(&own, &run.run_as);
            crate::password::one_user(&users).map_err(|e| JobError::Invalid(e.0))?;
        }
        let job = NewJob {
            instance_id: uuid::Uuid::new_v4().to_string(),
            name: req.name.clone(),
            command: req.command.clone(),
            location: if local { "local" } else { "remote" }.to_string(),
            request: encode_request(&run),
            throttle_limit: req.throttle_limit,
            max_errors: req.max_errors,
            connect_timeout_ms: req.connect_timeout_ms.max(1),
            created_at_ms: now_ms(),
            hosts,
            run_as,
        };
        let id = self.store.create_job(&job).await?;
        let job = self
            .store
            .job(id)
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if !password.is_empty() {
            self.passwords().insert(id, password);
        }
        if let Some(session) = session {
            self.job_sessions().insert(id, session.conns);
        }
        // Claimed here first; on a shared store other daemons claim the rest as slots free.
        if let Err(e) = self.claim_job(id).await {
            tracing::warn!(job = id, error = %e, "claiming the new job's children failed; trying again later");
        }
        self.changed(id);
        self.info(&job).await
    }
}
