//! Output chunks in SQL: stored once each, read back in order.

use rusqlite::{params, Connection};

use super::{to_i64, to_u64};
use crate::store::{Chunk, Output, Stream};

/// Stores chunks in one transaction, each exactly once (a chunk already there under its
/// job, child and seq is kept), advancing each child's `last_seq`.
pub(super) fn append(conn: &mut Connection, chunks: &[Chunk]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO output (job_id, idx, seq, stream, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut advance = tx.prepare_cached(
            "UPDATE children SET last_seq = ?3 WHERE job_id = ?1 AND idx = ?2 AND last_seq < ?3",
        )?;
        for c in chunks {
            insert.execute(params![c.job_id, c.idx, to_i64(c.seq), c.stream.code(), c.data])?;
            advance.execute(params![c.job_id, c.idx, to_i64(c.seq)])?;
        }
    }
    tx.commit()
}

/// Output of one child with `after < seq <= upto`, in order, at most `limit` chunks.
pub(super) fn read(
    conn: &Connection,
    job_id: i64,
    idx: u32,
    after: u64,
    upto: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Output>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, stream, data FROM output WHERE job_id = ?1 AND idx = ?2 AND seq > ?3 AND seq <= ?4
         ORDER BY seq LIMIT ?5",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![job_id, idx, to_i64(after), to_i64(upto), limit], |r| {
        Ok(Output {
            seq: to_u64(r.get(0)?),
            stream: Stream::from_code(r.get(1)?),
            data: r.get(2)?,
        })
    })?;
    rows.collect()
}
