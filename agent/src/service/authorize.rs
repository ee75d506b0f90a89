//! Who a run runs as, and whether the caller may have one more: the client's run quota, the
//! policy with one user lookup, and the password through PAM.

use zeroize::Zeroizing;

use super::error::AgentError;
use super::users::{Undecided, Users};
use super::validate;
use super::AgentService;
use crate::run::Phase;
use crate::runner::RunUser;

impl AgentService {
    /// Refuses a client that has `max_runs_per_identity` runs going (not yet ended).
    pub(super) fn check_quota(&self, client: &str) -> Result<(), AgentError> {
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
            return Err(AgentError::Quota {
                client: client.to_string(),
                going,
                limit,
            });
        }
        Ok(())
    }

    /// Decides who the run runs as, checking the password when the policy asks for one. The
    /// user is looked up once, and that record both decides root and runs.
    pub(super) async fn authorize(
        &self,
        identities: &[String],
        requested: &str,
        password: Zeroizing<String>,
    ) -> Result<RunUser, AgentError> {
        let shown = identities.first().cloned().unwrap_or_else(|| "unknown".into());
        let requested = (!requested.is_empty()).then_some(requested);
        if self.user.uid != 0 {
            if let Some(other) = requested.filter(|u| *u != self.user.name) {
                return Err(AgentError::OwnUserOnly {
                    agent: self.user.name.clone(),
                    requested: other.to_string(),
                });
            }
        }
        let target = self.policy.target(identities, requested)?;
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
            .map_err(|e| AgentError::LookupTask(e.to_string()))?;
        }
        let (grant, user) = match decided {
            Ok(v) => v,
            Err(Undecided::Refused(refusal)) => return Err(refusal.into()),
            Err(Undecided::Lookup(error)) => {
                tracing::warn!(user = %target, error = %error, "user lookup failed; refusing the run");
                return Err(AgentError::Lookup {
                    error,
                    host: self.hostname.clone(),
                });
            }
            Err(Undecided::Offline) => return Err(AgentError::NotAsked),
        };
        if grant.password_required
            && !self
                .pam
                .check(&shown, &grant.user, user.is_some(), password)
                .await
        {
            return Err(AgentError::Authentication {
                user: grant.user,
                host: self.hostname.clone(),
            });
        }
        // The policy names this user without a password: say plainly that it is missing.
        user.ok_or_else(|| AgentError::NoSuchUser {
            user: grant.user,
            host: self.hostname.clone(),
        })
    }
}
