//! SQLite's errors as the store's: [`Fault`]s in SQLite's own words.

use std::path::Path;

use rusqlite::ErrorCode;

use crate::store::{Fault, StoreError};

/// What kind of trouble SQLite reports.
pub(super) fn fault(e: &rusqlite::Error) -> Fault {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Fault::DiskFull,
        Some(ErrorCode::ReadOnly) => Fault::ReadOnly,
        Some(ErrorCode::PermissionDenied) => Fault::PermissionDenied,
        Some(ErrorCode::SystemIoFailure) => Fault::Io,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => Fault::Damaged,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Fault::Busy,
        _ => Fault::Other,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend {
            fault: fault(&e),
            detail: e.to_string(),
        }
    }
}

/// The store at `path` could not be opened: [`StoreError::OpenFull`] when its file system has
/// no space left (SQLite may then report only an I/O error, growing its -shm file), else
/// [`StoreError::Open`], which means the store itself is in question.
pub(super) fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fault = fault(&source);
    let no_space = fault == Fault::DiskFull
        || nix::sys::statvfs::statvfs(dir).is_ok_and(|fs| fs.blocks_available() == 0);
    if no_space {
        StoreError::OpenFull {
            path: path.to_owned(),
            detail: source.to_string(),
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            fault,
            detail: source.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_keep_their_kind() {
        let full =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        assert_eq!(StoreError::from(full).short(), "disk full");
        let busy =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert_eq!(StoreError::from(busy).short(), "busy");
    }
}
