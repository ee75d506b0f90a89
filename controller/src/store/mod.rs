//! The job store: jobs, their children, every output chunk and the received marks, behind
//! one trait, [`JobStore`], so that another backend (PostgreSQL, shared by several
//! controllers) only adds an implementation. SQLite ([`sqlite`]) is the first.
//!
//! # Async, and why
//! The trait is async (through `async-trait`, so that it stays dyn-compatible: the daemon
//! holds an `Arc<dyn JobStore>`). A network backend (tokio-postgres, LISTEN/NOTIFY) waits
//! on a round trip for every call; a sync trait would block a runtime worker for each of
//! them, or send every caller through `spawn_blocking`. The SQLite backend does its short
//! local work inline under its mutex, as it always has: its futures finish on first poll.
//!
//! # The contract (what [`conformance`] checks of every backend)
//! - Ids are handed out in order and never reused, not even after a job is removed.
//! - "Not set" reads back as `None`.
//! - A child's state does not change once finished ([`JobStore::set_child_state`]).
//! - Output is idempotent: a chunk stored twice under one (job, child, seq) is kept once,
//!   the first one; `seq` numbers a child's chunks over both streams.
//! - Received marks only move forward, and `received_seq` is the prefix both cover.
//! - Removing a job removes its children, output and marks.
//! - [`JobStore::store_size`] grows with stored output and falls when a job is removed.
//! - A store several daemons share tells each what the others change
//!   ([`JobStore::subscribe`]) and keeps a consuming receive to one daemon at a time
//!   ([`JobStore::claim_receive`]); a store of one daemon (SQLite) does neither.
//!
//! # Adding a backend
//! A folder `store/<backend>/` with its `impl JobStore`, one arm in [`open`], and one line
//! in the conformance runner of its tests.

pub mod conformance;
mod error;
pub mod ids;
pub mod lease;
pub mod postgres;
pub mod retention;
mod rows;
mod shared;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use error::{Fault, StoreError};
pub use rows::{
    state_code, state_from_code, ChildEnd, ChildRow, Chunk, Claimed, JobRow, Mark, NewJob, Output,
    RetentionRow, Stream,
};
pub use shared::{Notice, ReceiveClaim, Release};

use crate::state::State;

#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// What the store was found to have lost when it was opened, in one line.
    fn lost_notice(&self) -> Option<&str>;

    /// Whether job `id` was found lost when the store was opened.
    fn was_lost(&self, id: i64) -> bool;

    /// Creates a job with its children (all NotStarted); returns its Id, never one handed
    /// out before.
    async fn create_job(&self, job: &NewJob) -> Result<i64, StoreError>;

    /// The request bytes a job was created with; unreadable ones are [`StoreError::Corrupt`].
    async fn job_request(&self, id: i64) -> Result<Vec<u8>, StoreError>;

    /// Every job, by Id.
    async fn jobs(&self) -> Result<Vec<JobRow>, StoreError>;

    async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError>;

    /// A job's children, by index (none when there is no such job).
    async fn children(&self, job_id: i64) -> Result<Vec<ChildRow>, StoreError>;

    /// The states of a job's children, by index (none when there is no such job): what the
    /// job's state is made of, without the rest of their rows (a waiter reads it at every
    /// change of a job of 10,000 children).
    async fn child_states(&self, job_id: i64) -> Result<Vec<State>, StoreError> {
        Ok(self.children(job_id).await?.iter().map(|c| c.state).collect())
    }

    /// Marks a child whose start request is about to go out (its start time, if not set).
    async fn mark_starting(&self, job_id: i64, idx: u32, now_ms: i64) -> Result<(), StoreError>;

    /// Records a child's run id (and its start time, if not set).
    async fn set_child_run(&self, job_id: i64, idx: u32, run_id: &str, now_ms: i64)
        -> Result<(), StoreError>;

    /// Sets a child's state and reason, unless it has already finished.
    async fn set_child_state(
        &self,
        job_id: i64,
        idx: u32,
        state: State,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Records how a child ended, and the job's end once every child has.
    async fn finish_child(&self, job_id: i64, idx: u32, end: &ChildEnd) -> Result<(), StoreError>;

    /// Sets a job's stop and suspend flags (`None`: unchanged).
    async fn set_job_flags(
        &self,
        job_id: i64,
        stop: Option<bool>,
        suspended: Option<bool>,
    ) -> Result<(), StoreError>;

    /// Stores chunks at once, each exactly once, advancing each child's `last_seq`.
    async fn append_output(&self, chunks: &[Chunk]) -> Result<(), StoreError>;

    /// Output of one child with `after < seq <= upto`, in order, at most `limit` chunks.
    async fn output(
        &self,
        job_id: i64,
        idx: u32,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Output>, StoreError>;

    /// A child's received marks, stdout's then stderr's (default marks when there is no
    /// such child).
    async fn received_marks(&self, job_id: i64, idx: u32) -> Result<[Mark; 2], StoreError>;

    /// Moves one stream's received mark forward to `mark` (never back), and the child's
    /// received prefix with it; committed when it returns.
    async fn mark_received(
        &self,
        job_id: i64,
        idx: u32,
        stream: Stream,
        mark: Mark,
    ) -> Result<(), StoreError>;

    /// Removes a job with its children, output and marks; its Id is not handed out again.
    async fn remove_job(&self, job_id: i64) -> Result<(), StoreError>;

    // Several daemons on one store ([`lease`]). A store of one daemon's own (SQLite) is the
    // trivial case: one owner, a lease that never lapses, every child claimed at once.

    /// This daemon's registration: its lease epoch (0 before [`JobStore::register`], and
    /// always for a store of one daemon's own).
    fn epoch(&self) -> i64;

    /// Registers this daemon anew, with a lease for the store's TTL: a new epoch, never one
    /// handed out before. From then on every write of an owner (a child's start, run, state,
    /// end and output) is fenced by that lease, and fails with [`StoreError::Fenced`] once it
    /// lapsed.
    async fn register(&self) -> Result<i64, StoreError>;

    /// Renews the lease, on the database's clock; [`StoreError::Fenced`] once it has lapsed
    /// (it is never renewed then: the daemon drops its children and registers again).
    async fn heartbeat(&self) -> Result<(), StoreError>;

    /// The jobs with children to claim: unfinished, owned by no live daemon, and that this
    /// daemon may run (a local job only by the daemon that created it).
    async fn claimable(&self) -> Result<Vec<i64>, StoreError>;

    /// Claims some of a job's children for this daemon, with the job locked meanwhile, so
    /// that the throttle limit holds across daemons: children a lapsed daemon had started
    /// (kept with their run Id and start mark, to attach again), then unstarted ones while
    /// slots are free (all of them once the job is stopped, none while it is suspended).
    /// A child held by a live daemon is never handed out. [`Claimed::more`] says whether
    /// claimable children are left behind (waiting for a slot).
    async fn claim(&self, job_id: i64) -> Result<Claimed, StoreError>;

    /// Publishes the names of the agents dialled in to this daemon now (all of them, replacing
    /// what it published before), so that the other daemons sharing the store leave their
    /// children to it. A store of one daemon's own has nothing to share.
    async fn publish_agents(&self, _names: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
    /// Sends `to` what other daemons sharing the store change, for as long as `to` is open
    /// ([`Notice`]; one per committed batch of output, state change, flag change, removal).
    /// A store no other daemon shares (SQLite) sends nothing and drops `to`.
    fn subscribe(&self, to: tokio::sync::mpsc::UnboundedSender<Notice>);

    /// Claims job `job_id`'s consuming receive across every daemon sharing the store: `None`
    /// while another daemon's receive holds it. A store only one daemon uses claims nothing
    /// ([`ReceiveClaim::local`]): the daemon keeps its receives exclusive itself.
    async fn claim_receive(&self, job_id: i64) -> Result<Option<ReceiveClaim>, StoreError>;
    /// Every job as retention sees it, by Id.
    async fn retention_rows(&self) -> Result<Vec<RetentionRow>, StoreError>;

    /// The bytes the store holds (what `--max-store-size` limits): SQLite's pages in use,
    /// PostgreSQL's tables with their indexes and TOAST.
    async fn store_size(&self) -> Result<u64, StoreError>;

    /// The bytes of one job's stored output as the store keeps it (PostgreSQL: its output
    /// partition with its key's index, a few pages even when empty); 0 when there is no such
    /// job.
    async fn job_size(&self, job_id: i64) -> Result<u64, StoreError>;
}

/// Opens the job store: the store selection. `store` is a PostgreSQL URL, or a SQLite
/// file; `None`: the embedded default, SQLite in the state directory.
pub async fn open(state_dir: &Path, store: Option<&str>) -> Result<Arc<dyn JobStore>, StoreError> {
    Ok(match store {
        Some(url) if postgres::is_postgres_url(url) => Arc::new(
            postgres::PgStore::open_as(
                url,
                &postgres::default_node(Some(state_dir)),
                lease::Timing::from_env(),
            )
            .await?,
        ),
        Some(file) => Arc::new(sqlite::SqliteStore::open(Path::new(file))?),
        None => Arc::new(sqlite::SqliteStore::open(&path(state_dir))?),
    })
}

/// Where the embedded store of a state directory is.
pub fn path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("jobs.db")
}

/// Where the store `open` opens is, as `rjob daemon status` shows it (a PostgreSQL URL
/// without its password).
pub fn location(state_dir: &Path, store: Option<&str>) -> std::path::PathBuf {
    match store {
        Some(url) if postgres::is_postgres_url(url) => postgres::redacted(url).into(),
        Some(file) => file.into(),
        None => path(state_dir),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The conformance suite against every backend that runs without a server.
    #[tokio::test]
    async fn every_backend_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = AtomicUsize::new(0);
        let fresh = |name: &str| {
            dir.path()
                .join(format!("{name}-{}.db", n.fetch_add(1, Ordering::Relaxed)))
        };
        let sqlite = || {
            let store = sqlite::SqliteStore::open(&fresh("sqlite")).expect("open");
            std::future::ready(Arc::new(store) as Arc<dyn JobStore>)
        };
        conformance::run_all(sqlite).await;
    }
}
