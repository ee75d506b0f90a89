//! Job states, PowerShell's names, and how a parent job's state follows from its children.
//! [`State`] is the name of a state (what the store keeps and the wire carries);
//! [`ChildState`] a child's state with its data; [`Job`] a job's, with the checks of what
//! may be done to it ([`Job::can_stop`] and the others, a [`WrongState`] when not).

mod child;
mod job;

pub use child::{ChildState, Ended, Run, Stored};
pub use job::{Action, Job, WrongState};

use rjob_proto::v1 as pb;

/// The state of a child job or of a parent job.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema,
)]
pub enum State {
    #[default]
    NotStarted,
    Running,
    Completed,
    Failed,
    Stopped,
    Suspended,
    Disconnected,
    /// A stop is under way.
    Stopping,
    /// A suspend is under way.
    Suspending,
}

impl State {
    pub const ALL: [State; 9] = [
        State::NotStarted,
        State::Running,
        State::Completed,
        State::Failed,
        State::Stopped,
        State::Suspended,
        State::Disconnected,
        State::Stopping,
        State::Suspending,
    ];

    /// The final states: the one list the store's queries are built from.
    pub const FINISHED: [State; 3] = [State::Completed, State::Failed, State::Stopped];

    /// Completed, Failed and Stopped are final.
    pub fn is_finished(self) -> bool {
        State::FINISHED.contains(&self)
    }

    /// Where `rjob wait` (Wait-Job) stops waiting: a final state, or, without `force`,
    /// Suspended or Disconnected.
    pub fn ends_wait(self, force: bool) -> bool {
        self.is_finished() || (!force && self.is_paused())
    }

    /// Suspended or Disconnected: not final, but the job goes on only once resumed or its
    /// hosts are back.
    pub fn is_paused(self) -> bool {
        matches!(self, State::Suspended | State::Disconnected)
    }

    /// Suspended, or on the way there: what a resume applies to.
    pub fn is_suspended(self) -> bool {
        matches!(self, State::Suspended | State::Suspending)
    }

    pub fn to_pb(self) -> pb::JobState {
        match self {
            State::NotStarted => pb::JobState::NotStarted,
            State::Running => pb::JobState::Running,
            State::Completed => pb::JobState::Completed,
            State::Failed => pb::JobState::Failed,
            State::Stopped => pb::JobState::Stopped,
            State::Suspended => pb::JobState::Suspended,
            State::Disconnected => pb::JobState::Disconnected,
            State::Stopping => pb::JobState::Stopping,
            State::Suspending => pb::JobState::Suspending,
        }
    }

    pub fn from_pb(raw: i32) -> State {
        match pb::JobState::try_from(raw) {
            Ok(pb::JobState::NotStarted) | Ok(pb::JobState::Unspecified) | Err(_) => State::NotStarted,
            Ok(pb::JobState::Running) => State::Running,
            Ok(pb::JobState::Completed) => State::Completed,
            Ok(pb::JobState::Failed) => State::Failed,
            Ok(pb::JobState::Stopped) => State::Stopped,
            Ok(pb::JobState::Suspended) => State::Suspended,
            Ok(pb::JobState::Disconnected) => State::Disconnected,
            Ok(pb::JobState::Stopping) => State::Stopping,
            Ok(pb::JobState::Suspending) => State::Suspending,
        }
    }

    pub fn parse(name: &str) -> Option<State> {
        State::ALL
            .into_iter()
            .find(|s| s.to_string().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A parent job's state, from its children's (and whether the job is suspended).
///
/// The rules, in order:
/// 1. No children, or every child NotStarted: Suspended if the job is suspended, else NotStarted.
/// 2. Some child not finished:
///    Stopping if any child is Stopping; else Suspending if any is Suspending;
///    else Running if any is Running; else Disconnected if any is Disconnected;
///    else Suspended if any is Suspended or the job is suspended (children wait in the queue);
///    else Running (children wait in the queue for the throttle limit).
/// 3. Every child finished: Failed if any failed, else Stopped if any stopped, else Completed.
pub fn parent_state(children: &[State], job_suspended: bool) -> State {
    let any = |s: State| children.contains(&s);
    if children.iter().all(|c| *c == State::NotStarted) {
        return if job_suspended {
            State::Suspended
        } else {
            State::NotStarted
        };
    }
    if children.iter().any(|c| !c.is_finished()) {
        return if any(State::Stopping) {
            State::Stopping
        } else if any(State::Suspending) {
            State::Suspending
        } else if any(State::Running) {
            State::Running
        } else if any(State::Disconnected) {
            State::Disconnected
        } else if any(State::Suspended) || job_suspended {
            State::Suspended
        } else {
            State::Running
        };
    }
    if any(State::Failed) {
        State::Failed
    } else if any(State::Stopped) {
        State::Stopped
    } else {
        State::Completed
    }
}

#[cfg(test)]
mod tests {
    use super::State::*;
    use super::*;

    #[test]
    fn finished_children_decide_by_failed_then_stopped_then_completed() {
        assert_eq!(parent_state(&[Completed, Completed], false), Completed);
        assert_eq!(parent_state(&[Completed, Stopped], false), Stopped);
        assert_eq!(parent_state(&[Completed, Failed], false), Failed);
        assert_eq!(parent_state(&[Stopped, Failed, Completed], false), Failed);
        assert_eq!(parent_state(&[Stopped], true), Stopped);
    }

    #[test]
    fn any_running_child_makes_the_parent_running() {
        assert_eq!(parent_state(&[Running, Completed], false), Running);
        assert_eq!(parent_state(&[Running, Failed], false), Running);
        assert_eq!(parent_state(&[Running, Disconnected], false), Running);
        assert_eq!(parent_state(&[Running, Suspended], false), Running);
        assert_eq!(parent_state(&[NotStarted, Completed], false), Running);
        assert_eq!(parent_state(&[NotStarted, Running], false), Running);
    }

    #[test]
    fn transitions_under_way_show_first() {
        assert_eq!(parent_state(&[Stopping, Running, Suspending], false), Stopping);
        assert_eq!(parent_state(&[Suspending, Running], false), Suspending);
        assert_eq!(parent_state(&[Stopped, Stopping], false), Stopping);
    }

    #[test]
    fn disconnected_and_suspended_children() {
        assert_eq!(parent_state(&[Disconnected, Completed], false), Disconnected);
        assert_eq!(parent_state(&[Disconnected, Suspended], false), Disconnected);
        assert_eq!(parent_state(&[Suspended, Completed], false), Suspended);
        assert_eq!(parent_state(&[Suspended, NotStarted], true), Suspended);
        assert_eq!(parent_state(&[NotStarted, Completed], true), Suspended);
    }

    #[test]
    fn nothing_started_yet() {
        assert_eq!(parent_state(&[], false), NotStarted);
        assert_eq!(parent_state(&[NotStarted, NotStarted], false), NotStarted);
        assert_eq!(parent_state(&[NotStarted], true), Suspended);
    }

    #[test]
    fn every_pair_of_child_states_gives_a_state_consistent_with_the_rules() {
        for a in State::ALL {
            for b in State::ALL {
                for suspended in [false, true] {
                    let p = parent_state(&[a, b], suspended);
                    let all_done = a.is_finished() && b.is_finished();
                    assert_eq!(p.is_finished(), all_done, "{a} {b} -> {p}");
                    if all_done {
                        let expect = if a == Failed || b == Failed {
                            Failed
                        } else if a == Stopped || b == Stopped {
                            Stopped
                        } else {
                            Completed
                        };
                        assert_eq!(p, expect);
                    }
                    if (a == Running || b == Running)
                        && ![a, b].iter().any(|s| matches!(s, Stopping | Suspending))
                    {
                        assert_eq!(p, Running, "{a} {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(&s.to_string()), Some(s));
            assert_eq!(State::from_pb(s.to_pb() as i32), s);
        }
        assert_eq!(State::parse("completed"), Some(Completed));
        assert_eq!(State::parse("Done"), None);
    }
}
