//! What retention reads of the SQLite store: each job's age and state, the store's size and
//! a job's.
//!
//! # Size, and why no VACUUM
//! The size is the pages in use: `(page_count - freelist_count) * page_size`. A removed job's
//! output leaves its pages on SQLite's free list (its rows are contiguous in the output
//! table's key, so its pages empty whole), and new output reuses them first: the file stays
//! at about the limit instead of shrinking and growing again. Giving the space back to the
//! file system would take a full `VACUUM` (a rewrite of the whole file, with the store locked
//! meanwhile) or `auto_vacuum = INCREMENTAL`, which an existing store only gets from a full
//! `VACUUM` too; neither is worth it for space the next output takes again.

use rusqlite::{params, Connection};

use super::{finished_list, to_u64};
use crate::store::RetentionRow;

/// Every job with its age, whether it is finished and whether it has unreceived output.
pub(super) fn rows(conn: &Connection) -> rusqlite::Result<Vec<RetentionRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.id, j.created_at_ms, j.ended_at_ms,
                COALESCE(SUM(c.state NOT IN {}), 0),
                COALESCE(SUM(c.last_seq > c.received_seq), 0)
         FROM jobs j LEFT JOIN children c ON c.job_id = j.id
         GROUP BY j.id ORDER BY j.id",
        finished_list()
    ))?;
    let rows = stmt.query_map([], |r| {
        let ended_at_ms: Option<i64> = r.get(2)?;
        let unfinished: i64 = r.get(3)?;
        let unreceived: i64 = r.get(4)?;
        Ok(RetentionRow {
            id: r.get(0)?,
            created_at_ms: r.get(1)?,
            ended_at_ms,
            finished: ended_at_ms.is_some() && unfinished == 0,
            unreceived: unreceived > 0,
        })
    })?;
    rows.collect()
}

/// The store's pages in use, in bytes (the free list left out: see the module doc).
pub(super) fn store_size(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(to_u64(pages.saturating_sub(free).saturating_mul(size)))
}

/// The bytes of one job's output (a range of the output table's key).
pub(super) fn job_size(conn: &Connection, job_id: i64) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COALESCE(SUM(length(data)), 0) FROM output WHERE job_id = ?1",
        params![job_id],
        |r| r.get::<_, i64>(0).map(to_u64),
    )
}
