//! One budget for the output in flight at this process, shared by the hosts that stream to
//! it, instead of a fixed allowance per host: memory stays bounded whatever the fleet size.
//!
//! The budget is shared through settings, never through a wait: a connection to an agent
//! gets an HTTP/2 window of [`BUDGET`] divided by the hosts expected to stream at once (the
//! fan-outs' throttles, or the live connections when there are more), and a run asks its
//! agent for chunks of half that window ([`chunk_bytes`]). One host streams with a wide
//! window and full-size chunks; 1,024 hosts each keep a few KiB in flight. Nothing here
//! makes a stream wait for budget another stream holds, so no stream can wait on itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// What all the hosts' windows add up to (before the clamps below), unless
/// `RJOB_OUTPUT_BUDGET` says otherwise ([`budget`]).
pub const BUDGET: usize = 16 << 20;
/// The smallest budget `RJOB_OUTPUT_BUDGET` may set.
pub const MIN_BUDGET: usize = 64 << 10;
/// The narrowest window a connection gets: a few frames, so that a stream always moves.
pub const MIN_WINDOW: u32 = 16 << 10;
/// The widest window: enough for one host at full speed.
pub const MAX_WINDOW: u32 = 1 << 20;
/// The chunk sizes asked of agents (which never send more than 64 KiB at once anyway).
pub const MIN_CHUNK: u32 = 8 << 10;
pub const MAX_CHUNK: u32 = 64 << 10;

/// Hosts the running fan-outs expect to stream at once (the sum of their throttles).
static EXPECTED: AtomicUsize = AtomicUsize::new(0);
/// Connections to agents open now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A fan-out's share of [`EXPECTED`], given back when dropped.
#[must_use]
pub struct Expected(usize);

/// A fan-out is about to run up to `streams` hosts at once.
pub fn expect(streams: usize) -> Expected {
    EXPECTED.fetch_add(streams, Ordering::Relaxed);
    Expected(streams)
}

impl Drop for Expected {
    fn drop(&mut self) {
        EXPECTED.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// An open connection to an agent, counted in [`OPEN`] until dropped.
pub struct Open(());

/// Counts a connection to an agent as open.
pub fn open() -> Open {
    OPEN.fetch_add(1, Ordering::Relaxed);
    Open(())
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The budget: [`BUDGET`], or `RJOB_OUTPUT_BUDGET` (bytes, at least [`MIN_BUDGET`]) to try
/// another one or, in tests, to put many hosts through a small one.
pub fn budget() -> usize {
    static SET: OnceLock<usize> = OnceLock::new();
    *SET.get_or_init(|| {
        let Ok(set) = std::env::var("RJOB_OUTPUT_BUDGET") else {
            return BUDGET;
        };
        match set.trim().parse::<usize>() {
            Ok(b) => b.max(MIN_BUDGET),
            Err(_) => {
                tracing::warn!(
                    "RJOB_OUTPUT_BUDGET={set:?} is not a number of bytes (e.g. 16777216); using {BUDGET}"
                );
                BUDGET
            }
        }
    })
}

/// How many hosts share the budget now.
fn sharing() -> usize {
    EXPECTED
        .load(Ordering::Relaxed)
        .max(OPEN.load(Ordering::Relaxed))
        .max(1)
}

/// The HTTP/2 window (stream and connection) for a new connection to an agent.
pub fn window() -> u32 {
    window_for(budget(), sharing())
}

/// The largest chunk to ask an agent for, for a run starting now.
pub fn chunk_bytes() -> u32 {
    chunk_for(window())
}

/// `budget` over `hosts`, within [`MIN_WINDOW`]..=[`MAX_WINDOW`].
pub fn window_for(budget: usize, hosts: usize) -> u32 {
    let share = budget / hosts.max(1);
    u32::try_from(share)
        .unwrap_or(u32::MAX)
        .clamp(MIN_WINDOW, MAX_WINDOW)
}

/// Half the window (a whole message fits in it with room for the next one's start), within
/// [`MIN_CHUNK`]..=[`MAX_CHUNK`].
pub fn chunk_for(window: u32) -> u32 {
    (window / 2).clamp(MIN_CHUNK, MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_gets_the_widest_window_and_full_chunks() {
        assert_eq!(window_for(BUDGET, 1), MAX_WINDOW);
        assert_eq!(chunk_for(window_for(BUDGET, 1)), MAX_CHUNK);
    }

    #[test]
    fn many_hosts_share_the_budget_down_to_the_floor() {
        assert_eq!(window_for(BUDGET, 256), 64 << 10);
        assert_eq!(chunk_for(window_for(BUDGET, 256)), 32 << 10);
        assert_eq!(window_for(BUDGET, 1024), MIN_WINDOW);
        assert_eq!(chunk_for(window_for(BUDGET, 1024)), MIN_CHUNK);
        assert_eq!(window_for(BUDGET, 100_000), MIN_WINDOW);
        assert_eq!(window_for(BUDGET, 0), MAX_WINDOW);
        assert_eq!(window_for(MIN_BUDGET, 64), MIN_WINDOW);
    }
}
