//! How a child job ended: its state, exit code or signal, the reason in words, and the
//! typed [`Cause`] that programs branch on (the JSON `cause` field, the store's `cause`).

use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;

use crate::state::State;

/// Why a child ended: the agent's causes (from its `RunResult`), and the controller's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The process exited (with `exit_code`; 0 is success).
    Exited,
    /// A signal ended the process.
    Signalled,
    /// The run outlived its timeout and was killed.
    TimedOut,
    /// The run wrote more than the agent allows and was killed.
    OutputLimit,
    /// Stopped on request while it ran.
    Stopped,
    /// The agent lost the run (it restarted or shut down meanwhile, or could not store output).
    RunLost,
    /// The agent could not be reached: connect failed, TLS refused, connect timeout.
    Unreachable,
    /// The agent refused the request (policy, bad password, invalid request, unknown run).
    Refused,
    /// The agent could not start the run (its process could not be spawned, its spool or
    /// cgroup could not be set up, its spool is full).
    StartFailed,
    /// The connection to the agent broke and did not come back within the reconnect window.
    AgentLost,
    /// The job was stopped before this child's run started.
    StoppedBeforeStart,
    /// The controller could not store the run's output (the agent keeps it).
    StoreFailed,
    /// Not run at all (the job's error budget was spent).
    Skipped,
    /// Not known (an agent older than causes, or a record older than them).
    Unknown,
}

impl Cause {
    /// Every cause, in a stable order.
    pub const ALL: [Cause; 14] = [
        Cause::Exited,
        Cause::Signalled,
        Cause::TimedOut,
        Cause::OutputLimit,
        Cause::Stopped,
        Cause::RunLost,
        Cause::Unreachable,
        Cause::Refused,
        Cause::StartFailed,
        Cause::AgentLost,
        Cause::StoppedBeforeStart,
        Cause::StoreFailed,
        Cause::Skipped,
        Cause::Unknown,
    ];

    /// The stable name, as JSON and the store carry it.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Exited => "exited",
            Cause::Signalled => "signalled",
            Cause::TimedOut => "timed_out",
            Cause::OutputLimit => "output_limit",
            Cause::Stopped => "stopped",
            Cause::RunLost => "run_lost",
            Cause::Unreachable => "unreachable",
            Cause::Refused => "refused",
            Cause::StartFailed => "start_failed",
            Cause::AgentLost => "agent_lost",
            Cause::StoppedBeforeStart => "stopped_before_start",
            Cause::StoreFailed => "store_failed",
            Cause::Skipped => "skipped",
            Cause::Unknown => "unknown",
        }
    }

    /// The cause of a stable name; `None` for a name this controller does not know.
    pub fn parse(name: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The agent's cause on the wire (an older agent's results say nothing: Unknown).
    pub fn from_pb(cause: i32) -> Cause {
        match pb::RunCause::try_from(cause) {
            Ok(pb::RunCause::Exited) => Cause::Exited,
            Ok(pb::RunCause::Signalled) => Cause::Signalled,
            Ok(pb::RunCause::TimedOut) => Cause::TimedOut,
            Ok(pb::RunCause::OutputLimit) => Cause::OutputLimit,
            Ok(pb::RunCause::Stopped) => Cause::Stopped,
            Ok(pb::RunCause::Lost) => Cause::RunLost,
            Ok(pb::RunCause::Unspecified) | Err(_) => Cause::Unknown,
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// How a child job ended.
#[derive(Debug, Clone)]
pub struct ChildOutcome {
    /// Completed, Failed or Stopped.
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it did not complete, in one line.
    pub reason: Option<String>,
    /// Why it ended, for programs.
    pub cause: Cause,
    pub duration: Duration,
}

impl ChildOutcome {
    /// An end the controller decided (the run did not start, or could not be followed).
    pub fn new(state: State, cause: Cause, reason: impl Into<String>, started: Instant) -> ChildOutcome {
        ChildOutcome {
            state,
            exit_code: None,
            signal: None,
            reason: Some(reason.into()),
            cause,
            duration: started.elapsed(),
        }
    }

    /// The end the agent reported.
    pub fn from_result(r: &pb::RunResult, started: Instant) -> ChildOutcome {
        let state = match pb::RunState::try_from(r.state) {
            Ok(pb::RunState::Completed) => State::Completed,
            Ok(pb::RunState::Stopped) => State::Stopped,
            _ => State::Failed,
        };
        ChildOutcome {
            state,
            exit_code: r.exit_code,
            signal: r.signal,
            reason: (!r.reason.is_empty()).then(|| r.reason.clone()),
            cause: Cause::from_pb(r.cause),
            duration: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_parse_back() {
        for cause in Cause::ALL {
            assert_eq!(Cause::parse(cause.name()), Some(cause), "{cause}");
        }
        let names: std::collections::HashSet<_> = Cause::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), Cause::ALL.len(), "every name is its own");
        assert_eq!(Cause::TimedOut.name(), "timed_out");
        assert_eq!(Cause::parse("exploded"), None);
    }

    #[test]
    fn the_agents_causes_map_one_to_one_and_old_agents_are_unknown() {
        assert_eq!(
            Cause::from_pb(pb::RunCause::OutputLimit as i32),
            Cause::OutputLimit
        );
        assert_eq!(Cause::from_pb(pb::RunCause::Lost as i32), Cause::RunLost);
        assert_eq!(Cause::from_pb(pb::RunCause::Unspecified as i32), Cause::Unknown);
        assert_eq!(Cause::from_pb(999), Cause::Unknown);
        let result = pb::RunResult {
            state: pb::RunState::Failed as i32,
            reason: "timed out after 1s".into(),
            cause: pb::RunCause::TimedOut as i32,
            ..Default::default()
        };
        let outcome = ChildOutcome::from_result(&result, Instant::now());
        assert_eq!((outcome.state, outcome.cause), (State::Failed, Cause::TimedOut));
    }
}
