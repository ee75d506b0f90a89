//! The SQLite job store: WAL mode, one file under the state directory (`jobs.db`), with the
//! high-water mark of Ids beside it (`jobs.ids`, see [`crate::store::ids`]). It keeps job
//! metadata, child states and every output chunk with its sequence number: output lives on
//! disk, not in memory. Every call does its short local work inline under one mutex (the
//! futures of [`JobStore`] finish on first poll).

use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use crate::state::State;
use crate::store::ids::Ids;
use crate::store::{
    ChildEnd, ChildRow, Chunk, Claimed, JobRow, JobStore, Mark, NewJob, Notice, Output, ReceiveClaim,
    RetentionRow, StoreError, Stream,
};

mod error;
mod jobs;
mod open;
mod output;
mod received;
mod retention;
mod schema;
#[cfg(test)]
mod tests;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The high-water mark of Ids beside the store; locked inside `conn`.
    ids: Mutex<Ids>,
    /// What was found lost at open, in one line.
    lost: Option<String>,
    /// The Ids of the jobs found lost at open.
    lost_ids: Vec<i64>,
    /// The children claimed since open (one daemon owns the store: a claim lasts as long as
    /// the store is open).
    claimed: Mutex<std::collections::HashSet<(i64, u32)>>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The finished states as an SQL list, `(3, 4, 5)`, from [`State::FINISHED`].
fn finished_list() -> String {
    let codes: Vec<String> = State::FINISHED
        .iter()
        .map(|s| crate::store::state_code(*s).to_string())
        .collect();
    format!("({})", codes.join(", "))
}

impl SqliteStore {
    fn ids(&self) -> MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claimed(&self) -> MutexGuard<'_, std::collections::HashSet<(i64, u32)>> {
        self.claimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite keeps its own consistency; a panic elsewhere doesn't make the connection unusable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    fn lost_notice(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    fn was_lost(&self, id: i64) -> bool {
        self.lost_ids.contains(&id)
    }

    async fn create_job(&self, job: &NewJob) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        // The Id is recorded in the mark (fsynced) before the job is stored: never handed
        // out twice, whatever the store loses later.
        let id = self.ids().take_next()?;
        let stored = jobs::insert(&mut conn, id, job);
        if stored.is_err() {
            let _ = self.ids().forget(id);
        }
        Ok(stored.map(|()| id)?)
    }

    async fn job_request(&self, id: i64) -> Result<Vec<u8>, StoreError> {
        jobs::request(&self.lock(), id)
    }

    async fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        Ok(jobs::select(&self.lock(), None)?)
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        Ok(jobs::select(&self.lock(), Some(id))?.pop())
    }

    async fn children(&self, job_id: i64) -> Result<Vec<ChildRow>, StoreError> {
        Ok(jobs::children(&self.lock(), job_id)?)
    }

    async fn child_states(&self, job_id: i64) -> Result<Vec<State>, StoreError> {
        Ok(jobs::states(&self.lock(), job_id)?)
    }

    async fn mark_starting(&self, job_id: i64, idx: u32, now_ms: i64) -> Result<(), StoreError> {
        Ok(jobs::mark_starting(&self.lock(), job_id, idx, now_ms)?)
    }

    async fn set_child_run(
        &self,
        job_id: i64,
        idx: u32,
        run_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(jobs::set_run(&self.lock(), job_id, idx, run_id, now_ms)?)
    }

    async fn set_child_state(
        &self,
        job_id: i64,
        idx: u32,
        state: State,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        Ok(jobs::set_state(&self.lock(), job_id, idx, state, reason)?)
    }

    async fn finish_child(&self, job_id: i64, idx: u32, end: &ChildEnd) -> Result<(), StoreError> {
        Ok(jobs::finish(&mut self.lock(), job_id, idx, end)?)
    }

    async fn set_job_flags(
        &self,
        job_id: i64,
        stop: Option<bool>,
        suspended: Option<bool>,
    ) -> Result<(), StoreError> {
        Ok(jobs::set_flags(&self.lock(), job_id, stop, suspended)?)
    }

    async fn append_output(&self, chunks: &[Chunk]) -> Result<(), StoreError> {
        Ok(output::append(&mut self.lock(), chunks)?)
    }

    async fn output(
        &self,
        job_id: i64,
        idx: u32,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Output>, StoreError> {
        Ok(output::read(&self.lock(), job_id, idx, after, upto, limit)?)
    }

    async fn received_marks(&self, job_id: i64, idx: u32) -> Result<[Mark; 2], StoreError> {
        Ok(received::marks(&self.lock(), job_id, idx)?)
    }

    async fn mark_received(
        &self,
        job_id: i64,
        idx: u32,
        stream: Stream,
        mark: Mark,
    ) -> Result<(), StoreError> {
        Ok(received::advance(&mut self.lock(), job_id, idx, stream, mark)?)
    }

    async fn remove_job(&self, job_id: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        // Out of the mark first: a removal cut short leaves a job the next start finds in the
        // store (and keeps), never one it reports lost.
        self.ids().forget(job_id)?;
        let removed = jobs::remove(&mut conn, job_id);
        if removed.is_err() {
            self.ids().keep(job_id);
        }
        Ok(removed?)
    }

    fn epoch(&self) -> i64 {
        0
    }

    async fn register(&self) -> Result<i64, StoreError> {
        Ok(0)
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn claimable(&self) -> Result<Vec<i64>, StoreError> {
        let unfinished = jobs::unfinished(&self.lock())?;
        let claimed = self.claimed();
        let mut ids: Vec<i64> = unfinished
            .into_iter()
            .filter(|key| !claimed.contains(key))
            .map(|(job, _)| job)
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// Every unfinished child not claimed yet: one daemon runs the whole job under its
    /// own throttle.
    async fn claim(&self, job_id: i64) -> Result<Claimed, StoreError> {
        let children = jobs::children(&self.lock(), job_id)?;
        let mut claimed = self.claimed();
        Ok(Claimed {
            children: children
                .into_iter()
                .filter(|c| !c.state.is_finished() && claimed.insert((job_id, c.idx)))
                .collect(),
            more: false,
        })
    }

    fn subscribe(&self, to: tokio::sync::mpsc::UnboundedSender<Notice>) {
        drop(to); // one daemon per SQLite store: nobody else changes it
    }

    async fn claim_receive(&self, _job_id: i64) -> Result<Option<ReceiveClaim>, StoreError> {
        Ok(Some(ReceiveClaim::local()))
    }

    async fn retention_rows(&self) -> Result<Vec<RetentionRow>, StoreError> {
        Ok(retention::rows(&self.lock())?)
    }

    async fn store_size(&self) -> Result<u64, StoreError> {
        Ok(retention::store_size(&self.lock())?)
    }

    async fn job_size(&self, job_id: i64) -> Result<u64, StoreError> {
        Ok(retention::job_size(&self.lock(), job_id)?)
    }
}
