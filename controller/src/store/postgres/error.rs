//! PostgreSQL's errors as the store's: a [`Fault`] and PostgreSQL's own words, no
//! tokio-postgres type past this module. A lost connection (the server restarted, the
//! network dropped) is [`Fault::Unavailable`]: retried here first, then reported as
//! retryable.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::{Fault, StoreError};

/// What a call to the database can fail with, inside the backend.
#[derive(Debug)]
pub(super) enum DbError {
    Pg(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    /// This daemon's lease on the child (or its registration) is gone.
    Fenced,
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::Pg(e)
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::Pool(e)
    }
}

/// What kind of trouble PostgreSQL reports.
fn pg_fault(e: &tokio_postgres::Error) -> Fault {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed (closed, refused, timed out, I/O).
        return Fault::Unavailable;
    };
    // Class 08: connection exception; 57P01..03: the server shutting down or starting.
    if code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
        || *code == SqlState::TOO_MANY_CONNECTIONS
    {
        return Fault::Unavailable;
    }
    match *code {
        SqlState::DISK_FULL | SqlState::OUT_OF_MEMORY => Fault::DiskFull,
        SqlState::READ_ONLY_SQL_TRANSACTION => Fault::ReadOnly,
        SqlState::INSUFFICIENT_PRIVILEGE
        | SqlState::INVALID_PASSWORD
        | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => Fault::PermissionDenied,
        SqlState::IO_ERROR => Fault::Io,
        SqlState::DATA_CORRUPTED | SqlState::INDEX_CORRUPTED => Fault::Damaged,
        SqlState::LOCK_NOT_AVAILABLE
        | SqlState::T_R_DEADLOCK_DETECTED
        | SqlState::T_R_SERIALIZATION_FAILURE => Fault::Busy,
        _ => Fault::Other,
    }
}

impl DbError {
    pub(super) fn fault(&self) -> Fault {
        match self {
            DbError::Pg(e) => pg_fault(e),
            DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => pg_fault(e),
            // Timed out waiting for or making a connection, or the pool closed.
            DbError::Pool(_) => Fault::Unavailable,
            DbError::Fenced => Fault::Other,
        }
    }

    /// Worth trying again: the connection was lost, or a deadlock or serialization failure
    /// rolled the transaction back.
    pub(super) fn retryable(&self) -> bool {
        !matches!(self, DbError::Fenced) && matches!(self.fault(), Fault::Unavailable | Fault::Busy)
    }

    /// A unique key of the statement's was already taken.
    pub(super) fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Pg(e) => e.code() == Some(&SqlState::UNIQUE_VIOLATION),
            DbError::Pool(_) | DbError::Fenced => false,
        }
    }

    /// PostgreSQL's words, with the server's detail when there is one.
    pub(super) fn detail(&self) -> String {
        let pg = match self {
            DbError::Pg(e) | DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => e,
            DbError::Pool(e) => return format!("PostgreSQL: {e}"),
            DbError::Fenced => return "this daemon's lease is lost".to_string(),
        };
        match pg.as_db_error() {
            Some(db) => format!("PostgreSQL: {} ({})", db.message(), db.code().code()),
            None => match std::error::Error::source(pg) {
                Some(source) => format!("PostgreSQL: {pg}: {source}"),
                None => format!("PostgreSQL: {pg}"),
            },
        }
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        if matches!(e, DbError::Fenced) {
            return StoreError::Fenced;
        }
        StoreError::Backend {
            fault: e.fault(),
            detail: e.detail(),
        }
    }
}

/// How many times an idempotent call is tried again after a retryable error, and the
/// delay before each: 250 ms doubling up to 2 s, about 15 s in all, long enough for a
/// server restart.
pub(super) const RETRIES: u32 = 10;

pub(super) fn retry_delay(attempt: u32) -> Duration {
    crate::backoff::capped(attempt, Duration::from_secs(2))
}

/// Runs `$call` (an expression yielding `Result<_, DbError>`), trying it again while it
/// fails with a retryable error, at most [`RETRIES`] times; the last error as a
/// [`StoreError`].
macro_rules! retrying {
    ($what:expr, $call:expr) => {{
        let mut attempt = 0u32;
        loop {
            match $call {
                Err(e) if e.retryable() && attempt < $crate::store::postgres::error::RETRIES => {
                    ::tracing::warn!(what = $what, attempt, "job store: {}; trying again", e.detail());
                    ::tokio::time::sleep($crate::store::postgres::error::retry_delay(attempt)).await;
                    attempt += 1;
                }
                other => break other.map_err($crate::store::StoreError::from),
            }
        }
    }};
}
pub(super) use retrying;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_about_fifteen_seconds_in_all() {
        let total: Duration = (0..RETRIES).map(retry_delay).sum();
        assert!(
            total >= Duration::from_secs(10) && total <= Duration::from_secs(20),
            "{total:?}"
        );
    }
}
