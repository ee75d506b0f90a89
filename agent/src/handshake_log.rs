//! Handshakes that did not complete, logged as one count per interval.
//!
//! Anyone who can reach the port can make a handshake fail, so one log line per failure would
//! let garbage flood the log (and bury the audit records). Failures are counted instead, and
//! one warning per interval says how many of each kind there were, from how many sources,
//! which source sent the most, and the last error. Each failure is also logged at debug level
//! (`RJOB_LOG=debug`) for whoever wants them all. Audit records (target `audit`) are never
//! counted, held back or dropped here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::handshake::{Refusal, Source};

/// Most distinct sources remembered per interval (the rest are counted as "more").
const MAX_SOURCES: usize = 4096;

/// How a handshake ended without a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The TLS handshake failed (not TLS, wrong certificate, the peer closed).
    Failed,
    /// It did not complete within `handshake_timeout`.
    TimedOut,
    /// Refused at accept: its source held `max_handshakes_per_source`.
    RefusedSource,
    /// Refused at accept: `max_handshakes` were in flight.
    RefusedFull,
    /// Closed to make room for a source that held fewer.
    Evicted,
    /// Refused at accept: the agent was out of file descriptors.
    RefusedNoDescriptors,
}

/// Counts of one interval.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub failed: u64,
    pub timed_out: u64,
    pub refused_source: u64,
    pub refused_full: u64,
    pub evicted: u64,
    pub refused_no_fds: u64,
    /// Other accept errors than running out of descriptors.
    pub accept_errors: u64,
    pub sources: HashMap<Source, u64>,
    /// Failures from sources beyond [`MAX_SOURCES`].
    pub more_sources: u64,
    pub last_error: Option<String>,
}

impl Tally {
    pub fn total(&self) -> u64 {
        self.failed
            + self.timed_out
            + self.refused_source
            + self.refused_full
            + self.evicted
            + self.refused_no_fds
            + self.accept_errors
    }

    /// The source with the most failures, and how many.
    pub fn top_source(&self) -> Option<(Source, u64)> {
        self.sources
            .iter()
            .max_by_key(|(source, n)| (**n, std::cmp::Reverse(**source)))
            .map(|(s, n)| (*s, *n))
    }
}

/// Shared by the accept loop and the handshake tasks.
#[derive(Debug, Default)]
pub struct FailureLog {
    tally: Mutex<Tally>,
}

impl FailureLog {
    pub fn new() -> Arc<FailureLog> {
        Arc::new(FailureLog::default())
    }

    fn with(&self, f: impl FnOnce(&mut Tally)) {
        let mut tally = self
            .tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut tally);
    }

    /// Counts a handshake from `source` that ended as `outcome`.
    pub fn record(&self, source: Source, outcome: Outcome, error: Option<&dyn std::fmt::Display>) {
        tracing::debug!(%source, ?outcome, error = error.map(tracing::field::display), "TLS handshake did not complete");
        self.with(|t| {
            match outcome {
                Outcome::Failed => t.failed += 1,
                Outcome::TimedOut => t.timed_out += 1,
                Outcome::RefusedSource => t.refused_source += 1,
                Outcome::RefusedFull => t.refused_full += 1,
                Outcome::Evicted => t.evicted += 1,
                Outcome::RefusedNoDescriptors => t.refused_no_fds += 1,
            }
            if let Some(n) = t.sources.get_mut(&source) {
                *n += 1;
            } else if t.sources.len() < MAX_SOURCES {
                t.sources.insert(source, 1);
            } else {
                t.more_sources += 1;
            }
            if let Some(e) = error {
                t.last_error = Some(e.to_string());
            }
        });
    }

    /// Counts a refusal decided at accept.
    pub fn refused(&self, source: Source, why: Refusal) {
        let outcome = match why {
            Refusal::SourceFull => Outcome::RefusedSource,
            Refusal::AllFull => Outcome::RefusedFull,
        };
        self.record(source, outcome, None);
    }

    /// Counts an accept that failed (no peer known).
    pub fn accept_error(&self, error: &std::io::Error) {
        tracing::debug!(%error, "cannot accept a connection");
        let out_of_fds = is_out_of_descriptors(error);
        self.with(|t| {
            if !out_of_fds {
                t.accept_errors += 1;
            }
            t.last_error = Some(format!("accept: {error}"));
        });
    }

    /// Counts a connection accepted and closed at once because descriptors ran out.
    pub fn no_descriptors(&self, source: Source) {
        self.record(source, Outcome::RefusedNoDescriptors, None);
    }

    /// The counts so far, reset.
    pub fn take(&self) -> Tally {
        let mut out = Tally::default();
        self.with(|t| std::mem::swap(t, &mut out));
        out
    }

    /// Logs one line per `interval` in which something failed, until dropped with the task.
    pub async fn report_every(self: Arc<Self>, interval: Duration, in_flight: impl Fn() -> usize) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let t = self.take();
            if t.total() > 0 {
                log_tally(&t, interval, in_flight());
            }
        }
    }
}

/// EMFILE or ENFILE: the process or the system has no descriptor left.
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

fn log_tally(t: &Tally, interval: Duration, in_flight: usize) {
    let (top_source, top_count) = match t.top_source() {
        Some((s, n)) => (s.to_string(), n),
        None => (String::new(), 0),
    };
    let sources = t.sources.len() as u64 + u64::from(t.more_sources > 0);
    tracing::warn!(
        interval = %humantime::format_duration(interval),
        total = t.total(),
        failed = t.failed,
        timed_out = t.timed_out,
        refused_per_source_cap = t.refused_source,
        refused_overall_cap = t.refused_full,
        evicted = t.evicted,
        refused_out_of_descriptors = t.refused_no_fds,
        accept_errors = t.accept_errors,
        sources,
        top_source,
        top_source_count = top_count,
        in_flight,
        last_error = t.last_error.as_deref().unwrap_or(""),
        "TLS handshakes that did not complete (one line per interval; RJOB_LOG=debug logs each)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn failures_are_counted_by_kind_and_source_and_reset_when_taken() {
        let log = FailureLog::new();
        let a = Source::V4(Ipv4Addr::new(127, 0, 1, 1));
        let b = Source::V4(Ipv4Addr::new(127, 0, 1, 2));
        for _ in 0..3 {
            log.refused(a, Refusal::SourceFull);
        }
        log.record(b, Outcome::TimedOut, None);
        log.record(b, Outcome::Failed, Some(&"bad record"));
        log.refused(b, Refusal::AllFull);
        log.accept_error(&std::io::Error::from_raw_os_error(libc::EMFILE));
        log.no_descriptors(a);
        let t = log.take();
        assert_eq!(
            (
                t.refused_source,
                t.timed_out,
                t.failed,
                t.refused_full,
                t.refused_no_fds,
                t.accept_errors
            ),
            (3, 1, 1, 1, 1, 0)
        );
        assert_eq!(t.total(), 7);
        assert_eq!(t.top_source(), Some((a, 4)));
        assert_eq!(t.sources.len(), 2);
        assert_eq!(
            t.last_error.as_deref(),
            Some("accept: Too many open files (os error 24)")
        );
        assert_eq!(log.take(), Tally::default());
    }

    #[test]
    fn sources_beyond_the_bound_are_counted_not_kept() {
        let log = FailureLog::new();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            log.record(Source::V4(Ipv4Addr::from(0x7f00_0000 + i)), Outcome::Failed, None);
        }
        let t = log.take();
        assert_eq!(t.sources.len(), MAX_SOURCES);
        assert_eq!(t.more_sources, 10);
        assert_eq!(t.failed, MAX_SOURCES as u64 + 10);
    }
}
