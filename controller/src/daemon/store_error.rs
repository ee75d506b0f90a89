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
            StoreError::Open { source, .. } | StoreError::Sql(source) => source,
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
