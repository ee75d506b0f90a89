//! A child job's state with the data that goes with it: a run on its agent once started,
//! how it ended once finished. The store keeps the state's name and the columns beside it;
//! [`ChildState::from_stored`] is the one place that reads them back.

use super::State;

/// A child's run on its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The agent's run id; `None` only while the start's answer is not recorded (the start may
    /// have reached the agent before a restart: the run is looked up by its label).
    pub id: Option<String>,
    /// When the start request went out (ms since the epoch; 0 if the store lost it).
    pub started_at_ms: i64,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it did not complete, in one line.
    pub reason: Option<String>,
    /// The outcome's cause, by name (timed out, output limit, agent lost, ...).
    pub cause: Option<String>,
    /// The run it had; `None` when it never started.
    pub run: Option<Run>,
    pub ended_at_ms: i64,
}

/// A child job's state, with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildState {
    /// Queued for a throttle slot, or waiting at a busy agent (why).
    NotStarted {
        waiting: Option<String>,
    },
    Running(Run),
    /// A suspend is under way.
    Suspending(Run),
    Suspended(Run),
    /// A stop is under way.
    Stopping(Run),
    /// Its agent is out of reach (why); it is attached again once the agent answers.
    Disconnected {
        run: Run,
        reason: Option<String>,
    },
    Completed(Ended),
    Failed(Ended),
    Stopped(Ended),
}

/// What the store keeps of a child's state: its name, and the columns beside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored<'a> {
    pub state: State,
    pub run_id: Option<&'a str>,
    pub started_at_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<&'a str>,
    pub cause: Option<&'a str>,
    pub ended_at_ms: Option<i64>,
}

impl ChildState {
    /// The state, from what the store keeps.
    pub fn from_stored(s: Stored<'_>) -> ChildState {
        let reason = s.reason.map(str::to_string);
        let started = s.run_id.is_some() || s.started_at_ms.is_some();
        let run = Run {
            id: s.run_id.map(str::to_string),
            started_at_ms: s.started_at_ms.unwrap_or(0),
        };
        let ended = || Ended {
            exit_code: s.exit_code,
            signal: s.signal,
            reason: reason.clone(),
            cause: s.cause.map(str::to_string),
            run: started.then(|| run.clone()),
            ended_at_ms: s.ended_at_ms.unwrap_or(0),
        };
        match s.state {
            State::NotStarted => ChildState::NotStarted {
                waiting: reason.clone(),
            },
            State::Running => ChildState::Running(run),
            State::Suspending => ChildState::Suspending(run),
            State::Suspended => ChildState::Suspended(run),
            State::Stopping => ChildState::Stopping(run),
            State::Disconnected => ChildState::Disconnected {
                run,
                reason: reason.clone(),
            },
            State::Completed => ChildState::Completed(ended()),
            State::Failed => ChildState::Failed(ended()),
            State::Stopped => ChildState::Stopped(ended()),
        }
    }

    /// The state's name.
    pub fn state(&self) -> State {
        match self {
            ChildState::NotStarted { .. } => State::NotStarted,
            ChildState::Running(_) => State::Running,
            ChildState::Suspending(_) => State::Suspending,
            ChildState::Suspended(_) => State::Suspended,
            ChildState::Stopping(_) => State::Stopping,
            ChildState::Disconnected { .. } => State::Disconnected,
            ChildState::Completed(_) => State::Completed,
            ChildState::Failed(_) => State::Failed,
            ChildState::Stopped(_) => State::Stopped,
        }
    }

    /// The child's run, once it started.
    pub fn run(&self) -> Option<&Run> {
        match self {
            ChildState::NotStarted { .. } => None,
            ChildState::Running(run)
            | ChildState::Suspending(run)
            | ChildState::Suspended(run)
            | ChildState::Stopping(run)
            | ChildState::Disconnected { run, .. } => Some(run),
            ChildState::Completed(e) | ChildState::Failed(e) | ChildState::Stopped(e) => e.run.as_ref(),
        }
    }

    /// How the child ended, once it has.
    pub fn ended(&self) -> Option<&Ended> {
        match self {
            ChildState::Completed(e) | ChildState::Failed(e) | ChildState::Stopped(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.state().is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(state: State) -> Stored<'static> {
        Stored {
            state,
            ..Stored::default()
        }
    }

    #[test]
    fn every_stored_state_keeps_its_name() {
        for state in State::ALL {
            let child = ChildState::from_stored(stored(state));
            assert_eq!(child.state(), state);
            assert_eq!(child.is_finished(), state.is_finished());
            assert_eq!(child.ended().is_some(), state.is_finished(), "{state}");
        }
    }

    #[test]
    fn a_running_child_has_its_run() {
        let child = ChildState::from_stored(Stored {
            run_id: Some("r-1"),
            started_at_ms: Some(1000),
            ..stored(State::Running)
        });
        let run = Run {
            id: Some("r-1".into()),
            started_at_ms: 1000,
        };
        assert_eq!(child, ChildState::Running(run.clone()));
        assert_eq!(child.run(), Some(&run));
    }

    #[test]
    fn a_finished_child_has_its_outcome_and_the_run_it_had() {
        let failed = ChildState::from_stored(Stored {
            run_id: Some("r-2"),
            started_at_ms: Some(5),
            exit_code: Some(3),
            reason: Some("exit status 3"),
            cause: Some("exited"),
            ended_at_ms: Some(9),
            ..stored(State::Failed)
        });
        let ended = failed.ended().expect("ended");
        assert_eq!(ended.exit_code, Some(3));
        assert_eq!(ended.signal, None);
        assert_eq!(ended.reason.as_deref(), Some("exit status 3"));
        assert_eq!(ended.cause.as_deref(), Some("exited"));
        assert_eq!(ended.ended_at_ms, 9);
        assert_eq!(failed.run().and_then(|r| r.id.as_deref()), Some("r-2"));

        let never = ChildState::from_stored(Stored {
            reason: Some("stopped before it started"),
            ..stored(State::Stopped)
        });
        assert_eq!(never.run(), None, "it never started");
        let killed = ChildState::from_stored(Stored {
            signal: Some(9),
            ..stored(State::Failed)
        });
        assert_eq!(killed.ended().and_then(|e| e.signal), Some(9));
    }

    #[test]
    fn a_waiting_child_says_why() {
        let child = ChildState::from_stored(Stored {
            reason: Some("agent busy; retrying"),
            ..stored(State::NotStarted)
        });
        assert_eq!(
            child,
            ChildState::NotStarted {
                waiting: Some("agent busy; retrying".into())
            }
        );
        assert_eq!(child.run(), None);
    }
}
