//! Jobs and their children in PostgreSQL: creating (with the job's output partition),
//! reading, the children's progress, and removing (dropping the partition).

use tokio_postgres::Row;

use super::error::DbError;
use super::lease::fence_one;
use super::{finished_list, to_i64, to_u64, PgStore};
use crate::state::State;
use crate::store::{state_code, state_from_code, ChildEnd, ChildRow, JobRow, NewJob};

/// The name of job `id`'s output partition.
pub(super) fn partition(id: i64) -> String {
    format!("output_{id}")
}

fn job_row(r: &Row) -> JobRow {
    JobRow {
        id: r.get(0),
        instance_id: r.get(1),
        name: r.get(2),
        command: r.get(3),
        location: r.get(4),
        throttle_limit: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        connect_timeout_ms: to_u64(r.get(6)),
        created_at_ms: r.get(7),
        ended_at_ms: r.get(8),
        stop_requested: r.get(9),
        suspended: r.get(10),
        max_errors: r.get::<_, Option<i32>>(11).and_then(|n| u32::try_from(n).ok()),
    }
}

pub(super) fn child_row(r: &Row) -> ChildRow {
    ChildRow {
        idx: u32::try_from(r.get::<_, i32>(0)).unwrap_or(0),
        host: r.get(1),
        port: u16::try_from(r.get::<_, i32>(2)).unwrap_or(0),
        state: state_from_code(r.get(3)),
        run_id: r.get(4),
        last_seq: to_u64(r.get(5)),
        received_seq: to_u64(r.get(6)),
        exit_code: r.get(7),
        signal: r.get(8),
        reason: r.get(9),
        cause: r.get(10),
        started_at_ms: r.get(11),
        ended_at_ms: r.get(12),
        run_as: r.get(13),
    }
}

/// The columns [`child_row`] reads, in order.
pub(super) const CHILD_COLUMNS: &str =
    "idx, host, port, state, run_id, last_seq, received_seq, exit_code, signal,
     reason, cause, started_at_ms, ended_at_ms, run_as";

const JOB_COLUMNS: &str = "id, instance_id, name, command, location, throttle_limit, connect_timeout_ms,
     created_at_ms, ended_at_ms, stop_requested, suspended, max_errors";

impl PgStore {
    /// Creates the job, its children and its output partition in one transaction.
    pub(super) async fn try_create_job(&self, job: &NewJob) -> Result<i64, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let id: i64 = tx.query_one("SELECT nextval('job_ids')", &[]).await?.get(0);
        let name = if job.name.is_empty() {
            format!("Job{id}")
        } else {
            job.name.clone()
        };
        let throttle = i32::try_from(job.throttle_limit).unwrap_or(i32::MAX);
        let max_errors = job.max_errors.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        tx.execute(
            "INSERT INTO jobs (id, instance_id, name, command, location, request, throttle_limit,
                               connect_timeout_ms, created_at_ms, max_errors, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &id,
                &job.instance_id,
                &name,
                &job.command,
                &job.location,
                &job.request,
                &throttle,
                &to_i64(job.connect_timeout_ms),
                &job.created_at_ms,
                &max_errors,
                &self.node,
            ],
        )
        .await?;
        let idxs: Vec<i32> = (0..job.hosts.len())
            .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
            .collect();
        let hosts: Vec<&str> = job.hosts.iter().map(|(h, _)| h.as_str()).collect();
        let ports: Vec<i32> = job.hosts.iter().map(|(_, p)| i32::from(*p)).collect();
        let users: Vec<Option<&str>> = (0..job.hosts.len()).map(|i| job.run_as_of(i)).collect();
        tx.execute(
            "INSERT INTO children (job_id, idx, host, port, state, run_as)
             SELECT $1, i, h, p, $5, u
             FROM unnest($2::integer[], $3::text[], $4::integer[], $6::text[]) AS t (i, h, p, u)",
            &[&id, &idxs, &hosts, &ports, &state_code(State::NotStarted), &users],
        )
        .await?;
        // Made apart and attached (SHARE UPDATE EXCLUSIVE on `output`), so that other
        // jobs' output keeps flowing meanwhile; the CHECK spares the attach its scan. Like
        // `output` in all (its key, its column's compression).
        let part = partition(id);
        tx.batch_execute(&format!(
            "CREATE TABLE {part} (LIKE output INCLUDING ALL, CHECK (job_id = {id}));
             ALTER TABLE output ATTACH PARTITION {part} FOR VALUES IN ({id});"
        ))
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The Id of the job with this instance Id, if it was stored.
    pub(super) async fn job_by_instance(&self, instance_id: &str) -> Result<Option<i64>, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT id FROM jobs WHERE instance_id = $1", &[&instance_id])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn try_job_request(&self, id: i64) -> Result<Option<Vec<u8>>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT request FROM jobs WHERE id = $1")
            .await?;
        Ok(client.query_opt(&stmt, &[&id]).await?.map(|r| r.get(0)))
    }

    /// Every job by Id, or only job `id`.
    pub(super) async fn try_jobs(&self, id: Option<i64>) -> Result<Vec<JobRow>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE $1::bigint IS NULL OR id = $1 ORDER BY id"
            ))
            .await?;
        let rows = client.query(&stmt, &[&id]).await?;
        Ok(rows.iter().map(job_row).collect())
    }

    pub(super) async fn try_children(&self, job_id: i64) -> Result<Vec<ChildRow>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {CHILD_COLUMNS} FROM children WHERE job_id = $1 ORDER BY idx"
            ))
            .await?;
        let rows = client.query(&stmt, &[&job_id]).await?;
        Ok(rows.iter().map(child_row).collect())
    }

    pub(super) async fn try_child_states(&self, job_id: i64) -> Result<Vec<State>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT state FROM children WHERE job_id = $1 ORDER BY idx")
            .await?;
        let rows = client.query(&stmt, &[&job_id]).await?;
        Ok(rows.iter().map(|r| state_from_code(r.get(0))).collect())
    }

    /// One statement of the child's owner on one child (`$1` job, `$2` index), with
    /// `params` from `$3` on: fenced by this daemon's lease ([`fence_one`]), and marked as
    /// written by it.
    pub(super) async fn child_update(
        &self,
        sql: &str,
        job_id: i64,
        idx: u32,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        let epoch = self.lease_epoch();
        fence_one(&tx, epoch, job_id, idx).await?;
        let stmt = tx.prepare_cached(sql).await?;
        let mut all: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&job_id, &idx];
        all.extend_from_slice(params);
        tx.execute(&stmt, &all).await?;
        self.written_by(&tx, job_id, idx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a child's row as written by this daemon (when it is registered).
    pub(super) async fn written_by(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        job_id: i64,
        idx: i32,
    ) -> Result<(), DbError> {
        let epoch = self.lease_epoch();
        if epoch != 0 {
            let stmt = tx
                .prepare_cached("UPDATE children SET written_by = $3 WHERE job_id = $1 AND idx = $2")
                .await?;
            tx.execute(&stmt, &[&job_id, &idx, &epoch]).await?;
        }
        Ok(())
    }

    pub(super) async fn try_set_child_state(
        &self,
        job_id: i64,
        idx: u32,
        state: State,
        reason: Option<&str>,
    ) -> Result<(), DbError> {
        let sql = format!(
            "UPDATE children SET state = $3, reason = $4 WHERE job_id = $1 AND idx = $2
             AND state NOT IN {}",
            finished_list()
        );
        self.child_update(&sql, job_id, idx, &[&state_code(state), &reason])
            .await
    }

    /// Records how a child ended, and the job's end once every child has. The job row is
    /// locked first, so that of two children ending at once the second sees the first.
    pub(super) async fn try_finish_child(
        &self,
        job_id: i64,
        idx: u32,
        end: &ChildEnd,
    ) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job_id])
            .await?;
        let idx = i32::try_from(idx).unwrap_or(i32::MAX);
        fence_one(&tx, self.lease_epoch(), job_id, idx).await?;
        self.written_by(&tx, job_id, idx).await?;
        tx.execute(
            "UPDATE children SET state = $3, exit_code = $4, signal = $5, reason = $6, cause = $7,
                                 ended_at_ms = $8
             WHERE job_id = $1 AND idx = $2",
            &[
                &job_id,
                &idx,
                &state_code(end.state),
                &end.exit_code,
                &end.signal,
                &end.reason,
                &end.cause,
                &end.ended_at_ms,
            ],
        )
        .await?;
        tx.execute(
            &format!(
                "UPDATE jobs SET ended_at_ms = $2 WHERE id = $1 AND NOT EXISTS
                 (SELECT 1 FROM children WHERE job_id = $1 AND state NOT IN {})",
                finished_list()
            ),
            &[&job_id, &end.ended_at_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn try_set_job_flags(
        &self,
        job_id: i64,
        stop: Option<bool>,
        suspended: Option<bool>,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE jobs SET stop_requested = coalesce($2, stop_requested),
                                 suspended = coalesce($3, suspended)
                 WHERE id = $1",
            )
            .await?;
        client.execute(&stmt, &[&job_id, &stop, &suspended]).await?;
        Ok(())
    }

    /// Removes a job: its output partition is dropped whole, its children go with it.
    pub(super) async fn try_remove_job(&self, job_id: i64) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", partition(job_id)))
            .await?;
        tx.execute("DELETE FROM jobs WHERE id = $1", &[&job_id]).await?;
        tx.commit().await?;
        Ok(())
    }
}
