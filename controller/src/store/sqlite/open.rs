//! Opening the store: checking its files, setting SQLite up, bringing its schema to this
//! binary's version, and reconciling the jobs in it with the Ids beside it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::error::open_error;
use super::{schema, SqliteStore};
use crate::daemon::statedir;
use crate::store::ids::{self, Ids};
use crate::store::StoreError;

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| open_error(path, source);
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
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        let found = schema::version(&conn).map_err(open_err)?;
        if found > schema::LATEST {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found,
                known: schema::LATEST,
            });
        }
        // Foreign keys are off while tables are rebuilt (a dropped table would cascade).
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(open_err)?;
        schema::migrate(&mut conn, found).map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
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
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            ids: Mutex::new(ids),
            lost: ids::lost_notice(&found, path),
            lost_ids: found.lost,
            claimed: Mutex::new(std::collections::HashSet::new()),
        })
    }
}
