//! The job store's errors, typed, with a few words for reasons and warnings.

use std::path::PathBuf;

use crate::daemon::ids::IdsError;
use crate::daemon::statedir::StateDirError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store {path}: {source}: move it aside (or restore it) and start again")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The store could not be opened for want of space: it is not damaged.
    #[error("job store {path}: {source}: the file system of the state directory is full (the store itself is intact): free some space and start again")]
    OpenFull {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("job store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the job store holds a damaged request for job {id} ({detail})")]
    Corrupt { id: i64, detail: String },
    #[error(transparent)]
    Ids(#[from] IdsError),
    #[error(transparent)]
    File(#[from] StateDirError),
}

impl StoreError {
    /// What went wrong, in a few words (`disk full`), for reasons and warnings.
    pub fn short(&self) -> String {
        use rusqlite::ErrorCode;
        let sql = match self {
            StoreError::Open { source, .. }
            | StoreError::OpenFull { source, .. }
            | StoreError::Sql(source) => source,
            StoreError::Corrupt { id, .. } => return format!("damaged request for job {id}"),
            StoreError::Ids(e) => return e.to_string(),
            StoreError::File(e) => return e.to_string(),
        };
        match sql.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => "disk full".to_string(),
            Some(ErrorCode::ReadOnly) => "read-only".to_string(),
            Some(ErrorCode::PermissionDenied) => "permission denied".to_string(),
            Some(ErrorCode::SystemIoFailure) => "I/O error".to_string(),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => "damaged".to_string(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "busy".to_string(),
            _ => sql.to_string(),
        }
    }
}

/// The store at `path` could not be opened: [`StoreError::OpenFull`] when its file system has
/// no space left (SQLite may then report only an I/O error, growing its -shm file), else
/// [`StoreError::Open`], which means the store itself is in question.
pub fn open_error(path: &std::path::Path, source: rusqlite::Error) -> StoreError {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let no_space = source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        || nix::sys::statvfs::statvfs(dir).is_ok_and(|fs| fs.blocks_available() == 0);
    if no_space {
        StoreError::OpenFull {
            path: path.to_owned(),
            source,
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }
}
