//! The received mark of each child: how far a consuming `rjob receive` has confirmed its output.
//! A mark is a position inside the output, (`received_seq`, `received_off`): every chunk
//! through `received_seq` whole, and the first `received_off` bytes of the next one, so that a
//! receive resumes exactly after the last line its client wrote out.

use rusqlite::{params, Connection};

use super::{to_i64, Store, StoreError};

/// A position in one child's output: chunks through `seq` whole, `off` bytes of chunk seq + 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mark {
    pub seq: u64,
    pub off: u32,
}

/// Adds the offset column to a store made before marks had one.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('children') WHERE name = 'received_off'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE children ADD COLUMN received_off INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}

impl Store {
    /// A child's received mark (the default mark when the child does not exist).
    pub fn received_mark(&self, job_id: i64, idx: u32) -> Result<Mark, StoreError> {
        let mark = self.lock().query_row(
            "SELECT received_seq, received_off FROM children WHERE job_id = ?1 AND idx = ?2",
            params![job_id, idx],
            |r| {
                Ok(Mark {
                    seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    off: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                })
            },
        );
        match mark {
            Ok(m) => Ok(m),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(Mark::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a child's received mark forward to `mark` (never back), committed when it returns.
    pub fn mark_received(&self, job_id: i64, idx: u32, mark: Mark) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE children SET received_seq = ?3, received_off = ?4
             WHERE job_id = ?1 AND idx = ?2
               AND (received_seq < ?3 OR (received_seq = ?3 AND received_off < ?4))",
            params![job_id, idx, to_i64(mark.seq), i64::from(mark.off)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn a_mark_moves_forward_only_and_survives_reopening() {
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
        store.mark_received(id, 0, Mark { seq: 3, off: 7 }).unwrap();
        store.mark_received(id, 0, Mark { seq: 3, off: 2 }).unwrap();
        store.mark_received(id, 0, Mark { seq: 2, off: 90 }).unwrap();
        assert_eq!(store.received_mark(id, 0).unwrap(), Mark { seq: 3, off: 7 });
        store.mark_received(id, 0, Mark { seq: 4, off: 0 }).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.received_mark(id, 0).unwrap(), Mark { seq: 4, off: 0 });
        assert_eq!(store.children(id).unwrap()[0].received_seq, 4);
    }
}
