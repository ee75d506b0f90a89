//! The received marks of each child in SQL: how far a consuming `rjob receive` has confirmed
//! its output, one mark per stream, so that a line held back on one stream never holds back
//! the other. A mark is a position inside that stream's output ([`Mark`]), so a receive
//! resumes exactly after the last line its client wrote out. `received_seq` stays the prefix
//! of the child's output that both marks cover (HasMoreData).

use rusqlite::{params, Connection, OptionalExtension as _};

use super::{jobs, to_i64, to_u64};
use crate::store::{Mark, Stream};

/// The columns of each stream's mark.
fn columns(stream: Stream) -> (&'static str, &'static str) {
    match stream {
        Stream::Stderr => ("received_err_seq", "received_err_off"),
        Stream::Stdout => ("received_out_seq", "received_out_off"),
    }
}

fn mark_of(conn: &Connection, job_id: i64, idx: u32, stream: Stream) -> rusqlite::Result<Mark> {
    let (seq, off) = columns(stream);
    let mark = conn
        .query_row(
            &format!("SELECT {seq}, {off} FROM children WHERE job_id = ?1 AND idx = ?2"),
            params![job_id, idx],
            |r| {
                Ok(Mark {
                    seq: to_u64(r.get(0)?),
                    off: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                })
            },
        )
        .optional()?;
    Ok(mark.unwrap_or_default())
}

/// A child's received marks, stdout's then stderr's (default marks when the child does not
/// exist).
pub(super) fn marks(conn: &Connection, job_id: i64, idx: u32) -> rusqlite::Result<[Mark; 2]> {
    Ok([
        mark_of(conn, job_id, idx, Stream::Stdout)?,
        mark_of(conn, job_id, idx, Stream::Stderr)?,
    ])
}

/// Moves one stream's received mark forward to `mark` (never back), and the child's received
/// prefix with it, in one transaction.
pub(super) fn advance(
    conn: &mut Connection,
    job_id: i64,
    idx: u32,
    stream: Stream,
    mark: Mark,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let (seq, off) = columns(stream);
    tx.execute(
        &format!(
            "UPDATE children SET {seq} = ?3, {off} = ?4 WHERE job_id = ?1 AND idx = ?2
             AND ({seq} < ?3 OR ({seq} = ?3 AND {off} < ?4))"
        ),
        params![job_id, idx, to_i64(mark.seq), i64::from(mark.off)],
    )?;
    let Some(last_seq) = jobs::last_seq(&tx, job_id, idx)? else {
        return Ok(()); // removed meanwhile
    };
    let prefix = covered_prefix(&tx, job_id, idx, last_seq)?;
    tx.execute(
        "UPDATE children SET received_seq = ?3 WHERE job_id = ?1 AND idx = ?2 AND received_seq < ?3",
        params![job_id, idx, prefix],
    )?;
    tx.commit()
}

/// Everything before the first chunk that its stream's mark does not cover whole (`last_seq`
/// when every chunk is covered). The prefix only grows, so the scan starts where it stood
/// (or where both marks are, whichever is further) and stops at the first chunk not covered:
/// each chunk is looked at about once over a whole receive, not once per confirmation (a
/// search per stream for its next chunk walked every chunk after the mark, each time).
fn covered_prefix(conn: &Connection, job_id: i64, idx: u32, last_seq: i64) -> rusqlite::Result<i64> {
    let marks = marks(conn, job_id, idx)?;
    let received: i64 = conn.query_row(
        "SELECT received_seq FROM children WHERE job_id = ?1 AND idx = ?2",
        params![job_id, idx],
        |r| r.get(0),
    )?;
    let both = to_i64(marks[0].seq.min(marks[1].seq));
    let from = received.max(both);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, stream FROM output WHERE job_id = ?1 AND idx = ?2 AND seq > ?3 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![job_id, idx, from])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let stream = Stream::from_code(row.get(1)?);
        let mark = marks[usize::from(stream == Stream::Stderr)];
        if to_u64(seq) > mark.seq {
            return Ok((seq - 1).min(last_seq));
        }
    }
    Ok(last_seq)
}
