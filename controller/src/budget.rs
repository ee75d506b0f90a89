//! The error budget (`--max-errors N|N%`, AWS SSM's MaxErrors) and amounts given as a count
//! or a percentage of the hosts (`--max-errors 20%`, `--throttle-limit 10%`, SSM's
//! MaxConcurrency). The budget is one [`Policy`] of the fan-out: once more than N children
//! have failed, no new child starts (children in flight finish), and each one left ends
//! Stopped with cause [`Cause::Skipped`] and the reason [`skipped_reason`].

use std::sync::atomic::{AtomicU32, Ordering};

use crate::fanout::{Policy, Refusal};
use crate::outcome::{Cause, ChildOutcome};
use crate::state::State;

/// A count, or a percentage of the hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// The count over `hosts` hosts: a percentage rounds down (10% of 15 hosts is 1).
    pub fn of(self, hosts: usize) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let n = (hosts as u64).saturating_mul(u64::from(p)) / 100;
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }

    /// Parses `N` or `N%` (N at most `max`, a percentage at most 100).
    pub fn parse(s: &str, max: u32) -> Result<Amount, String> {
        let bad =
            || format!("expected a whole number from 0 to {max}, or a percentage of the hosts such as 10%");
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u32>() {
                Ok(p) if p <= 100 => Ok(Amount::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.parse::<u32>() {
                Ok(n) if n <= max => Ok(Amount::Count(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `--max-errors`: `N` or `N%` of the hosts.
pub fn parse_max_errors(s: &str) -> Result<Amount, String> {
    Amount::parse(s, u32::MAX)
}

/// The reason of a child the budget did not start.
pub fn skipped_reason(allowed: u32) -> String {
    format!("Skipped: error budget of {allowed} reached")
}

/// Whether a child's end spends the budget: it failed (a script that exited non-zero or was
/// killed, an unreachable or refusing host, a lost agent). Stops and skips do not.
pub fn spends(outcome: &ChildOutcome) -> bool {
    outcome.state == State::Failed && outcome.cause != Cause::Skipped
}

/// Whether a child was left unstarted by the budget.
pub fn skipped(outcome: &ChildOutcome) -> bool {
    outcome.cause == Cause::Skipped
}

/// At most `allowed` failures before the fan-out stops starting children.
#[derive(Debug)]
pub struct ErrorBudget {
    allowed: u32,
    failed: AtomicU32,
}

impl ErrorBudget {
    pub fn new(allowed: u32) -> ErrorBudget {
        ErrorBudget {
            allowed,
            failed: AtomicU32::new(0),
        }
    }

    /// A budget that already saw `failed` failures (a job picked up by a restarted daemon).
    pub fn spent(allowed: u32, failed: u32) -> ErrorBudget {
        ErrorBudget {
            allowed,
            failed: AtomicU32::new(failed),
        }
    }
}

impl Policy for ErrorBudget {
    fn admit(&self) -> Result<(), Refusal> {
        if self.failed.load(Ordering::SeqCst) > self.allowed {
            return Err(Refusal {
                state: State::Stopped,
                cause: Cause::Skipped,
                reason: skipped_reason(self.allowed),
            });
        }
        Ok(())
    }

    fn ended(&self, outcome: &ChildOutcome, _attempts: u32) {
        if spends(outcome) {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn amounts_parse_as_counts_or_percentages() {
        assert_eq!(Amount::parse("2", 10), Ok(Amount::Count(2)));
        assert_eq!(Amount::parse("20%", 10), Ok(Amount::Percent(20)));
        assert!(Amount::parse("11", 10).is_err());
        assert!(Amount::parse("101%", 10).is_err());
        assert!(Amount::parse("x%", 10).is_err());
        assert_eq!(Amount::Percent(20).of(10), 2);
        assert_eq!(Amount::Percent(10).of(15), 1);
        assert_eq!(Amount::Count(3).of(1), 3);
    }

    #[test]
    fn the_budget_refuses_once_more_than_n_failed() {
        let budget = ErrorBudget::new(1);
        let failed = ChildOutcome::new(State::Failed, Cause::Exited, "exit 1", Instant::now());
        budget.ended(&failed, 1);
        assert!(budget.admit().is_ok(), "1 failure is within a budget of 1");
        budget.ended(&failed, 1);
        let refusal = budget.admit().expect_err("2 failures spend a budget of 1");
        assert_eq!(refusal.cause, Cause::Skipped);
        assert_eq!(refusal.reason, "Skipped: error budget of 1 reached");
        budget.ended(
            &ChildOutcome::new(refusal.state, refusal.cause, refusal.reason, Instant::now()),
            0,
        );
        assert_eq!(budget.failed.load(Ordering::SeqCst), 2, "a skip is no failure");
    }
}
