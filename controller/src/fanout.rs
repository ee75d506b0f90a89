//! The throttled fan-out, one for `rjob invoke` and for the daemon's jobs: every child runs
//! under the throttle limit (at most N with a slot at once; a child waiting at a busy agent
//! gives its slot back, see [`Slot`]), a queued child waits while the job is suspended and
//! ends unstarted once it is stopped, and a [`Policy`] is asked before each start and told
//! each end. Today's behaviour is [`Unlimited`]; an error budget (`--max-errors`) or a retry
//! policy is one more `Policy`.
//!
//! What a child is and where its progress goes is the caller's: a [`Runner`].

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::child::{Cause, ChildOutcome, Desired};
use crate::state::State;
use crate::throttle::Slot;

/// The reason of a child stopped while it waited in the queue.
pub const STOPPED_QUEUED: &str = "stopped before it started";

/// Runs the children of one fan-out and records how they end.
pub trait Runner: Send + Sync + 'static {
    type Child: Send + Sync + 'static;

    /// Runs `child` to its end, holding `slot` (its throttle slot) meanwhile; follows what
    /// `desired` asks. Called again for the same child when the policy asks for a retry.
    fn run(
        &self,
        child: &Self::Child,
        slot: Arc<Slot>,
        desired: watch::Receiver<Desired>,
    ) -> impl Future<Output = ChildOutcome> + Send;

    /// How `child` ended: after its run, or unstarted (stopped while queued, refused by the
    /// policy). Called once per child.
    fn ended(&self, child: &Self::Child, outcome: ChildOutcome) -> impl Future<Output = ()> + Send;
}

/// Why the policy does not let a child start: it ends unstarted with this state and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub state: State,
    pub cause: Cause,
    pub reason: String,
}

/// The admission hook: asked before each child starts, told how each one ended.
pub trait Policy: Send + Sync {
    /// Whether the next child may start (it holds a throttle slot by then).
    fn admit(&self) -> Result<(), Refusal>;
    /// How a child ended (run or not); `attempts` is how many times it ran.
    fn ended(&self, outcome: &ChildOutcome, attempts: u32) {
        let _ = (outcome, attempts);
    }
    /// Whether a child that ran `attempts` times and ended with `outcome` runs again.
    fn retry(&self, outcome: &ChildOutcome, attempts: u32) -> bool {
        let _ = (outcome, attempts);
        false
    }
}

/// Today's behaviour: every child starts, none is retried.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl Policy for Unlimited {
    fn admit(&self) -> Result<(), Refusal> {
        Ok(())
    }
}

/// One fan-out: its throttle and its policy.
pub struct FanOut {
    /// The throttle limit (at least 1).
    limit: usize,
    throttle: Arc<Semaphore>,
    policy: Arc<dyn Policy>,
}

impl FanOut {
    /// At most `limit` children with a slot at once (at least 1), under [`Unlimited`].
    pub fn new(limit: usize) -> FanOut {
        FanOut {
            limit: limit.max(1),
            throttle: Arc::new(Semaphore::new(limit.max(1))),
            policy: Arc::new(Unlimited),
        }
    }

    pub fn with_policy(mut self, policy: Arc<dyn Policy>) -> FanOut {
        self.policy = policy;
        self
    }

    /// Runs every child, in order, and returns once each has ended.
    pub async fn run<R: Runner>(
        &self,
        runner: Arc<R>,
        children: impl IntoIterator<Item = R::Child>,
        mut desired: watch::Receiver<Desired>,
    ) {
        let children: Vec<R::Child> = children.into_iter().collect();
        // Up to this many hosts stream at once: they share the output budget.
        let _streams = crate::flow::expect(self.limit.min(children.len()));
        let mut running = tokio::task::JoinSet::new();
        for child in children {
            let Some(permit) = wait_for_slot(&self.throttle, &mut desired).await else {
                let outcome = ChildOutcome::new(
                    State::Stopped,
                    Cause::StoppedBeforeStart,
                    STOPPED_QUEUED,
                    Instant::now(),
                );
                self.policy.ended(&outcome, 0);
                runner.ended(&child, outcome).await;
                continue;
            };
            if let Err(refusal) = self.policy.admit() {
                drop(permit);
                let outcome = ChildOutcome::new(refusal.state, refusal.cause, refusal.reason, Instant::now());
                self.policy.ended(&outcome, 0);
                runner.ended(&child, outcome).await;
                continue;
            }
            let slot = Arc::new(Slot::new(self.throttle.clone(), permit));
            let (runner, policy, desired) = (runner.clone(), self.policy.clone(), desired.clone());
            running.spawn(async move {
                let mut attempts = 0;
                let outcome = loop {
                    attempts += 1;
                    let outcome = runner.run(&child, slot.clone(), desired.clone()).await;
                    if desired.borrow().stop || !policy.retry(&outcome, attempts) {
                        break outcome;
                    }
                    slot.reclaim().await;
                };
                policy.ended(&outcome, attempts);
                runner.ended(&child, outcome).await;
                drop(slot);
            });
        }
        while running.join_next().await.is_some() {}
    }
}

/// A throttle slot, once the job is not suspended; `None` once it is stopped.
async fn wait_for_slot(
    throttle: &Arc<Semaphore>,
    desired: &mut watch::Receiver<Desired>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        let want = *desired.borrow_and_update();
        if want.stop {
            return None;
        }
        if want.suspend {
            if desired.changed().await.is_err() {
                return None;
            }
            continue;
        }
        tokio::select! {
            permit = throttle.clone().acquire_owned() => {
                let permit = permit.ok()?;
                // Re-check: a stop or suspend may have come while we waited.
                let want = *desired.borrow();
                if !want.stop && !want.suspend {
                    return Some(permit);
                }
            }
            changed = desired.changed() => if changed.is_err() { return None },
        }
    }
}

#[cfg(test)]
mod tests;
