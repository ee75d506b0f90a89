//! The schema, as versioned migrations: `schema_version` holds the version reached, and
//! each migration runs in a transaction of its own, under an advisory lock, so that several
//! daemons starting on one database at once migrate it once.

use deadpool_postgres::Pool;

use super::error::DbError;
use crate::store::{Fault, StoreError};

/// The advisory lock of migrations (any constant of ours: "rjob" in ASCII).
const MIGRATION_LOCK: i64 = 0x726a_6f62;

/// Migration `n` (from 1) takes the schema from version `n - 1` to `n`. Never edit one
/// that was released: add the next.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: jobs, children, output. Job Ids come from a sequence, so they are never handed out
    // twice. Output is partitioned by job, a partition per job (created with the job), so
    // that removing a job drops a table instead of deleting its rows one by one. Output is
    // compressed with lz4 where the server has it (PostgreSQL 14 and later, built with
    // lz4): faster to ingest than both pglz (the default) and no compression, measured (see
    // the backend's module doc).
    "CREATE SEQUENCE job_ids AS bigint START 1;
     CREATE TABLE jobs (
         id bigint PRIMARY KEY,
         instance_id text NOT NULL UNIQUE,
         name text NOT NULL,
         command text NOT NULL,
         location text NOT NULL,
         request bytea NOT NULL,
         throttle_limit integer NOT NULL,
         connect_timeout_ms bigint NOT NULL,
         created_at_ms bigint NOT NULL,
         ended_at_ms bigint,
         stop_requested boolean NOT NULL DEFAULT false,
         suspended boolean NOT NULL DEFAULT false
     );
     CREATE TABLE children (
         job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
         idx integer NOT NULL,
         host text NOT NULL,
         port integer NOT NULL,
         state integer NOT NULL,
         run_id text,
         last_seq bigint NOT NULL DEFAULT 0,
         received_seq bigint NOT NULL DEFAULT 0,
         received_out_seq bigint NOT NULL DEFAULT 0,
         received_out_off integer NOT NULL DEFAULT 0,
         received_err_seq bigint NOT NULL DEFAULT 0,
         received_err_off integer NOT NULL DEFAULT 0,
         exit_code integer,
         signal integer,
         reason text,
         cause text,
         started_at_ms bigint,
         ended_at_ms bigint,
         PRIMARY KEY (job_id, idx)
     );
     CREATE TABLE output (
         job_id bigint NOT NULL,
         idx integer NOT NULL,
         seq bigint NOT NULL,
         stream smallint NOT NULL,
         data bytea NOT NULL,
         PRIMARY KEY (job_id, idx, seq)
     ) PARTITION BY LIST (job_id);
     DO $$ BEGIN
         IF EXISTS (SELECT 1 FROM pg_settings
                    WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
             EXECUTE 'ALTER TABLE output ALTER COLUMN data SET COMPRESSION lz4';
         END IF;
     END $$;",
    // 2: a job's error budget (`--max-errors`), as a count of hosts; NULL: none.
    "ALTER TABLE jobs ADD COLUMN max_errors integer;",
    // 3: a child's own run-as user (the inventory's or the config's for its host); NULL: the
    // job's request's.
    "ALTER TABLE children ADD COLUMN run_as text;",
    // 4: several daemons on one store. Each registers (an Id from a sequence, never handed
    // out twice: its lease epoch) and heartbeats on the database's clock; a child is owned
    // by the daemon that claimed it, and every write of an owner is fenced by its lease.
    // `written_by` says which daemon wrote a child's row or an output chunk last; a job's
    // `node` is the daemon (host and state directory) that created it, the only one that
    // may run a local job.
    "CREATE SEQUENCE daemon_ids AS bigint START 1;
     CREATE TABLE daemons (
         id bigint PRIMARY KEY,
         node text NOT NULL,
         registered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
         heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
         expires_at timestamptz NOT NULL
     );
     ALTER TABLE jobs ADD COLUMN node text;
     ALTER TABLE children ADD COLUMN owner bigint;
     ALTER TABLE children ADD COLUMN written_by bigint;
     ALTER TABLE output ADD COLUMN written_by bigint;
     CREATE INDEX children_unfinished ON children (job_id) WHERE state NOT IN (3, 4, 5);",
    // 5: which agent is dialled in to which daemon (`rjob-agent --connect`): a daemon claims
    // no child whose agent is connected to another live daemon.
    "CREATE TABLE agents (
         name text NOT NULL,
         daemon bigint NOT NULL,
         PRIMARY KEY (name, daemon)
     );",
];

/// The version this rjob brings the schema to.
pub(super) fn latest() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the database's schema to [`latest`], one migration per transaction. A schema
/// newer than this rjob knows is [`StoreError::TooNew`], and left as it is.
pub(super) async fn migrate(pool: &Pool, url: &str) -> Result<(), StoreError> {
    loop {
        let mut client = pool.get().await.map_err(|e| open_error(url, e.into()))?;
        let step = async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")
                .await?;
            let version: Option<i64> = tx
                .query_one("SELECT max(version) FROM schema_version", &[])
                .await?
                .get(0);
            let version = version.unwrap_or(0);
            if version >= latest() {
                return Ok::<_, DbError>(Some(version));
            }
            let index = usize::try_from(version).unwrap_or(0);
            tx.batch_execute(MIGRATIONS[index]).await?;
            tx.execute("DELETE FROM schema_version", &[]).await?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&(version + 1)],
            )
            .await?;
            tx.commit().await?;
            tracing::info!(version = version + 1, "job store: schema migrated");
            Ok(None)
        };
        match step.await {
            Ok(Some(version)) if version > latest() => {
                return Err(StoreError::TooNew {
                    path: super::connect::redacted(url).into(),
                    found: version,
                    known: latest(),
                })
            }
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {} // the next one
            Err(e) => return Err(open_error(url, e)),
        }
    }
}

/// The database could not be opened (reached, or migrated).
pub(super) fn open_error(url: &str, e: DbError) -> StoreError {
    if e.fault() == Fault::Unavailable {
        return StoreError::Unreachable {
            store: super::connect::redacted(url),
            detail: e.detail(),
        };
    }
    StoreError::Open {
        path: super::connect::redacted(url).into(),
        fault: e.fault(),
        detail: e.detail(),
    }
}
