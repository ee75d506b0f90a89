//! Password checks as the agent serves them: one at a time per client identity (so parallel
//! guesses wait for each other's delays), a few at a time overall, and failures slowed down
//! per (identity, target user).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::auth::{self, FailureLimiter};

/// Password checks in flight overall.
const PAM_SLOTS: usize = 4;

pub struct PamGate {
    service: String,
    failures: FailureLimiter,
    /// One password check at a time per client identity.
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    slots: Semaphore,
}

impl PamGate {
    pub fn new(service: &str) -> PamGate {
        PamGate {
            service: service.to_string(),
            failures: FailureLimiter::default(),
            gates: Mutex::new(HashMap::new()),
            slots: Semaphore::new(PAM_SLOTS),
        }
    }

    fn gate(&self, identity: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        // Forget idle gates so the map does not grow with every identity ever seen.
        gates.retain(|_, g| Arc::strong_count(g) > 1);
        gates
            .entry(identity.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }

    /// Whether PAM accepts `password` for `user`, asked for `identity`. PAM runs even when
    /// `user` does not exist (`exists` false), so that both fail the same way, after the same
    /// delay. A failure is answered after the delay its count in a row calls for.
    pub async fn check(&self, identity: &str, user: &str, exists: bool, password: Zeroizing<String>) -> bool {
        let gate = self.gate(identity);
        let Ok(_mine) = gate.acquire_owned().await else {
            return false;
        };
        let Ok(_any) = self.slots.acquire().await else {
            return false;
        };
        let service = self.service.clone();
        let name = user.to_string();
        let accepted = tokio::task::spawn_blocking(move || auth::pam_check(&service, &name, password))
            .await
            .unwrap_or(false);
        if accepted && exists {
            self.failures.succeeded(identity, user);
            return true;
        }
        // The slot bounds PAM work, not the wait below: a client sleeping out its slow-down
        // must not keep other clients' password checks waiting.
        drop(_any);
        let (failures, delay) = self.failures.failed(identity, user);
        tracing::info!(target: "audit", client = identity, run_as = user, failures, delay_ms = delay.as_millis() as u64, "authentication failed");
        tokio::time::sleep(delay).await;
        false
    }
}
