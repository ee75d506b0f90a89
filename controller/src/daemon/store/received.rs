//! The received marks of each child: how far a consuming `rjob receive` has confirmed its
//! output, one mark per stream, so that a line held back on one stream never holds back the
//! other. A mark is a position inside that stream's output ([`Mark`]), so a receive resumes
//! exactly after the last line its client wrote out. `received_seq` stays the prefix of the
//! child's output that both marks cover (HasMoreData).

use rjob_proto::v1 as pb;
use rusqlite::{params, Connection, OptionalExtension as _};

use super::{to_i64, Store, StoreError};

/// A position in one stream of a child's output: that stream's chunks through `seq` whole,
/// and `off` bytes of its next chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub seq: u64,
    pub off: u32,
}

/// The columns of each stream's mark.
fn columns(stream: pb::Stream) -> (&'static str, &'static str) {
    match stream {
        pb::Stream::Stderr => ("received_err_seq", "received_err_off"),
        _ => ("received_out_seq", "received_out_off"),
    }
}

/// Adds the marks' columns to a store made before there were marks per stream; both start
/// at the child's received prefix.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('children') WHERE name = 'received_err_off'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE children ADD COLUMN received_out_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_out_off INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_err_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_err_off INTEGER NOT NULL DEFAULT 0;
             UPDATE children SET received_out_seq = received_seq, received_err_seq = received_seq;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn mark_of(conn: &Connection, job_id: i64, idx: u32, stream: pb::Stream) -> rusqlite::Result<Mark> {
    let (seq, off) = columns(stream);
    let mark = conn
        .query_row(
            &format!("SELECT {seq}, {off} FROM children WHERE job_id = ?1 AND idx = ?2"),
            params![job_id, idx],
            |r| {
                Ok(Mark {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    off: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                })
            },
        )
        .optional()?;
    Ok(mark.unwrap_or_default())
}

impl Store {
    /// A child's received marks, stdout's then stderr's (default marks when the child does
    /// not exist).
    pub fn received_marks(&self, job_id: i64, idx: u32) -> Result<[Mark; 2], StoreError> {
        let conn = self.lock();
        Ok([
            mark_of(&conn, job_id, idx, pb::Stream::Stdout)?,
            mark_of(&conn, job_id, idx, pb::Stream::Stderr)?,
        ])
    }

    /// Moves one stream's received mark forward to `mark` (never back), and the child's
    /// received prefix with it; committed when it returns.
    pub fn mark_received(
        &self,
        job_id: i64,
        idx: u32,
        stream: pb::Stream,
        mark: Mark,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (seq, off) = columns(stream);
        tx.execute(
            &format!(
                "UPDATE children SET {seq} = ?3, {off} = ?4 WHERE job_id = ?1 AND idx = ?2
                 AND ({seq} < ?3 OR ({seq} = ?3 AND {off} < ?4))"
            ),
            params![job_id, idx, to_i64(mark.seq), i64::from(mark.off)],
        )?;
        let last_seq: Option<i64> = tx
            .query_row(
                "SELECT last_seq FROM children WHERE job_id = ?1 AND idx = ?2",
                params![job_id, idx],
                |r| r.get(0),
            )
            .optional()?;
        let Some(last_seq) = last_seq else {
            return Ok(()); // removed meanwhile
        };
        // Everything before the first chunk that either stream has not delivered whole.
        let mut prefix = last_seq;
        for s in [pb::Stream::Stdout, pb::Stream::Stderr] {
            let m = mark_of(&tx, job_id, idx, s)?;
            let next: Option<i64> = tx.query_row(
                "SELECT MIN(seq) FROM output WHERE job_id = ?1 AND idx = ?2 AND stream = ?3 AND seq > ?4",
                params![job_id, idx, s as i32, to_i64(m.seq)],
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
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn marks_move_forward_only_per_stream_and_the_prefix_follows_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        let store = Store::open(&path).unwrap();
        let job = super::super::JobRow {
            id: 0,
            instance_id: "i".into(),
            name: "j".into(),
            command: "c".into(),
            location: "local".into(),
            throttle_limit: 1,
            connect_timeout_ms: 1,
            created_at_ms: 1,
            ended_at_ms: 0,
            stop_requested: false,
            suspended: false,
        };
        let id = store
            .create_job(&job, &Default::default(), &[("h".into(), 1)])
            .unwrap();
        // Output 1..=6: stdout 1, 2, 4, 6; stderr 3, 5.
        let chunks: Vec<super::super::Chunk> = (1..=6)
            .map(|seq| super::super::Chunk {
                job_id: id,
                idx: 0,
                seq,
                stream: if seq == 3 || seq == 5 {
                    pb::Stream::Stderr
                } else {
                    pb::Stream::Stdout
                },
                data: b"abc".to_vec(),
            })
            .collect();
        store.append_output(&chunks).unwrap();
        let out = pb::Stream::Stdout;
        let err = pb::Stream::Stderr;
        store.mark_received(id, 0, out, Mark { seq: 3, off: 2 }).unwrap();
        store.mark_received(id, 0, out, Mark { seq: 3, off: 1 }).unwrap();
        store.mark_received(id, 0, out, Mark { seq: 2, off: 0 }).unwrap();
        let marks = store.received_marks(id, 0).unwrap();
        assert_eq!(marks, [Mark { seq: 3, off: 2 }, Mark::default()]);
        // stderr's 3 is not delivered: nothing before it is the prefix.
        assert_eq!(store.children(id).unwrap()[0].received_seq, 2);
        store.mark_received(id, 0, err, Mark { seq: 5, off: 0 }).unwrap();
        assert_eq!(store.children(id).unwrap()[0].received_seq, 3); // stdout's 4 is partly out
        store.mark_received(id, 0, out, Mark { seq: 6, off: 0 }).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.received_marks(id, 0).unwrap(),
            [Mark { seq: 6, off: 0 }, Mark { seq: 5, off: 0 }]
        );
        assert_eq!(store.children(id).unwrap()[0].received_seq, 6);
    }
}
