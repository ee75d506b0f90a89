//! Jobs and their children in SQL: creating, reading, the children's progress, and removing.

use rusqlite::{params, Connection, OptionalExtension as _};

use super::{finished_list, to_i64, to_u64};
use crate::state::State;
use crate::store::{state_code, state_from_code, ChildEnd, ChildRow, JobRow, NewJob, StoreError};

pub(super) fn insert(conn: &mut Connection, id: i64, job: &NewJob) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let name = if job.name.is_empty() {
        format!("Job{id}")
    } else {
        job.name.clone()
    };
    tx.execute(
        "INSERT INTO jobs (id, instance_id, name, command, location, request, throttle_limit, connect_timeout_ms, created_at_ms, max_errors)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id,
            job.instance_id,
            name,
            job.command,
            job.location,
            job.request,
            job.throttle_limit,
            to_i64(job.connect_timeout_ms),
            job.created_at_ms,
            job.max_errors,
        ],
    )?;
    for (idx, (host, port)) in job.hosts.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO children (job_id, idx, host, port, state, run_as) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id,
            idx,
            host,
            port,
            state_code(State::NotStarted),
            job.run_as_of(idx)
        ])?;
    }
    tx.commit()
}

/// A job's request bytes; one that cannot be read is [`StoreError::Corrupt`].
pub(super) fn request(conn: &Connection, id: i64) -> Result<Vec<u8>, StoreError> {
    match conn.query_row("SELECT request FROM jobs WHERE id = ?1", [id], |r| r.get(0)) {
        Ok(blob) => Ok(blob),
        Err(e @ (rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..))) => {
            Err(StoreError::Corrupt {
                id,
                detail: e.to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Every job by Id, or only job `id`.
pub(super) fn select(conn: &Connection, id: Option<i64>) -> rusqlite::Result<Vec<JobRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, instance_id, name, command, location, throttle_limit, connect_timeout_ms,
                created_at_ms, ended_at_ms, stop_requested, suspended, max_errors FROM jobs
         WHERE ?1 IS NULL OR id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(JobRow {
            id: r.get(0)?,
            instance_id: r.get(1)?,
            name: r.get(2)?,
            command: r.get(3)?,
            location: r.get(4)?,
            throttle_limit: r.get(5)?,
            connect_timeout_ms: to_u64(r.get(6)?),
            created_at_ms: r.get(7)?,
            ended_at_ms: r.get(8)?,
            stop_requested: r.get(9)?,
            suspended: r.get(10)?,
            max_errors: r.get(11)?,
        })
    })?;
    rows.collect()
}

pub(super) fn children(conn: &Connection, job_id: i64) -> rusqlite::Result<Vec<ChildRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, host, port, state, run_id, last_seq, received_seq, exit_code, signal,
                reason, cause, started_at_ms, ended_at_ms, run_as
         FROM children WHERE job_id = ?1 ORDER BY idx",
    )?;
    let rows = stmt.query_map([job_id], |r| {
        Ok(ChildRow {
            idx: r.get(0)?,
            host: r.get(1)?,
            port: r.get(2)?,
            state: state_from_code(r.get(3)?),
            run_id: r.get(4)?,
            last_seq: to_u64(r.get(5)?),
            received_seq: to_u64(r.get(6)?),
            exit_code: r.get(7)?,
            signal: r.get(8)?,
            reason: r.get(9)?,
            cause: r.get(10)?,
            started_at_ms: r.get(11)?,
            ended_at_ms: r.get(12)?,
            run_as: r.get(13)?,
        })
    })?;
    rows.collect()
}

/// The states of a job's children, by index.
pub(super) fn states(conn: &Connection, job_id: i64) -> rusqlite::Result<Vec<State>> {
    let mut stmt = conn.prepare_cached("SELECT state FROM children WHERE job_id = ?1 ORDER BY idx")?;
    let rows = stmt.query_map([job_id], |r| Ok(state_from_code(r.get(0)?)))?;
    rows.collect()
}

pub(super) fn mark_starting(conn: &Connection, job_id: i64, idx: u32, now_ms: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE children SET started_at_ms = ?3 WHERE job_id = ?1 AND idx = ?2 AND started_at_ms IS NULL",
    )?
    .execute(params![job_id, idx, now_ms])?;
    Ok(())
}

pub(super) fn set_run(
    conn: &Connection,
    job_id: i64,
    idx: u32,
    run_id: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE children SET run_id = ?3, started_at_ms = COALESCE(started_at_ms, ?4)
         WHERE job_id = ?1 AND idx = ?2",
    )?
    .execute(params![job_id, idx, run_id, now_ms])?;
    Ok(())
}

/// Sets a child's state and reason, unless it has already finished.
pub(super) fn set_state(
    conn: &Connection,
    job_id: i64,
    idx: u32,
    state: State,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "UPDATE children SET state = ?3, reason = ?4 WHERE job_id = ?1 AND idx = ?2 AND state NOT IN {}",
        finished_list()
    ))?
    .execute(params![job_id, idx, state_code(state), reason])?;
    Ok(())
}

/// Records how a child ended, and the job's end once every child has.
pub(super) fn finish(conn: &mut Connection, job_id: i64, idx: u32, end: &ChildEnd) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.prepare_cached(
        "UPDATE children SET state = ?3, exit_code = ?4, signal = ?5, reason = ?6, cause = ?7, ended_at_ms = ?8
         WHERE job_id = ?1 AND idx = ?2",
    )?
    .execute(params![
            job_id,
            idx,
            state_code(end.state),
            end.exit_code,
            end.signal,
            end.reason,
            end.cause,
            end.ended_at_ms
        ],
    )?;
    // Through `children_unfinished`: the children still going, not every child of the job.
    let unfinished: bool = tx
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM children INDEXED BY children_unfinished
                            WHERE job_id = ?1 AND state NOT IN {})",
            finished_list()
        ))?
        .query_row([job_id], |r| r.get(0))?;
    if !unfinished {
        tx.prepare_cached("UPDATE jobs SET ended_at_ms = ?2 WHERE id = ?1")?
            .execute(params![job_id, end.ended_at_ms])?;
    }
    tx.commit()
}

pub(super) fn set_flags(
    conn: &Connection,
    job_id: i64,
    stop: Option<bool>,
    suspended: Option<bool>,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE jobs SET stop_requested = COALESCE(?2, stop_requested), suspended = COALESCE(?3, suspended)
         WHERE id = ?1",
        params![job_id, stop, suspended],
    )?;
    Ok(())
}

pub(super) fn remove(conn: &mut Connection, job_id: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM output WHERE job_id = ?1", [job_id])?;
    tx.execute("DELETE FROM children WHERE job_id = ?1", [job_id])?;
    tx.execute("DELETE FROM jobs WHERE id = ?1", [job_id])?;
    tx.commit()
}

/// Whether child `idx` of job `job_id` exists; its `last_seq` when it does.
pub(super) fn last_seq(conn: &Connection, job_id: i64, idx: u32) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT last_seq FROM children WHERE job_id = ?1 AND idx = ?2",
        params![job_id, idx],
        |r| r.get(0),
    )
    .optional()
}

/// The unfinished children of every job, by job and index.
pub(super) fn unfinished(conn: &Connection) -> rusqlite::Result<Vec<(i64, u32)>> {
    let sql = format!(
        "SELECT job_id, idx FROM children WHERE state NOT IN {} ORDER BY job_id, idx",
        super::finished_list()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        ))
    })?;
    rows.collect()
}
