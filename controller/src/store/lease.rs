//! Several daemons on one store: each registers (its Id is its lease epoch, never handed out
//! twice) and heartbeats on the database's clock; children are claimed with leases, and a
//! daemon whose lease lapsed writes nothing more of them ([`super::StoreError::Fenced`]).
//!
//! The timing: a heartbeat every 2 s, a lease of 10 s. Tests shorten them through the
//! environment (`RJOB_HEARTBEAT_MS`, `RJOB_LEASE_TTL_MS`), which is not a user's setting.

use std::time::Duration;

/// Environment variable: the heartbeat interval, in milliseconds.
pub const HEARTBEAT_ENV: &str = "RJOB_HEARTBEAT_MS";
/// Environment variable: the lease's time to live, in milliseconds.
pub const TTL_ENV: &str = "RJOB_LEASE_TTL_MS";

/// How often a daemon heartbeats (and claims), and how long its lease lasts without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat: Duration,
    pub ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_secs(2),
            ttl: Duration::from_secs(10),
        }
    }
}

impl Timing {
    /// The default, or what the environment says; the TTL stays above two heartbeats.
    pub fn from_env() -> Timing {
        let ms = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis)
        };
        let default = Timing::default();
        Timing::new(
            ms(HEARTBEAT_ENV).unwrap_or(default.heartbeat),
            ms(TTL_ENV).unwrap_or(default.ttl),
        )
    }

    pub fn new(heartbeat: Duration, ttl: Duration) -> Timing {
        Timing {
            heartbeat,
            ttl: ttl.max(heartbeat * 2),
        }
    }
}

/// How many of a job's claimable children one daemon takes in one claim: its share of the
/// throttle among the live daemons (at least one), so that survivors spread a dead daemon's
/// children among themselves.
pub fn share(throttle_limit: u32, live_daemons: u32) -> usize {
    let live = live_daemons.max(1);
    usize::try_from(throttle_limit.max(1).div_ceil(live)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_outlasts_two_heartbeats() {
        let t = Timing::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(t.ttl, Duration::from_secs(4));
        assert_eq!(Timing::default().ttl, Duration::from_secs(10));
    }

    #[test]
    fn the_throttle_is_shared_among_live_daemons() {
        assert_eq!(share(10, 1), 10);
        assert_eq!(share(10, 3), 4);
        assert_eq!(share(1, 3), 1);
        assert_eq!(share(10, 0), 10);
        assert_eq!(share(0, 2), 1);
    }
}
