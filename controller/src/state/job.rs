//! A job's state from its children's, and what may be done to it: each action is checked
//! against the state first, and a wrong state is a [`WrongState`] that says which.

use super::{parent_state, ChildState, State};

/// What a user asks of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Suspend,
    Resume,
    Remove,
}

/// The job is in a state where `action` does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct WrongState {
    pub id: i64,
    pub job: String,
    pub state: State,
    pub action: Action,
}

impl WrongState {
    fn message(&self) -> String {
        let (job, state) = (&self.job, self.state);
        match self.action {
            Action::Remove => format!(
                "job {job} (Id {}) is {state}: stop it first, or remove it with --force",
                self.id
            ),
            Action::Suspend => format!("job {job} is {state}: nothing to suspend"),
            Action::Resume => format!("job {job} is {state}: nothing to resume"),
            Action::Stop => format!("job {job} is {state}: nothing to stop"),
        }
    }
}

/// A job as its state machine sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub name: String,
    /// Suspended by the user (queued children wait for the resume).
    pub suspended: bool,
    pub children: Vec<ChildState>,
}

impl Job {
    /// The job's state, from its children's ([`parent_state`]).
    pub fn state(&self) -> State {
        let states: Vec<State> = self.children.iter().map(ChildState::state).collect();
        parent_state(&states, self.suspended)
    }

    fn wrong(&self, action: Action) -> WrongState {
        WrongState {
            id: self.id,
            job: self.name.clone(),
            state: self.state(),
            action,
        }
    }

    /// A stop applies in every state: a finished job stays as it ended (as Stop-Job does).
    pub fn can_stop(&self) -> Result<(), WrongState> {
        Ok(())
    }

    /// A job that has not finished can be suspended.
    pub fn can_suspend(&self) -> Result<(), WrongState> {
        if self.state().is_finished() {
            return Err(self.wrong(Action::Suspend));
        }
        Ok(())
    }

    /// A job suspended by the user, or Suspended or Suspending, can be resumed.
    pub fn can_resume(&self) -> Result<(), WrongState> {
        if !self.suspended && !self.state().is_suspended() {
            return Err(self.wrong(Action::Resume));
        }
        Ok(())
    }

    /// A finished job can be removed; one still going only with `force` (it is stopped first).
    pub fn can_remove(&self, force: bool) -> Result<(), WrongState> {
        if !force && !self.state().is_finished() {
            return Err(self.wrong(Action::Remove));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::child::Stored;

    fn job(state: State, suspended: bool) -> Job {
        let child = ChildState::from_stored(Stored {
            state,
            ..Stored::default()
        });
        Job {
            id: 7,
            name: "Job7".into(),
            suspended,
            children: vec![child],
        }
    }

    /// Every one-child job, with and without the user's suspend.
    fn every_job() -> impl Iterator<Item = Job> {
        State::ALL.into_iter().flat_map(|s| [job(s, false), job(s, true)])
    }

    #[test]
    fn a_stop_applies_in_every_state() {
        for job in every_job() {
            assert_eq!(job.can_stop(), Ok(()), "{}", job.state());
        }
    }

    #[test]
    fn only_an_unfinished_job_can_be_suspended() {
        for job in every_job() {
            let state = job.state();
            let checked = job.can_suspend();
            assert_eq!(checked.is_ok(), !state.is_finished(), "{state}");
            if let Err(e) = checked {
                assert_eq!((e.state, e.action), (state, Action::Suspend));
                assert_eq!(e.to_string(), format!("job Job7 is {state}: nothing to suspend"));
            }
        }
    }

    #[test]
    fn a_job_can_be_resumed_when_suspended_by_the_user_or_by_its_children() {
        for job in every_job() {
            let state = job.state();
            let expect = job.suspended || matches!(state, State::Suspended | State::Suspending);
            let checked = job.can_resume();
            assert_eq!(checked.is_ok(), expect, "{state} suspended={}", job.suspended);
            if let Err(e) = checked {
                assert_eq!((e.state, e.action), (state, Action::Resume));
                assert_eq!(e.to_string(), format!("job Job7 is {state}: nothing to resume"));
            }
        }
        assert!(job(State::Completed, false).can_resume().is_err());
        assert!(job(State::Running, false).can_resume().is_err());
        assert!(job(State::Suspending, false).can_resume().is_ok());
    }

    #[test]
    fn a_job_still_going_is_removed_only_with_force() {
        for job in every_job() {
            let state = job.state();
            assert_eq!(job.can_remove(true), Ok(()), "{state}");
            let checked = job.can_remove(false);
            assert_eq!(checked.is_ok(), state.is_finished(), "{state}");
            if let Err(e) = checked {
                assert_eq!((e.state, e.action), (state, Action::Remove));
                assert_eq!(
                    e.to_string(),
                    format!("job Job7 (Id 7) is {state}: stop it first, or remove it with --force")
                );
            }
        }
    }

    #[test]
    fn the_job_state_follows_the_children() {
        let mut j = job(State::Completed, false);
        j.children.push(job(State::Running, false).children.remove(0));
        assert_eq!(j.state(), State::Running);
        assert!(j.can_remove(false).is_err());
        assert!(j.can_suspend().is_ok());
    }
}
