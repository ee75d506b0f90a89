//! The job store: SQLite in WAL mode, one file under the state directory. It keeps job
//! metadata, child states and every output chunk with its sequence number; output lives on
//! disk, not in memory.

use std::sync::{Mutex, MutexGuard};

use rjob_proto::v1 as pb;
use rusqlite::{params, Connection};

use crate::daemon::ids::Ids;
pub use crate::daemon::store_error::StoreError;
use crate::state::{parent_state, State};

mod open;
mod received;
pub use received::Mark;

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub instance_id: String,
    pub name: String,
    pub command: String,
    /// "remote" or "local".
    pub location: String,
    pub throttle_limit: u32,
    pub connect_timeout_ms: u64,
    pub created_at_ms: i64,
    pub ended_at_ms: i64,
    pub stop_requested: bool,
    pub suspended: bool,
}

#[derive(Debug, Clone)]
pub struct ChildRow {
    pub idx: u32,
    pub host: String,
    pub port: u16,
    pub state: State,
    pub run_id: Option<String>,
    pub last_seq: u64,
    pub received_seq: u64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
}

impl ChildRow {
    /// HasMoreData: the child is not finished (it may write more), or it has output that no
    /// consuming receive has delivered yet.
    pub fn has_more_data(&self) -> bool {
        !self.state.is_finished() || self.last_seq > self.received_seq
    }

    /// The host as users name it (`name`, or `name:port` off the default port).
    pub fn label(&self, location: &str) -> String {
        if location == "local" {
            return "localhost".to_string();
        }
        crate::hosts::Host {
            name: self.host.clone(),
            port: self.port,
        }
        .label()
    }
}

/// One output chunk to store.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub job_id: i64,
    pub idx: u32,
    pub seq: u64,
    pub stream: pb::Stream,
    pub data: Vec<u8>,
}

pub struct Store {
    conn: Mutex<Connection>,
    /// The high-water mark of Ids beside the store; locked inside `conn`.
    ids: Mutex<Ids>,
    /// What was found lost at open, in one line.
    lost: Option<String>,
    /// The Ids of the jobs found lost at open.
    lost_ids: Vec<i64>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// What the store was found to have lost when it was opened, in one line.
    pub fn lost_notice(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Whether job `id` was found lost when the store was opened.
    pub fn was_lost(&self, id: i64) -> bool {
        self.lost_ids.contains(&id)
    }

    fn ids(&self) -> MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite keeps its own consistency; a panic elsewhere doesn't make the connection unusable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a job with its children (all NotStarted); returns its id.
    pub fn create_job(
        &self,
        job: &JobRow,
        request: &pb::StartRunRequest,
        hosts: &[(String, u16)],
    ) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        // The Id is recorded in the mark (fsynced) before the job is stored: never handed
        // out twice, whatever the store loses later.
        let id = self.ids().take_next()?;
        let stored = Self::insert_job(&mut conn, id, job, request, hosts);
        if stored.is_err() {
            let _ = self.ids().forget(id);
        }
        stored
    }

    fn insert_job(
        conn: &mut Connection,
        id: i64,
        job: &JobRow,
        request: &pb::StartRunRequest,
        hosts: &[(String, u16)],
    ) -> Result<i64, StoreError> {
        let tx = conn.transaction()?;
        let mut request = request.clone();
        request.password.clear(); // never stored
        tx.execute(
            "INSERT INTO jobs (id, instance_id, name, command, location, request, throttle_limit, connect_timeout_ms, created_at_ms)
             VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                job.instance_id,
                job.name,
                job.command,
                job.location,
                prost::Message::encode_to_vec(&request),
                job.throttle_limit,
                to_i64(job.connect_timeout_ms),
                job.created_at_ms,
                id
            ],
        )?;
        if job.name.is_empty() {
            tx.execute(
                "UPDATE jobs SET name = ?1 WHERE id = ?2",
                params![format!("Job{id}"), id],
            )?;
        }
        for (idx, (host, port)) in hosts.iter().enumerate() {
            tx.execute(
                "INSERT INTO children (job_id, idx, host, port, state) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, idx, host, port, State::NotStarted.to_pb() as i32],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// What a job's children run (the password was never stored).
    /// A request that cannot be read or decoded is [`StoreError::Corrupt`].
    pub fn job_request(&self, id: i64) -> Result<pb::StartRunRequest, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { id, detail };
        let blob: Vec<u8> = match self
            .lock()
            .query_row("SELECT request FROM jobs WHERE id = ?1", [id], |r| r.get(0))
        {
            Ok(blob) => blob,
            Err(
                e @ (rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..)),
            ) => return Err(corrupt(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        prost::Message::decode(blob.as_slice()).map_err(|e| corrupt(e.to_string()))
    }

    /// Every job's metadata, by Id (ids are never reused).
    pub fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, instance_id, name, command, location, 0, throttle_limit, connect_timeout_ms,
                    created_at_ms, ended_at_ms, stop_requested, suspended FROM jobs ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(JobRow {
                id: r.get(0)?,
                instance_id: r.get(1)?,
                name: r.get(2)?,
                command: r.get(3)?,
                location: r.get(4)?,
                throttle_limit: r.get(6)?,
                connect_timeout_ms: u64::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
                created_at_ms: r.get(8)?,
                ended_at_ms: r.get(9)?,
                stop_requested: r.get(10)?,
                suspended: r.get(11)?,
            })
        })?;
        let jobs = rows.collect::<Result<Vec<_>, _>>()?;
        Ok(jobs)
    }

    pub fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        Ok(self.jobs()?.into_iter().find(|j| j.id == id))
    }

    pub fn children(&self, job_id: i64) -> Result<Vec<ChildRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT idx, host, port, state, run_id, last_seq, received_seq, exit_code, signal, reason,
                    started_at_ms, ended_at_ms FROM children WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([job_id], |r| {
            Ok(ChildRow {
                idx: r.get(0)?,
                host: r.get(1)?,
                port: r.get(2)?,
                state: State::from_pb(r.get(3)?),
                run_id: r.get(4)?,
                last_seq: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                received_seq: u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0),
                exit_code: r.get(7)?,
                signal: r.get(8)?,
                reason: r.get(9)?,
                started_at_ms: r.get(10)?,
                ended_at_ms: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a child whose start request is about to go out (its `started_at_ms`).
    pub fn mark_starting(&self, job_id: i64, idx: u32, now_ms: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE children SET started_at_ms = ?3 WHERE job_id = ?1 AND idx = ?2 AND started_at_ms = 0",
            params![job_id, idx, now_ms],
        )?;
        Ok(())
    }

    pub fn set_child_run(&self, job_id: i64, idx: u32, run_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE children SET run_id = ?3, started_at_ms = CASE started_at_ms WHEN 0 THEN ?4 ELSE started_at_ms END
             WHERE job_id = ?1 AND idx = ?2",
            params![job_id, idx, run_id, now_ms],
        )?;
        Ok(())
    }

    /// Sets a child's state and reason, unless it has already finished.
    pub fn set_child_state(
        &self,
        job_id: i64,
        idx: u32,
        state: State,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE children SET state = ?3, reason = ?4 WHERE job_id = ?1 AND idx = ?2 AND state NOT IN (?5, ?6, ?7)",
            params![
                job_id,
                idx,
                state.to_pb() as i32,
                reason,
                State::Completed.to_pb() as i32,
                State::Failed.to_pb() as i32,
                State::Stopped.to_pb() as i32
            ],
        )?;
        Ok(())
    }

    /// Records how a child ended, and the job's end once every child has.
    pub fn finish_child(
        &self,
        job_id: i64,
        idx: u32,
        outcome: &crate::child::ChildOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE children SET state = ?3, exit_code = ?4, signal = ?5, reason = ?6, ended_at_ms = ?7
             WHERE job_id = ?1 AND idx = ?2",
            params![
                job_id,
                idx,
                outcome.state.to_pb() as i32,
                outcome.exit_code,
                outcome.signal,
                outcome.reason.clone().unwrap_or_default(),
                now_ms
            ],
        )?;
        let unfinished: i64 = tx.query_row(
            "SELECT COUNT(*) FROM children WHERE job_id = ?1 AND state NOT IN (?2, ?3, ?4)",
            params![
                job_id,
                State::Completed.to_pb() as i32,
                State::Failed.to_pb() as i32,
                State::Stopped.to_pb() as i32
            ],
            |r| r.get(0),
        )?;
        if unfinished == 0 {
            tx.execute(
                "UPDATE jobs SET ended_at_ms = ?2 WHERE id = ?1",
                params![job_id, now_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn set_job_flags(
        &self,
        job_id: i64,
        stop: Option<bool>,
        suspended: Option<bool>,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        if let Some(stop) = stop {
            conn.execute(
                "UPDATE jobs SET stop_requested = ?2 WHERE id = ?1",
                params![job_id, stop],
            )?;
        }
        if let Some(s) = suspended {
            conn.execute("UPDATE jobs SET suspended = ?2 WHERE id = ?1", params![job_id, s])?;
        }
        Ok(())
    }

    /// Stores chunks in one transaction, each exactly once, advancing each child's last_seq.
    pub fn append_output(&self, chunks: &[Chunk]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO output (job_id, idx, seq, stream, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut advance = tx.prepare_cached(
                "UPDATE children SET last_seq = ?3 WHERE job_id = ?1 AND idx = ?2 AND last_seq < ?3",
            )?;
            for c in chunks {
                insert.execute(params![c.job_id, c.idx, to_i64(c.seq), c.stream as i32, c.data])?;
                advance.execute(params![c.job_id, c.idx, to_i64(c.seq)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Output of one child with `after < seq <= upto`, in order, at most `limit` chunks.
    pub fn output(
        &self,
        job_id: i64,
        idx: u32,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, pb::Stream, Vec<u8>)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, stream, data FROM output WHERE job_id = ?1 AND idx = ?2 AND seq > ?3 AND seq <= ?4
             ORDER BY seq LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![
                job_id,
                idx,
                to_i64(after),
                to_i64(upto),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| {
                let stream: i32 = r.get(1)?;
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    pb::Stream::try_from(stream).unwrap_or(pb::Stream::Stdout),
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn remove_job(&self, job_id: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        // Out of the mark first: a removal cut short leaves a job the next start finds in the
        // store (and keeps), never one it reports lost.
        self.ids().forget(job_id)?;
        let removed = (|| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM output WHERE job_id = ?1", [job_id])?;
            tx.execute("DELETE FROM children WHERE job_id = ?1", [job_id])?;
            tx.execute("DELETE FROM jobs WHERE id = ?1", [job_id])?;
            tx.commit()
        })();
        if removed.is_err() {
            self.ids().keep(job_id);
        }
        Ok(removed?)
    }
}

/// A job with its children, as the CLI shows it.
pub fn job_info(job: &JobRow, children: &[ChildRow]) -> pb::JobInfo {
    let states: Vec<State> = children.iter().map(|c| c.state).collect();
    let state = parent_state(&states, job.suspended);
    pb::JobInfo {
        id: u32::try_from(job.id).unwrap_or(u32::MAX),
        instance_id: job.instance_id.clone(),
        name: job.name.clone(),
        state: state.to_pb() as i32,
        has_more_data: children.iter().any(ChildRow::has_more_data),
        command: job.command.clone(),
        location: job.location.clone(),
        throttle_limit: job.throttle_limit,
        created_at_ms: job.created_at_ms,
        ended_at_ms: job.ended_at_ms,
        children: children
            .iter()
            .map(|c| pb::ChildInfo {
                index: c.idx,
                host: c.label(&job.location),
                state: c.state.to_pb() as i32,
                exit_code: c.exit_code,
                signal: c.signal,
                reason: c.reason.clone(),
                has_more_data: c.has_more_data(),
                last_seq: c.last_seq,
                received_seq: c.received_seq,
                started_at_ms: c.started_at_ms,
                ended_at_ms: c.ended_at_ms,
            })
            .collect(),
    }
}
