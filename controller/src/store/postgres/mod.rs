//! The job store on PostgreSQL, so that it can live apart from the daemon (and, later, be
//! shared by several): `rjob serve --store postgres://…`.
//!
//! # Crates, and why
//! tokio-postgres (the rust-postgres project: pure Rust, async, the most used PostgreSQL
//! client of the ecosystem), deadpool-postgres for the pool (small, tokio-native, with a
//! statement cache per connection), and tokio-postgres-rustls for TLS, on the ring provider
//! and the one rustls 0.23 and tokio-rustls 0.26 the project already builds (`cargo tree -i
//! rustls` shows one of each). sqlx was the alternative: its compile-time checked queries
//! want a database (or a committed query cache) at build time, and it brings a second
//! async SQL stack beside rusqlite for no gain here.
//!
//! # Layout
//! - `jobs` and `children` as in SQLite; Ids from a sequence, never handed out twice.
//! - `output` keyed `(job_id, idx, seq)`, the stream a column (a child's `seq` numbers its
//!   chunks over both streams), partitioned by list of job Id: one partition per job,
//!   created and attached with the job, dropped whole when the job is removed. Nothing is
//!   deleted row by row, and a removal leaves no dead tuples to vacuum. (A partition per job
//!   suits thousands of jobs kept at a time; retention keeps it so.)
//! - Output batches go in as one INSERT of unnested arrays, `ON CONFLICT DO NOTHING`:
//!   storing a chunk twice keeps the first, so a retried batch is harmless.
//! - Output is compressed with lz4 where the server has it (PostgreSQL 14+, as Debian's):
//!   measured on 128 MiB batches of 64 chunks (debug build, a Unix socket, a shared 2-core
//!   machine, so noisy), lz4 ingested log-like text at 63-87 MB/s against 32-49 MB/s for
//!   pglz (the default) and 45-78 MB/s uncompressed, in a fifth of the space; random bytes
//!   went in at 55-75 MB/s either way. SQLite took the same batches at 21-43 MB/s.
//! - Migrations are versioned ([`schema`]).
//!
//! # Several daemons on one database
//! - Each daemon hears the others' changes through LISTEN/NOTIFY ([`listen`]): one NOTIFY
//!   per committed output batch (inside its transaction), per child run, state and end, per
//!   flag change and per removal, never one per chunk. A daemon listens on a connection of
//!   its own, made again (with a resync) when it is lost.
//! - A consuming receive is exclusive across the daemons: a session advisory lock on a
//!   connection of the receive's own ([`claim`]), gone with the connection.
//! - Output of a job another daemon removed is let go on insert (its partition is gone).
//!
//! # A lost connection
//! The pool drops connections the server closed and makes new ones. A call that failed for
//! a lost connection (or a deadlock) is tried again for about 15 s, long enough for a
//! server restart, then reported as [`crate::store::Fault::Unavailable`]. Every call is safe
//! to try again: writes are conditional or idempotent, and a job whose creation committed
//! unseen is found again by its instance Id.
//!
//! # URLs
//! `postgres://user:password@host:port/db?sslmode=require`, or a Unix socket:
//! `postgres:///db?host=/run/postgresql`. `sslmode` is `disable`, `prefer` (the default)
//! or `require`; with TLS, the server's certificate is checked against `sslrootcert=FILE`
//! (PEM), else the system's CA bundle.

mod agents;
mod claim;
mod connect;
mod error;
mod jobs;
mod lease;
mod listen;
mod output;
mod retention;
mod schema;

use std::sync::atomic::{AtomicI64, Ordering};

use deadpool_postgres::Pool;

pub use connect::{is_postgres_url, redacted};
use error::retrying;
use listen::Kind;

use crate::state::State;
use crate::store::lease::Timing;
use crate::store::{
    state_code, ChildEnd, ChildRow, Chunk, Claimed, JobRow, JobStore, Mark, NewJob, Notice, Output,
    ReceiveClaim, RetentionRow, StoreError, Stream,
};

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The finished states as an SQL list, `(3, 4, 5)`, from [`State::FINISHED`].
fn finished_list() -> String {
    let codes: Vec<String> = State::FINISHED
        .iter()
        .map(|s| state_code(*s).to_string())
        .collect();
    format!("({})", codes.join(", "))
}

pub struct PgStore {
    pool: Pool,
    /// This daemon, as its jobs and registrations name it (host and state directory).
    node: String,
    /// Its registration's Id, the lease epoch (0: not registered, no fence).
    epoch: AtomicI64,
    timing: Timing,
    /// The database, for the connections of their own (LISTEN, receive claims).
    target: connect::Target,
    /// This store's mark on the notices it sends ([`listen`]): its own are not heard again.
    origin: String,
}

impl PgStore {
    /// Connects to the database at `url` and brings its schema up to date, as a tool would
    /// (on this host, with the default lease timing).
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_as(url, &default_node(None), Timing::default()).await
    }

    /// [`PgStore::open`] for the daemon `node` (host and state directory), with its lease
    /// timing.
    pub async fn open_as(url: &str, node: &str, timing: Timing) -> Result<PgStore, StoreError> {
        let target = connect::Target::new(url, timing.ttl / 2)?;
        let pool = connect::pool(url, &target)?;
        schema::migrate(&pool, url).await?;
        tracing::info!(store = %redacted(url), "job store: PostgreSQL");
        Ok(PgStore {
            pool,
            target,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            node: node.to_string(),
            epoch: AtomicI64::new(0),
            timing,
        })
    }
}

impl PgStore {
    fn lease_epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// The name of a daemon: its host, and its state directory when there is one.
pub fn default_node(state_dir: Option<&std::path::Path>) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    match state_dir {
        Some(dir) => format!("{host}:{}", dir.display()),
        None => host,
    }
}

#[async_trait::async_trait]
impl JobStore for PgStore {
    fn lost_notice(&self) -> Option<&str> {
        None // the database is the one record: nothing beside it to lose track of
    }

    fn was_lost(&self, _id: i64) -> bool {
        false
    }

    async fn create_job(&self, job: &NewJob) -> Result<i64, StoreError> {
        let mut attempt = 0;
        loop {
            match self.try_create_job(job).await {
                // A retry that finds its job: the first attempt committed, unseen.
                Err(e) if attempt > 0 && e.is_unique_violation() => {
                    if let Some(id) = retrying!("create_job", self.job_by_instance(&job.instance_id).await)? {
                        return Ok(id);
                    }
                    return Err(e.into());
                }
                Err(e) if e.retryable() && attempt < error::RETRIES => {
                    tracing::warn!(attempt, "job store: {}; trying again", e.detail());
                    tokio::time::sleep(error::retry_delay(attempt)).await;
                    attempt += 1;
                }
                other => {
                    let id = other.map_err(StoreError::from)?;
                    // The other daemons claim their share now, not at their next heartbeat.
                    self.notify(Kind::Claimable, &[id]).await;
                    return Ok(id);
                }
            }
        }
    }

    async fn job_request(&self, id: i64) -> Result<Vec<u8>, StoreError> {
        retrying!("job_request", self.try_job_request(id).await)?.ok_or_else(|| StoreError::Corrupt {
            id,
            detail: "no such job".to_string(),
        })
    }

    async fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        retrying!("jobs", self.try_jobs(None).await)
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        Ok(retrying!("job", self.try_jobs(Some(id)).await)?.pop())
    }

    async fn children(&self, job_id: i64) -> Result<Vec<ChildRow>, StoreError> {
        retrying!("children", self.try_children(job_id).await)
    }

    async fn child_states(&self, job_id: i64) -> Result<Vec<State>, StoreError> {
        retrying!("child states", self.try_child_states(job_id).await)
    }

    async fn mark_starting(&self, job_id: i64, idx: u32, now_ms: i64) -> Result<(), StoreError> {
        let sql = "UPDATE children SET started_at_ms = $3
                   WHERE job_id = $1 AND idx = $2 AND started_at_ms IS NULL";
        retrying!(
            "mark_starting",
            self.child_update(sql, job_id, idx, &[&now_ms]).await
        )
    }

    async fn set_child_run(
        &self,
        job_id: i64,
        idx: u32,
        run_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE children SET run_id = $3, started_at_ms = coalesce(started_at_ms, $4)
                   WHERE job_id = $1 AND idx = $2";
        retrying!(
            "set_child_run",
            self.child_update(sql, job_id, idx, &[&run_id, &now_ms]).await
        )?;
        self.notify(Kind::Changed, &[job_id]).await;
        Ok(())
    }

    async fn set_child_state(
        &self,
        job_id: i64,
        idx: u32,
        state: State,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        retrying!(
            "set_child_state",
            self.try_set_child_state(job_id, idx, state, reason).await
        )?;
        self.notify(Kind::Changed, &[job_id]).await;
        Ok(())
    }

    async fn finish_child(&self, job_id: i64, idx: u32, end: &ChildEnd) -> Result<(), StoreError> {
        retrying!("finish_child", self.try_finish_child(job_id, idx, end).await)?;
        self.notify(Kind::Changed, &[job_id]).await;
        Ok(())
    }

    async fn set_job_flags(
        &self,
        job_id: i64,
        stop: Option<bool>,
        suspended: Option<bool>,
    ) -> Result<(), StoreError> {
        retrying!(
            "set_job_flags",
            self.try_set_job_flags(job_id, stop, suspended).await
        )?;
        self.notify(Kind::Flags, &[job_id]).await;
        Ok(())
    }

    async fn append_output(&self, chunks: &[Chunk]) -> Result<(), StoreError> {
        retrying!("append_output", self.try_append_output(chunks).await)
    }

    async fn output(
        &self,
        job_id: i64,
        idx: u32,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Output>, StoreError> {
        retrying!("output", self.try_output(job_id, idx, after, upto, limit).await)
    }

    async fn received_marks(&self, job_id: i64, idx: u32) -> Result<[Mark; 2], StoreError> {
        retrying!("received_marks", self.try_received_marks(job_id, idx).await)
    }

    async fn mark_received(
        &self,
        job_id: i64,
        idx: u32,
        stream: Stream,
        mark: Mark,
    ) -> Result<(), StoreError> {
        retrying!(
            "mark_received",
            self.try_mark_received(job_id, idx, stream, mark).await
        )
    }

    async fn remove_job(&self, job_id: i64) -> Result<(), StoreError> {
        retrying!("remove_job", self.try_remove_job(job_id).await)?;
        self.notify(Kind::Removed, &[job_id]).await;
        Ok(())
    }

    fn subscribe(&self, to: tokio::sync::mpsc::UnboundedSender<Notice>) {
        listen::spawn(self.target.clone(), self.origin.clone(), to);
    }

    async fn claim_receive(&self, job_id: i64) -> Result<Option<ReceiveClaim>, StoreError> {
        retrying!("claim_receive", self.try_claim_receive(job_id).await)
    }

    async fn retention_rows(&self) -> Result<Vec<RetentionRow>, StoreError> {
        retrying!("retention_rows", self.try_retention_rows().await)
    }

    async fn store_size(&self) -> Result<u64, StoreError> {
        retrying!("store_size", self.try_store_size().await)
    }

    async fn job_size(&self, job_id: i64) -> Result<u64, StoreError> {
        retrying!("job_size", self.try_job_size(job_id).await)
    }

    fn epoch(&self) -> i64 {
        self.lease_epoch()
    }

    async fn register(&self) -> Result<i64, StoreError> {
        let id = retrying!("register", self.try_register().await)?;
        tracing::info!(daemon = id, node = %self.node, "registered on the shared job store");
        Ok(id)
    }

    async fn heartbeat(&self) -> Result<(), StoreError> {
        retrying!("heartbeat", self.try_heartbeat().await)
    }

    async fn claimable(&self) -> Result<Vec<i64>, StoreError> {
        retrying!("claimable", self.try_claimable().await)
    }

    async fn claim(&self, job_id: i64) -> Result<Claimed, StoreError> {
        retrying!("claim", self.try_claim(job_id).await)
    }

    async fn publish_agents(&self, names: &[String]) -> Result<(), StoreError> {
        retrying!("publish_agents", self.try_publish_agents(names).await)
    }
}
