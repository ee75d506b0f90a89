//! A job's consuming receive, exclusive across every daemon of the database: a session
//! advisory lock on a connection of the receive's own. The lock goes with the connection, so
//! a daemon that dies mid-receive (or loses the connection) holds nothing.
//!
//! A receive that just ended lets its lock go as it ends; the next one may come a moment
//! before that, so a claim waits up to [`GRACE`] for the lock before it is refused.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::error::DbError;
use super::PgStore;
use crate::store::{ReceiveClaim, Release};

/// The advisory lock class of receives ("rjob" in ASCII, as the migration lock's key).
const RECEIVE_LOCK: i32 = 0x726a_6f62;

/// How long a claim waits for a receive that is ending.
const GRACE: &str = "1s";

/// The two keys of job `job_id`'s receive lock.
fn keys(job_id: i64) -> (i32, i32) {
    let [h0, h1, h2, h3, l0, l1, l2, l3] = job_id.to_be_bytes();
    (
        RECEIVE_LOCK ^ i32::from_be_bytes([h0, h1, h2, h3]),
        i32::from_be_bytes([l0, l1, l2, l3]),
    )
}

/// A held receive lock, on its connection.
struct Held {
    client: Client,
    keys: (i32, i32),
}

#[async_trait::async_trait]
impl Release for Held {
    async fn release(self: Box<Self>) {
        let (a, b) = self.keys;
        if let Err(e) = self
            .client
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&a, &b])
            .await
        {
            // Closing the connection (dropping the client) lets it go anyway.
            tracing::debug!(error = %e, "job store: a receive lock let go by closing its connection");
        }
    }
}

impl PgStore {
    pub(super) async fn try_claim_receive(&self, job_id: i64) -> Result<Option<ReceiveClaim>, DbError> {
        let (client, _heard) = self.target.connect().await?;
        client
            .batch_execute(&format!("SET lock_timeout = '{GRACE}'"))
            .await?;
        let (a, b) = keys(job_id);
        match client.execute("SELECT pg_advisory_lock($1, $2)", &[&a, &b]).await {
            Ok(_) => Ok(Some(ReceiveClaim::held(Box::new(Held { client, keys: (a, b) })))),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_have_keys_of_their_own() {
        assert_eq!(keys(1), (RECEIVE_LOCK, 1));
        assert_ne!(keys(1), keys(2));
        assert_ne!(keys(1), keys(1 + (1 << 32)));
        assert_ne!(keys(i64::MAX), keys(i64::MAX - 1));
    }
}
