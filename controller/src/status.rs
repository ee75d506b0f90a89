//! The exit status of `rjob invoke` (and of `rjob wait`), for programs to branch on.
//!
//! | status | `rjob invoke` | `rjob wait` |
//! |---|---|---|
//! | 0 | every host completed with exit 0 | every job ended Completed |
//! | 1 | some script exited non-zero or was killed (or a host refused the request) | some job did not complete |
//! | 2 | usage | usage |
//! | 3 | - | the `--timeout` passed first |
//! | 4 | some host was unreachable (connect, TLS, connect timeout) and none failed otherwise | it ended on a Suspended or Disconnected job |
//! | 5 | the error budget (`--max-errors`) stopped the fan-out | - |
//! | 130 | Ctrl-C | Ctrl-C |

use crate::outcome::{Cause, ChildOutcome};
use crate::state::State;

pub use crate::{EXIT_FAILED, EXIT_PAUSED, EXIT_TIMEOUT, EXIT_USAGE};

/// `rjob invoke`: some host could not be reached, and none failed otherwise.
pub const EXIT_UNREACHABLE: u8 = 4;
/// `rjob invoke`: the error budget stopped the fan-out.
pub const EXIT_BUDGET: u8 = 5;
/// After Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;

/// `rjob invoke --help`'s exit statuses (an `after_help`).
pub const INVOKE_HELP: &str = "\
Exit status:
  0    every host completed with exit 0
  1    some script exited non-zero or was killed, or a host refused the request
  2    usage error
  4    some host was unreachable (connect, TLS, connect timeout) and none failed otherwise
  5    the error budget (--max-errors) stopped the fan-out
  130  interrupted (Ctrl-C)
With --as-job: 0 once the daemon took the job, 2 for usage, 1 for any other error.";

/// `rjob wait --help`'s exit statuses (an `after_help`).
pub const WAIT_HELP: &str = "\
Exit status:
  0    every job ended Completed
  1    some job ended Failed or Stopped
  2    usage error
  3    the --timeout passed first
  4    it ended on a Suspended or Disconnected job (without --force)
  130  interrupted (Ctrl-C)";

/// The status of a fan-out whose children ended with `outcomes` (`None`: no result).
/// `files_failed`: an output file could not be written.
pub fn of_fanout(outcomes: &[Option<ChildOutcome>], files_failed: bool) -> u8 {
    let ended: Vec<&ChildOutcome> = outcomes.iter().flatten().collect();
    if ended.iter().any(|o| crate::budget::skipped(o)) {
        return EXIT_BUDGET;
    }
    let failed = files_failed
        || ended.len() < outcomes.len()
        || ended
            .iter()
            .any(|o| o.state != State::Completed && o.cause != Cause::Unreachable);
    if failed {
        EXIT_FAILED
    } else if ended.iter().any(|o| o.cause == Cause::Unreachable) {
        EXIT_UNREACHABLE
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn end(state: State, cause: Cause) -> Option<ChildOutcome> {
        Some(ChildOutcome::new(state, cause, "", Instant::now()))
    }

    #[test]
    fn each_status_of_a_fanout() {
        let ok = end(State::Completed, Cause::Exited);
        let failed = end(State::Failed, Cause::Exited);
        let unreachable = end(State::Failed, Cause::Unreachable);
        let skipped = end(State::Stopped, Cause::Skipped);
        assert_eq!(of_fanout(&[ok.clone(), ok.clone()], false), 0);
        assert_eq!(of_fanout(std::slice::from_ref(&ok), true), EXIT_FAILED);
        assert_eq!(
            of_fanout(&[ok.clone(), unreachable.clone()], false),
            EXIT_UNREACHABLE
        );
        assert_eq!(
            of_fanout(&[failed.clone(), unreachable.clone()], false),
            EXIT_FAILED
        );
        assert_eq!(of_fanout(&[failed, skipped, unreachable], false), EXIT_BUDGET);
        assert_eq!(of_fanout(&[ok, None], false), EXIT_FAILED);
    }
}
