//! Who the caller is (from its certificate), password checks through PAM, and the slowing
//! down of repeated failures per caller and target user.

use std::collections::HashMap;
#[cfg(feature = "pam")]
use std::ffi::{CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// The names a client certificate carries: its CN first, then its DNS SANs.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                if !names.iter().any(|n| n == dns) {
                    names.push((*dns).to_string());
                }
            }
        }
    }
    names
}

/// Hands PAM the login and the password, and nothing else.
#[cfg(feature = "pam")]
struct Conversation {
    login: String,
    password: Zeroizing<String>,
}

#[cfg(feature = "pam")]
impl pam::Converse for Conversation {
    fn prompt_echo(&mut self, _msg: &CStr) -> Result<CString, ()> {
        CString::new(self.login.clone()).map_err(|_| ())
    }
    fn prompt_blind(&mut self, _msg: &CStr) -> Result<CString, ()> {
        CString::new(self.password.as_str()).map_err(|_| ())
    }
    fn info(&mut self, _msg: &CStr) {}
    fn error(&mut self, _msg: &CStr) {}
    fn username(&self) -> &str {
        &self.login
    }
}

/// Checks `user`'s password with PAM (authentication and account checks) under `service`.
/// Blocking: PAM modules may sleep on failure.
#[cfg(feature = "pam")]
pub fn pam_check(service: &str, user: &str, password: Zeroizing<String>) -> bool {
    let conversation = Conversation {
        login: user.to_string(),
        password,
    };
    match pam::Authenticator::with_handler(service, conversation) {
        Ok(mut auth) => auth.authenticate().is_ok(),
        Err(e) => {
            tracing::error!(service, error = ?e, "cannot start PAM");
            false
        }
    }
}

/// Built without the `pam` feature: no password is ever accepted.
#[cfg(not(feature = "pam"))]
pub fn pam_check(service: &str, user: &str, password: Zeroizing<String>) -> bool {
    drop(password);
    tracing::error!(
        service,
        user,
        "this agent was built without PAM (--no-default-features): passwords cannot be checked"
    );
    false
}

/// Slows down password guessing: after [`FREE_FAILURES`] failures in a row by one client for
/// one target user, each further failure is answered only after a delay that doubles, up to
/// [`MAX_DELAY`]. Only a success by that client for that same user, or [`FORGET_AFTER`]
/// without failures, resets the count: a valid login to the client's own account does not
/// wipe its failures against another.
pub struct FailureLimiter {
    failures: Mutex<HashMap<(String, String), (u32, Instant)>>,
}

pub const FREE_FAILURES: u32 = 2;
pub const MAX_DELAY: Duration = Duration::from_secs(8);
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The delay before answering the `n`th failure in a row (1-based).
pub fn failure_delay(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let steps = (n - FREE_FAILURES - 1).min(16);
    Duration::from_millis(500u64 << steps).min(MAX_DELAY)
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl FailureLimiter {
    /// Records a failure of `identity` for `user`; returns how many failures in a row that
    /// makes, and how long to wait before answering.
    pub fn failed(&self, identity: &str, user: &str) -> (u32, Duration) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        let entry = map
            .entry((identity.to_string(), user.to_string()))
            .or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        (entry.0, failure_delay(entry.0))
    }

    /// A success of `identity` for `user`: its count for that user starts again.
    pub fn succeeded(&self, identity: &str, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(identity.to_string(), user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_after_the_free_failures_double_and_are_capped() {
        let ms: Vec<u128> = (1..=9).map(|n| failure_delay(n).as_millis()).collect();
        assert_eq!(ms, [0, 0, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(failure_delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn only_a_success_for_the_same_user_resets_the_count() {
        let limiter = FailureLimiter::default();
        for _ in 0..3 {
            limiter.failed("a", "victim");
        }
        assert_eq!(limiter.failed("a", "victim"), (4, Duration::from_millis(1000)));
        assert_eq!(limiter.failed("b", "victim"), (1, Duration::ZERO));
        limiter.succeeded("a", "mine");
        assert_eq!(limiter.failed("a", "victim").0, 5);
        limiter.succeeded("a", "victim");
        assert_eq!(limiter.failed("a", "victim"), (1, Duration::ZERO));
    }
}
