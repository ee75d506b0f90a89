//! The store's schema, and opening it: checking its files, setting SQLite up, migrating, and
//! reconciling the jobs in it with the Ids beside it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{received, Store, StoreError};
use crate::daemon::ids::Ids;
use crate::daemon::statedir;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    command TEXT NOT NULL,
    location TEXT NOT NULL,
    request BLOB NOT NULL,
    throttle_limit INTEGER NOT NULL,
    connect_timeout_ms INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    ended_at_ms INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    suspended INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS children (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    state INTEGER NOT NULL,
    run_id TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    received_seq INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    started_at_ms INTEGER NOT NULL DEFAULT 0,
    ended_at_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS output (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, idx, seq)
) WITHOUT ROWID;
";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| crate::daemon::store_error::open_error(path, source);
        // The store and SQLite's files beside it: never through a planted symlink, never
        // another user's, mode 0600 (SQLite gives its -wal and -shm the mode of the store).
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            statedir::check_file(Path::new(&name))?;
        }
        drop(statedir::open_private(path, false)?);
        // SQLite opens the store, its -wal and -shm with O_NOFOLLOW itself. (Not
        // SQLITE_OPEN_NOFOLLOW: that refuses a symlink anywhere in the path, /home included.)
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        received::migrate(&conn).map_err(open_err)?;
        let in_store: Vec<i64> = {
            let mut stmt = conn
                .prepare("SELECT id FROM jobs ORDER BY id")
                .map_err(open_err)?;
            let ids = stmt
                .query_map([], |r| r.get(0))
                .map_err(open_err)?
                .collect::<Result<_, _>>()
                .map_err(open_err)?;
            ids
        };
        let (ids, found) = Ids::open(&path.with_extension("ids"), &in_store)?;
        Ok(Store {
            conn: Mutex::new(conn),
            ids: Mutex::new(ids),
            lost: crate::daemon::ids::lost_notice(&found, path),
            lost_ids: found.lost,
        })
    }
}
