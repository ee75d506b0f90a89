//! The output writer: keeps a child's progress in the store ([`StoreSink`]) and batches its
//! output into few transactions on a thread of its own ([`write_output`]).

use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::child::{ChildSink, LeftRun, Target};
use crate::daemon::health::Health;
use crate::daemon::manager::{now_ms, Changes, Manager};
use crate::daemon::orphans::Orphan;
use crate::state::State;
use crate::store::{Chunk, JobStore};
use crate::throttle::Slot;

/// The most output bytes queued for the writer or in its batch, whatever the number of
/// children streaming: half the daemon's output budget ([`crate::flow::budget`]; 8 MiB).
pub fn writer_budget() -> usize {
    crate::flow::budget() / 2
}

/// A request to the output writer thread.
pub(super) enum WriteOp {
    /// A chunk, with its room in the writer's budget (given back once it is stored).
    Chunk(Chunk, OwnedSemaphorePermit),
    /// Answered once every chunk sent before it is stored.
    Flush { done: oneshot::Sender<bool> },
}

/// Keeps a child's progress in the store.
pub(super) struct StoreSink<'a> {
    pub(super) manager: &'a Manager,
    pub(super) job_id: i64,
    pub(super) idx: u32,
    pub(super) slot: std::sync::Arc<Slot>,
}

/// What a child's task does once a write of its owner is fenced: nothing more, ever. The
/// daemon drops the task (its lease loop finds the lease lost), and another daemon adopts
/// the child from what the store holds.
pub(super) async fn fenced<T>() -> T {
    std::future::pending().await
}

impl ChildSink for StoreSink<'_> {
    // Each write is retried until the store takes it: the start mark must be recorded before
    // the start request goes out (a restarted daemon looks the run up instead of starting it
    // twice), and a child's progress must not be lost to a full disk. A write fenced (the
    // lease lost) never returns: nothing goes to the agent after it.
    async fn starting(&self) {
        let (m, at) = (self.manager, now_ms());
        let done = m
            .health
            .retry_owned("a child's start", || {
                m.store.mark_starting(self.job_id, self.idx, at)
            })
            .await;
        if done.is_none() {
            fenced().await
        }
    }

    async fn started(&self, run_id: &str) {
        let (m, at) = (self.manager, now_ms());
        let done = m
            .health
            .retry_owned("a run id", || {
                m.store.set_child_run(self.job_id, self.idx, run_id, at)
            })
            .await;
        if done.is_none() {
            fenced().await
        }
        m.changed(self.job_id);
    }

    async fn state(&self, state: State, reason: Option<String>) {
        let m = self.manager;
        let done = m
            .health
            .retry_owned("a child's state", || {
                m.store
                    .set_child_state(self.job_id, self.idx, state, reason.as_deref())
            })
            .await;
        if done.is_none() {
            fenced().await
        }
        m.changed(self.job_id);
    }

    async fn chunk(&self, seq: u64, stream: pb::Stream, data: Vec<u8>) -> Result<(), ()> {
        // Room is only ever held by chunks already queued, and the writer frees it without
        // waiting for any child: this wait always ends.
        let room = room_for(&self.manager.writer_room, data.len()).await?;
        let chunk = Chunk {
            job_id: self.job_id,
            idx: self.idx,
            seq,
            stream: stream.into(),
            data,
        };
        self.manager
            .writer
            .send(WriteOp::Chunk(chunk, room))
            .await
            .map_err(|_| ())
    }

    /// True once everything handed over is stored, under a lease this daemon knows to be
    /// live (it waits for the next heartbeat when the last one is too old): only then may
    /// the agent drop its copy. Never returns once the lease is lost.
    async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        let flush = WriteOp::Flush { done: tx };
        if self.manager.writer.send(flush).await.is_err() {
            return false;
        }
        let stored = rx.await.unwrap_or(false);
        if self.manager.health.is_fenced() {
            fenced().await
        }
        if stored {
            self.manager.lease_confirmed().await;
        }
        stored
    }

    fn slot(&self) -> Option<&Slot> {
        Some(self.slot.as_ref())
    }

    async fn abandoned(&self, target: &Target, run: &LeftRun) -> Option<String> {
        let host = target.host()?;
        let orphan = Orphan::new(host, run, self.job_id, self.idx, now_ms());
        self.manager.orphans.add(orphan).await;
        Some("the daemon stops the run once its agent answers again".to_string())
    }
}

/// A chunk of `len` bytes' room in the writer's budget (an empty chunk still takes a little;
/// one larger than the budget takes all of it).
pub(super) async fn room_for(
    room: &std::sync::Arc<Semaphore>,
    len: usize,
) -> Result<OwnedSemaphorePermit, ()> {
    let cost = len.clamp(64, writer_budget());
    let cost = u32::try_from(cost).map_err(|_| ())?;
    room.clone().acquire_many_owned(cost).await.map_err(|_| ())
}

/// The output writer: batches chunks into one transaction each, so that many hosts'
/// output costs few commits. A batch the store refuses (a full disk) is retried until it
/// goes in; meanwhile the queue fills, the children stop reading, and the agents keep the
/// output: nothing is dropped, and a flush answers only once what came before it is stored.
pub(super) fn write_output(
    runtime: &tokio::runtime::Handle,
    store: &dyn JobStore,
    health: &Health,
    mut rx: mpsc::Receiver<WriteOp>,
    changes: &Changes,
) {
    const BATCH: usize = 512;
    while let Some(first) = rx.blocking_recv() {
        let mut chunks = Vec::new();
        let mut rooms = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                WriteOp::Chunk(c, room) => {
                    chunks.push(c);
                    rooms.push(room);
                }
                WriteOp::Flush { done } => flushes.push(done),
            }
            if chunks.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut stored = true;
        if !chunks.is_empty() {
            // Fenced: the chunks of children this daemon lost are not stored, and their
            // flushes are not answered true (nothing is acknowledged to their agents).
            stored = runtime
                .block_on(health.retry_owned("output", || store.append_output(&chunks)))
                .is_some();
            let mut jobs: Vec<i64> = chunks.iter().map(|c| c.job_id).collect();
            jobs.sort_unstable();
            jobs.dedup();
            for job in jobs {
                changes.bump(job);
            }
        }
        // Stored (or given up on, fenced): their room goes to the children waiting for it.
        drop(chunks);
        drop(rooms);
        for done in flushes {
            let _ = done.send(stored && !health.is_fenced());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::new_job;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Stream;

    /// The writer, on a real SQLite store, wakes the waiters of the jobs it stored output
    /// for, and nobody else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_output_wakes_only_its_jobs_waiters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn JobStore> =
            Arc::new(SqliteStore::open(&dir.path().join("jobs.db")).expect("open"));
        let quiet = store.create_job(&new_job("quiet", 1)).await.expect("job");
        let loud = store.create_job(&new_job("loud", 1)).await.expect("job");
        let changes = Arc::new(Changes::default());
        let (tx, rx) = mpsc::channel(16);
        let budget = Arc::new(Semaphore::new(writer_budget()));
        let writer = {
            let (store, changes) = (store.clone(), changes.clone());
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || write_output(&runtime, &*store, &Health::default(), rx, &changes))
        };
        let quiet_waiter = changes.subscribe(quiet);
        let mut loud_waiter = changes.subscribe(loud);
        for seq in 1..=3 {
            let chunk = Chunk {
                job_id: loud,
                idx: 0,
                seq,
                stream: Stream::Stdout,
                data: b"out\n".to_vec(),
            };
            let room = room_for(&budget, chunk.data.len()).await.expect("room");
            tx.send(WriteOp::Chunk(chunk, room)).await.expect("writer");
            let (done, stored) = oneshot::channel();
            tx.send(WriteOp::Flush { done }).await.expect("writer");
            assert!(stored.await.expect("flushed"));
            loud_waiter.changed().await.expect("the loud job's waiter wakes");
        }
        assert!(
            !quiet_waiter.has_changed().expect("open"),
            "another job's output woke the quiet job's waiter"
        );
        assert_eq!(store.children(loud).await.expect("children")[0].last_seq, 3);
        assert_eq!(
            budget.available_permits(),
            writer_budget(),
            "stored chunks give their room back"
        );
        drop(tx);
        writer.join().expect("writer thread");
    }
}
