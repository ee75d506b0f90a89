//! The store's schema, versioned with `PRAGMA user_version`: a store at version N has had
//! the first N steps of [`STEPS`], each in its own transaction (with the version it sets).
//! A store from before versions (0) may hold today's tables already: version 1 takes it
//! as it is. A store at a version this binary does not know is never touched.

use rusqlite::{Connection, Transaction};

type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Every schema step, in order: step i brings a store to version i + 1.
const STEPS: &[Step] = &[
    v1_tables,
    v2_not_set_is_null,
    v3_error_budget,
    v4_child_run_as,
    v5_unfinished_index,
];

/// The version this binary writes.
pub(super) const LATEST: i64 = STEPS.len() as i64;

/// The store's version.
pub(super) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings a store at version `from` (at most [`LATEST`]) to [`LATEST`].
pub(super) fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    for (done, step) in (1i64..).zip(STEPS).skip(usize::try_from(from).unwrap_or(0)) {
        let tx = conn.transaction()?;
        step(&tx)?;
        tx.pragma_update(None, "user_version", done)?;
        tx.commit()?;
        tracing::debug!(version = done, "job store schema upgraded");
    }
    Ok(())
}

/// Version 1: the schema of the releases before versions, received marks per stream included.
fn v1_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(V1)?;
    // Stores from before the marks per stream: both marks start at the received prefix.
    let has_marks: bool = tx.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('children') WHERE name = 'received_err_off'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_marks {
        tx.execute_batch(
            "ALTER TABLE children ADD COLUMN received_out_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_out_off INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_err_seq INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE children ADD COLUMN received_err_off INTEGER NOT NULL DEFAULT 0;
             UPDATE children SET received_out_seq = received_seq, received_err_seq = received_seq;",
        )?;
    }
    Ok(())
}

/// Version 2: "not set" is NULL (never 0 or ''): the run id, exit code, reason, start and end
/// times; and a child's `cause` (how it ended). SQLite cannot drop a column's NOT NULL, so
/// `jobs` and `children` are rebuilt (foreign keys are off meanwhile: see `open`).
/// Output keeps its key: a chunk is one (job, child, seq), `INSERT OR IGNORE`d.
fn v2_not_set_is_null(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE jobs_v2 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            command TEXT NOT NULL,
            location TEXT NOT NULL,
            request BLOB NOT NULL,
            throttle_limit INTEGER NOT NULL,
            connect_timeout_ms INTEGER NOT NULL,
            created_at_ms INTEGER NOT NULL,
            ended_at_ms INTEGER,
            stop_requested INTEGER NOT NULL DEFAULT 0,
            suspended INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO jobs_v2
            SELECT id, instance_id, name, command, location, request, throttle_limit,
                   connect_timeout_ms, created_at_ms, NULLIF(ended_at_ms, 0), stop_requested, suspended
            FROM jobs;
        CREATE TABLE children_v2 (
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            host TEXT NOT NULL,
            port INTEGER NOT NULL,
            state INTEGER NOT NULL,
            run_id TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            received_seq INTEGER NOT NULL DEFAULT 0,
            received_out_seq INTEGER NOT NULL DEFAULT 0,
            received_out_off INTEGER NOT NULL DEFAULT 0,
            received_err_seq INTEGER NOT NULL DEFAULT 0,
            received_err_off INTEGER NOT NULL DEFAULT 0,
            exit_code INTEGER,
            signal INTEGER,
            reason TEXT,
            cause TEXT,
            started_at_ms INTEGER,
            ended_at_ms INTEGER,
            PRIMARY KEY (job_id, idx)
        );
        INSERT INTO children_v2
            SELECT job_id, idx, host, port, state, NULLIF(run_id, ''), last_seq, received_seq,
                   received_out_seq, received_out_off, received_err_seq, received_err_off,
                   exit_code, signal, NULLIF(reason, ''), NULL,
                   NULLIF(started_at_ms, 0), NULLIF(ended_at_ms, 0)
            FROM children;
        DROP TABLE children;
        DROP TABLE jobs;
        ALTER TABLE jobs_v2 RENAME TO jobs;
        ALTER TABLE children_v2 RENAME TO children;",
    )
}

/// Version 3: a job's error budget (`--max-errors`), NULL for none.
fn v3_error_budget(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE jobs ADD COLUMN max_errors INTEGER;")
}

/// Version 4: a child's own run-as user (the inventory's or the config's for its host), NULL:
/// the job's request's.
fn v4_child_run_as(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE children ADD COLUMN run_as TEXT;")
}

/// Version 5: an index of the unfinished children of each job (as PostgreSQL's
/// `children_unfinished`), so that a child's end finds whether it was its job's last by
/// the children still going, not by a scan of the job's every child (10,000 ends of a
/// 10,000-host job were 10^8 rows read). The list is [`super::finished_list`]'s; a query
/// must name it as written here for SQLite to use the index.
fn v5_unfinished_index(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(&format!(
        "CREATE INDEX children_unfinished ON children (job_id) WHERE state NOT IN {};",
        super::finished_list()
    ))
}

/// The tables of the releases before versions (their `received_*` mark columns come after).
pub(super) const V1: &str = "
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
