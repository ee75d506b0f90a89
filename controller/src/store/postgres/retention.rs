//! What retention reads of the PostgreSQL store: each job's age and state, the store's size
//! and a job's. A job's output is its own partition, so its size is that table's, and the
//! space comes back to the file system when retention drops it (no VACUUM needed).

use super::error::DbError;
use super::jobs::partition;
use super::{finished_list, to_u64, PgStore};
use crate::store::RetentionRow;

impl PgStore {
    pub(super) async fn try_retention_rows(&self) -> Result<Vec<RetentionRow>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT j.id, j.created_at_ms, j.ended_at_ms,
                        count(c.idx) FILTER (WHERE c.state NOT IN {}),
                        count(c.idx) FILTER (WHERE c.last_seq > c.received_seq)
                 FROM jobs j LEFT JOIN children c ON c.job_id = j.id
                 GROUP BY j.id ORDER BY j.id",
                finished_list()
            ))
            .await?;
        let rows = client.query(&stmt, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let ended_at_ms: Option<i64> = r.get(2);
                let unfinished: i64 = r.get(3);
                let unreceived: i64 = r.get(4);
                RetentionRow {
                    id: r.get(0),
                    created_at_ms: r.get(1),
                    ended_at_ms,
                    finished: ended_at_ms.is_some() && unfinished == 0,
                    unreceived: unreceived > 0,
                }
            })
            .collect())
    }

    /// The jobs and children tables and every output partition, with their indexes and
    /// TOAST (`pg_total_relation_size`).
    pub(super) async fn try_store_size(&self) -> Result<u64, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT (pg_total_relation_size('jobs') + pg_total_relation_size('children')
                         + coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                                     WHERE inhparent = 'output'::regclass), 0))::bigint",
                &[],
            )
            .await?;
        Ok(to_u64(row.get(0)))
    }

    /// The size of the job's output partition (0 when there is none).
    pub(super) async fn try_job_size(&self, job_id: i64) -> Result<u64, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT coalesce(pg_total_relation_size(to_regclass($1)), 0)::bigint",
                &[&partition(job_id)],
            )
            .await?;
        Ok(to_u64(row.get(0)))
    }
}
