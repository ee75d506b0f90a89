//! Opening stores that earlier releases wrote, and one this binary does not know.

#![allow(clippy::unwrap_used)] // tests

use rusqlite::Connection;

use super::{schema, SqliteStore};
use crate::state::State;
use crate::store::{state_code, JobStore, Mark, Output, StoreError, Stream};

/// A store as the releases before versions wrote it (user_version 0): a job with a finished
/// child and one never started, output on both streams, and (`marks`) the received marks per
/// stream, which the last of those releases added.
fn old_store(path: &std::path::Path, marks: bool) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(schema::V1).unwrap();
    if marks {
        conn.execute_batch(
            "ALTER TABLE children ADD COLUMN received_out_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_out_off INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_err_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_err_off INTEGER NOT NULL DEFAULT 0;",
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO jobs (id, instance_id, name, command, location, request, throttle_limit,
                           connect_timeout_ms, created_at_ms, ended_at_ms, stop_requested, suspended)
         VALUES (3, 'inst', 'old', 'echo', 'remote', x'0a0b', 4, 2000, 100, 0, 1, 0)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO children (job_id, idx, host, port, state, run_id, last_seq, received_seq,
                               exit_code, signal, reason, started_at_ms, ended_at_ms)
         VALUES (3, 0, 'a', 22, ?1, 'run-a', 2, 1, 0, NULL, '', 110, 150),
                (3, 1, 'b', 23, ?2, NULL, 0, 0, NULL, NULL, '', 0, 0)",
        [state_code(State::Completed), state_code(State::NotStarted)],
    )
    .unwrap();
    if marks {
        conn.execute_batch("UPDATE children SET received_out_seq = 1, received_out_off = 2 WHERE idx = 0")
            .unwrap();
    }
    conn.execute_batch(
        "INSERT INTO output (job_id, idx, seq, stream, data) VALUES (3, 0, 1, 1, x'6f7574'), (3, 0, 2, 2, x'657272')",
    )
    .unwrap();
    assert_eq!(schema::version(&conn).unwrap(), 0);
}

#[tokio::test]
async fn a_store_from_before_versions_is_upgraded_and_every_row_reads_back() {
    for marks in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.db");
        old_store(&path, marks);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(schema::version(&store.lock()).unwrap(), schema::LATEST);
        assert_eq!(store.lost_notice(), None);
        let jobs = store.jobs().await.unwrap();
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(
            (job.id, job.instance_id.as_str(), job.name.as_str()),
            (3, "inst", "old")
        );
        assert_eq!((job.command.as_str(), job.location.as_str()), ("echo", "remote"));
        assert_eq!(
            (job.throttle_limit, job.connect_timeout_ms, job.created_at_ms),
            (4, 2000, 100)
        );
        assert_eq!(
            (job.ended_at_ms, job.stop_requested, job.suspended),
            (None, true, false)
        );
        assert_eq!(store.job_request(3).await.unwrap(), [0x0a, 0x0b]);
        let c = store.children(3).await.unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].host.as_str(), c[0].port, c[0].state),
            ("a", 22, State::Completed)
        );
        assert_eq!(
            (c[0].run_id.as_deref(), c[0].last_seq, c[0].received_seq),
            (Some("run-a"), 2, 1)
        );
        assert_eq!(
            (c[0].exit_code, c[0].signal, c[0].reason.as_deref()),
            (Some(0), None, None)
        );
        assert_eq!(
            (c[0].started_at_ms, c[0].ended_at_ms, c[0].cause.as_deref()),
            (Some(110), Some(150), None)
        );
        assert_eq!(
            (c[1].host.as_str(), c[1].port, c[1].state),
            ("b", 23, State::NotStarted)
        );
        assert_eq!(
            (c[1].run_id.as_deref(), c[1].exit_code, c[1].reason.as_deref()),
            (None, None, None)
        );
        assert_eq!((c[1].started_at_ms, c[1].ended_at_ms), (None, None));
        let out = store.output(3, 0, 0, u64::MAX, 10).await.unwrap();
        let want = [
            Output {
                seq: 1,
                stream: Stream::Stdout,
                data: b"out".to_vec(),
            },
            Output {
                seq: 2,
                stream: Stream::Stderr,
                data: b"err".to_vec(),
            },
        ];
        assert_eq!(out, want);
        // Marks: kept, or (from before marks) both at the received prefix.
        let marks_now = store.received_marks(3, 0).await.unwrap();
        let want_marks = if marks {
            [Mark { seq: 1, off: 2 }, Mark::default()]
        } else {
            [Mark { seq: 1, off: 0 }, Mark { seq: 1, off: 0 }]
        };
        assert_eq!(marks_now, want_marks);
        // Foreign keys hold on the rebuilt tables, and Ids go on from the old store's.
        let fk: Vec<String> = store
            .lock()
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(fk.is_empty(), "{fk:?}");
        let id = store
            .create_job(&crate::store::conformance::new_job("new", 1))
            .await
            .unwrap();
        assert_eq!(id, 4);
        store.remove_job(3).await.unwrap();
        let left: i64 = store
            .lock()
            .query_row("SELECT COUNT(*) FROM output", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
        drop(store);
        // Opened again: already at the latest version, nothing changes.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.jobs().await.unwrap().len(), 1);
    }
}

#[test]
fn a_store_newer_than_this_binary_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
        .unwrap();
    drop(conn);
    let Err(e) = SqliteStore::open(&path) else {
        panic!("a newer store was opened")
    };
    assert!(matches!(e, StoreError::TooNew { found: 99, .. }), "{e:?}");
    let line = e.to_string();
    assert!(!line.contains('\n') && line.contains("version 99"), "{line}");
    let conn = Connection::open(&path).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), 99);
}
