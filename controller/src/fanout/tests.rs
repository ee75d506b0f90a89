//! The fan-out with real tokio tasks: a test runner counts the children running at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;

/// Counts its children, and holds each one until the test hands out a permit (or the job
/// is stopped).
struct Counting {
    now: AtomicUsize,
    most: AtomicUsize,
    /// How many runs began.
    started: watch::Sender<usize>,
    /// How each child ended, in the order they did.
    ended: Mutex<Vec<(usize, State, Option<String>)>>,
    ended_count: watch::Sender<usize>,
    hold: Semaphore,
    /// What each run ends with.
    state: State,
}

impl Counting {
    fn new(state: State) -> Arc<Counting> {
        Arc::new(Counting {
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            started: watch::channel(0).0,
            ended: Mutex::new(Vec::new()),
            ended_count: watch::channel(0).0,
            hold: Semaphore::new(0),
            state,
        })
    }

    fn ended(&self) -> Vec<(usize, State, Option<String>)> {
        self.ended.lock().expect("ended").clone()
    }

    fn runs(&self) -> usize {
        *self.started.borrow()
    }
}

impl Runner for Counting {
    type Child = usize;

    async fn run(
        &self,
        _child: &usize,
        _slot: Arc<Slot>,
        mut desired: watch::Receiver<Desired>,
    ) -> ChildOutcome {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        self.started.send_modify(|n| *n += 1);
        // Give the other tasks every chance to start too.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let stopped = tokio::select! {
            permit = self.hold.acquire() => {
                permit.expect("hold").forget();
                false
            }
            _ = desired.wait_for(|d| d.stop) => true,
        };
        self.now.fetch_sub(1, Ordering::SeqCst);
        if stopped {
            ChildOutcome::new(State::Stopped, Cause::Stopped, "stopped", Instant::now())
        } else {
            ChildOutcome::new(self.state, Cause::Exited, "ran", Instant::now())
        }
    }

    async fn ended(&self, child: &usize, outcome: ChildOutcome) {
        self.ended
            .lock()
            .expect("ended")
            .push((*child, outcome.state, outcome.reason));
        self.ended_count.send_modify(|n| *n += 1);
    }
}

fn start(
    fanout: FanOut,
    runner: &Arc<Counting>,
    children: usize,
    desired: watch::Receiver<Desired>,
) -> tokio::task::JoinHandle<()> {
    let runner = runner.clone();
    tokio::spawn(async move { fanout.run(runner, 0..children, desired).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_the_limit_in_flight() {
    let runner = Counting::new(State::Completed);
    let (_tx, desired) = watch::channel(Desired::default());
    let done = start(FanOut::new(3), &runner, 20, desired);
    runner
        .started
        .subscribe()
        .wait_for(|n| *n >= 3)
        .await
        .expect("3 started");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(runner.runs(), 3, "a 4th child started while 3 held their slots");
    runner.hold.add_permits(20);
    done.await.expect("fan-out");
    assert_eq!(runner.most.load(Ordering::SeqCst), 3);
    assert_eq!(runner.runs(), 20);
    let ended = runner.ended();
    assert_eq!(ended.len(), 20);
    assert!(ended.iter().all(|(_, s, _)| *s == State::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_the_queued_children_without_starting_them() {
    let runner = Counting::new(State::Completed);
    let (tx, desired) = watch::channel(Desired::default());
    let done = start(FanOut::new(1), &runner, 3, desired);
    runner
        .started
        .subscribe()
        .wait_for(|n| *n >= 1)
        .await
        .expect("1 started");
    tx.send_replace(Desired {
        stop: true,
        suspend: false,
    });
    done.await.expect("fan-out");
    assert_eq!(runner.runs(), 1);
    let mut ended = runner.ended();
    ended.sort();
    assert_eq!(
        ended,
        vec![
            (0, State::Stopped, Some("stopped".into())),
            (1, State::Stopped, Some(STOPPED_QUEUED.into())),
            (2, State::Stopped, Some(STOPPED_QUEUED.into())),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_holds_new_starts_until_the_resume() {
    let runner = Counting::new(State::Completed);
    let (tx, desired) = watch::channel(Desired::default());
    let done = start(FanOut::new(1), &runner, 3, desired);
    runner
        .started
        .subscribe()
        .wait_for(|n| *n >= 1)
        .await
        .expect("1 started");
    tx.send_replace(Desired {
        stop: false,
        suspend: true,
    });
    runner.hold.add_permits(1);
    runner
        .ended_count
        .subscribe()
        .wait_for(|n| *n >= 1)
        .await
        .expect("1 ended");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(runner.runs(), 1, "a child started while the job was suspended");
    tx.send_replace(Desired::default());
    runner.hold.add_permits(2);
    done.await.expect("fan-out");
    assert_eq!(runner.runs(), 3);
    assert_eq!(runner.ended().len(), 3);
}

/// A small error budget, as `--max-errors 1` would be.
#[derive(Default)]
struct OneError {
    failed: AtomicUsize,
}

impl Policy for OneError {
    fn admit(&self) -> Result<(), Refusal> {
        if self.failed.load(Ordering::SeqCst) >= 1 {
            return Err(Refusal {
                state: State::Stopped,
                cause: Cause::Skipped,
                reason: "not started: 1 host failed already".into(),
            });
        }
        Ok(())
    }

    fn ended(&self, outcome: &ChildOutcome, _attempts: u32) {
        if outcome.state == State::Failed {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_told_each_end_before_the_next_start() {
    let runner = Counting::new(State::Failed);
    runner.hold.add_permits(3);
    let (_tx, desired) = watch::channel(Desired::default());
    let fanout = FanOut::new(1).with_policy(Arc::new(OneError::default()));
    start(fanout, &runner, 3, desired).await.expect("fan-out");
    assert_eq!(runner.runs(), 1);
    let refused = Some("not started: 1 host failed already".to_string());
    assert_eq!(
        runner.ended(),
        vec![
            (0, State::Failed, Some("ran".into())),
            (1, State::Stopped, refused.clone()),
            (2, State::Stopped, refused),
        ]
    );
}

/// Runs every failed child once more.
struct RetryOnce;

impl Policy for RetryOnce {
    fn admit(&self) -> Result<(), Refusal> {
        Ok(())
    }

    fn retry(&self, outcome: &ChildOutcome, attempts: u32) -> bool {
        outcome.state == State::Failed && attempts < 2
    }
}

#[tokio::test]
async fn a_retry_runs_the_child_again_and_ends_it_once() {
    let runner = Counting::new(State::Failed);
    runner.hold.add_permits(4);
    let (_tx, desired) = watch::channel(Desired::default());
    let fanout = FanOut::new(2).with_policy(Arc::new(RetryOnce));
    start(fanout, &runner, 2, desired).await.expect("fan-out");
    assert_eq!(runner.runs(), 4);
    assert_eq!(runner.ended().len(), 2);
}
