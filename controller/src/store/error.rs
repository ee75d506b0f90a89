//! The job store's errors, typed, with a few words for reasons and warnings. No backend's
//! types here: each backend says what kind of [`Fault`] it met, and in its own words.

use std::path::PathBuf;

use crate::daemon::statedir::StateDirError;
use crate::store::ids::IdsError;

/// What kind of trouble a backend met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    DiskFull,
    ReadOnly,
    PermissionDenied,
    Io,
    /// The store's files (or database) are damaged.
    Damaged,
    /// Locked by someone else for too long.
    Busy,
    /// The database cannot be reached (its connection was lost, it is restarting): worth
    /// trying again.
    Unavailable,
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened: the store itself is in question.
    #[error("job store {path}: {detail}: move it aside (or restore it) and start again")]
    Open {
        path: PathBuf,
        fault: Fault,
        detail: String,
    },
    /// The store could not be opened for want of space: it is not damaged.
    #[error("job store {path}: {detail}: the file system of the state directory is full (the store itself is intact): free some space and start again")]
    OpenFull { path: PathBuf, detail: String },
    /// The store was written by a newer rjob: never read or changed by this one.
    #[error("job store {path}: its schema is version {found}, newer than this rjob knows (up to {known}): run the newer rjob, or move the store aside")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    /// The store's database server could not be reached to open it.
    #[error("job store {store}: {detail}: check that the database server runs and that the URL is right")]
    Unreachable { store: String, detail: String },
    /// A read or write failed.
    #[error("job store: {detail}")]
    Backend { fault: Fault, detail: String },
    #[error("the job store holds a damaged request for job {id} ({detail})")]
    Corrupt { id: i64, detail: String },
    /// This daemon's lease on a shared store is gone (it was paused or cut off past its TTL):
    /// another daemon may own its children now, so it writes nothing more of them.
    #[error("this daemon's lease on the job store is lost: its children belong to another daemon now")]
    Fenced,
    #[error(transparent)]
    Ids(#[from] IdsError),
    #[error(transparent)]
    File(#[from] StateDirError),
}

impl StoreError {
    /// What went wrong, in a few words (`disk full`), for reasons and warnings.
    pub fn short(&self) -> String {
        let (fault, detail) = match self {
            StoreError::Open { fault, detail, .. } | StoreError::Backend { fault, detail } => {
                (*fault, detail)
            }
            StoreError::OpenFull { .. } => return "disk full".to_string(),
            StoreError::Unreachable { .. } => return "database unavailable".to_string(),
            StoreError::TooNew { found, .. } => return format!("schema version {found} is too new"),
            StoreError::Corrupt { id, .. } => return format!("damaged request for job {id}"),
            StoreError::Fenced => return "lease lost".to_string(),
            StoreError::Ids(e) => return e.to_string(),
            StoreError::File(e) => return e.to_string(),
        };
        match fault {
            Fault::DiskFull => "disk full",
            Fault::ReadOnly => "read-only",
            Fault::PermissionDenied => "permission denied",
            Fault::Io => "I/O error",
            Fault::Damaged => "damaged",
            Fault::Busy => "busy",
            Fault::Unavailable => "database unavailable",
            Fault::Other => return detail.clone(),
        }
        .to_string()
    }

    /// Worth trying again later: the database is unreachable for now.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::Backend {
                    fault: Fault::Unavailable,
                    ..
                }
        )
    }
}
