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
    // Everything before the first chunk that either stream has not delivered whole.
    let mut prefix = last_seq;
    for s in Stream::BOTH {
        let m = mark_of(&tx, job_id, idx, s)?;
        let next: Option<i64> = tx.query_row(
            "SELECT MIN(seq) FROM output WHERE job_id = ?1 AND idx = ?2 AND stream = ?3 AND seq > ?4",
            params![job_id, idx, s.code(), to_i64(m.seq)],
            |r| r.get(0),
        )?;
        if let Some(next) = next {
            prefix = prefix.min(next - 1);
        }
    }
    tx.execute(
        "UPDATE children SET received_seq = ?3 WHERE job_id = ?1 AND idx = ?2 AND received_seq < ?3",
        params![job_id, idx, prefix],
    )?;
    tx.commit()
}
