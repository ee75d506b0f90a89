//! The job store's health: whether the daemon can write it right now. A write that fails
//! (a full disk, an I/O error) is retried with backoff until it succeeds, so nothing is
//! dropped: the agents keep a run's output until the daemon has committed it. While any write
//! waits, `rjob jobs` shows the reason on the jobs still going, and every CLI command prints
//! one warning line (the daemon sends it on every response, see [`WARNING_HEADER`]).

use std::sync::Mutex;
use std::time::Duration;

use crate::store::StoreError;

/// Response header carrying the store's trouble, on every answer of the daemon while it lasts.
pub const WARNING_HEADER: &str = "rjob-store-warning";
/// Response header carrying what the daemon found lost in the store when it started.
pub const LOST_HEADER: &str = "rjob-store-lost";

/// Delay before retry `attempt` (0, 1, ...) of a failed store write: 100ms doubling to 2s,
/// so a write goes through within 2s of space coming back.
pub fn retry_delay(attempt: u32) -> Duration {
    const BASE_MS: u64 = 100;
    const CAP_MS: u64 = 2_000;
    Duration::from_millis(BASE_MS.saturating_mul(1u64 << attempt.min(16)).min(CAP_MS))
}

#[derive(Debug, Default)]
struct Trouble {
    /// Writes now waiting for a retry.
    waiting: usize,
    /// The last failure, short ("disk full").
    error: String,
    /// When the first of the waiting writes failed.
    since_ms: i64,
}

/// Whether store writes go through; shared by every writer of the daemon.
#[derive(Debug, Default)]
pub struct Health {
    trouble: Mutex<Trouble>,
    /// What the daemon found lost in the store at its start, in one line.
    lost: Mutex<Option<String>>,
    /// A write of an owner found this daemon's lease lost (until it registers again).
    fenced: std::sync::atomic::AtomicBool,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Trouble> {
        self.trouble.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_lost(&self, notice: String) {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(notice);
    }

    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The reason shown on a job still going while writes wait, e.g.
    /// `job store: disk full; output held on the agents`.
    pub fn reason(&self) -> Option<String> {
        let t = self.lock();
        (t.waiting > 0).then(|| format!("job store: {}; output held on the agents", t.error))
    }

    /// The one-line warning every CLI command prints while writes wait.
    pub fn warning(&self) -> Option<String> {
        let t = self.lock();
        (t.waiting > 0).then(|| {
            format!(
                "the daemon cannot write its job store since {} ({}): jobs wait, their output is held on the agents, and they go on once it can",
                crate::timestamp::time_text(t.since_ms),
                t.error
            )
        })
    }

    /// Whether a write found this daemon's lease lost: its children are dropped, and it
    /// writes and acknowledges nothing more of them.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Registered anew: a new lease, which no write has found lost.
    pub fn clear_fenced(&self) {
        self.fenced.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn failing(&self, first: bool, error: &StoreError) {
        let mut t = self.lock();
        if first {
            if t.waiting == 0 {
                t.since_ms = crate::clock::now_ms();
            }
            t.waiting += 1;
        }
        t.error = error.short();
    }

    fn recovered(&self) {
        let mut t = self.lock();
        t.waiting = t.waiting.saturating_sub(1);
    }

    /// Runs the store write `op` (a closure giving the write's future) until it succeeds,
    /// waiting between attempts.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut waiting = Waiting::new(self, what);
        loop {
            match op().await {
                Ok(v) => return waiting.done(v),
                Err(e) => tokio::time::sleep(waiting.failed(&e)).await,
            }
        }
    }
}

impl Health {
    /// [`Health::retry`] for a write of a child's owner: `None` once it is fenced (this
    /// daemon's lease is lost), never retried then, and the daemon marked fenced.
    pub async fn retry_owned<T, F, Fut>(&self, what: &str, mut op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut waiting = Waiting::new(self, what);
        loop {
            match op().await {
                Ok(v) => return Some(waiting.done(v)),
                Err(StoreError::Fenced) => {
                    if !self.fenced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        tracing::warn!(what, "this daemon's lease on the job store is lost: it writes nothing more of its children");
                    }
                    return None;
                }
                Err(e) => tokio::time::sleep(waiting.failed(&e)).await,
            }
        }
    }
}

/// One write's retries; counted among the waiting writes from its first failure until it
/// goes through, or until it is given up (dropped), whichever comes first.
struct Waiting<'a> {
    health: &'a Health,
    what: &'a str,
    attempt: u32,
}

impl<'a> Waiting<'a> {
    fn new(health: &'a Health, what: &'a str) -> Self {
        Waiting {
            health,
            what,
            attempt: 0,
        }
    }

    /// The delay before the next attempt.
    fn failed(&mut self, e: &StoreError) -> Duration {
        self.health.failing(self.attempt == 0, e);
        // One line when it starts, then one every ~minute: a full disk must not flood the log.
        if self.attempt.is_multiple_of(30) {
            tracing::error!(what = self.what, error = %e, attempt = self.attempt, "cannot write the job store; retrying");
        }
        let delay = retry_delay(self.attempt);
        self.attempt += 1;
        delay
    }

    fn done<T>(&mut self, v: T) -> T {
        if self.attempt > 0 {
            tracing::info!(
                what = self.what,
                attempts = self.attempt + 1,
                "the job store took the write"
            );
        }
        v
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.attempt > 0 {
            self.health.recovered();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Fault;

    #[test]
    fn retry_delay_doubles_then_stays_capped() {
        let ms: Vec<u128> = (0..7).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn a_write_is_retried_until_it_goes_through_and_a_dropped_one_is_not_left_waiting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let health = Health::default();
        let full = || StoreError::Backend {
            fault: Fault::DiskFull,
            detail: "database or disk is full".into(),
        };
        let mut tries = 0;
        let got = runtime.block_on(health.retry("test", || {
            tries += 1;
            let got = if tries < 3 { Err(full()) } else { Ok(tries) };
            std::future::ready(got)
        }));
        assert_eq!(got, 3);
        assert_eq!(health.reason(), None);
        let given_up = runtime.block_on(async {
            let retry = health.retry("test", || std::future::ready(Err::<(), _>(full())));
            tokio::time::timeout(Duration::from_millis(150), retry).await
        });
        assert!(given_up.is_err());
        assert_eq!(health.reason(), None, "a dropped retry is no longer waiting");
    }

    #[test]
    fn a_waiting_write_is_reported_until_it_goes_through() {
        let health = Health::default();
        assert_eq!(health.reason(), None);
        let full = StoreError::Backend {
            fault: Fault::DiskFull,
            detail: "database or disk is full".into(),
        };
        health.failing(true, &full);
        health.failing(true, &full);
        assert_eq!(
            health.reason().as_deref(),
            Some("job store: disk full; output held on the agents")
        );
        assert!(health.warning().is_some_and(|w| w.contains("disk full")));
        health.recovered();
        assert!(health.reason().is_some(), "one write still waits");
        health.recovered();
        assert_eq!(health.warning(), None);
    }
}
