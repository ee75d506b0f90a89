//! A job's consuming receive, exclusive across every daemon of the database: a session
//! advisory lock on a connection of the receive's own. The lock goes with the connection, so
//! a daemon that dies mid-receive (or loses the connection) holds nothing.
//!
//! When the connection goes (PostgreSQL restarted), the receive takes its lock again on a new
//! one before it marks anything more received, and ends if another receive took it meanwhile.
//!
//! A receive that just ended lets its lock go as it ends; the next one may come a moment
//! before that, so a claim waits up to [`GRACE`] for the lock before it is refused.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::connect::Target;
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
    target: Target,
}

/// How long [`Held::keep`] tries to reach a store that went away before it gives up.
const RETAKE_FOR: Duration = Duration::from_secs(60);

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

    /// The lock went with its connection (PostgreSQL restarted, the network broke): take it
    /// again on a new one, unless another receive took it meanwhile.
    async fn keep(&mut self) -> bool {
        if !self.client.is_closed() {
            return true;
        }
        let (a, b) = self.keys;
        let deadline = tokio::time::Instant::now() + RETAKE_FOR;
        loop {
            match retake(&self.target, a, b).await {
                Ok(Some(client)) => {
                    tracing::info!("job store: a receive's lock taken again after its connection was lost");
                    self.client = client;
                    return true;
                }
                Ok(None) => {
                    tracing::warn!("job store: a receive lost its lock to another receive");
                    return false;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = ?e, "job store: taking a receive's lock again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "job store: a receive's lock could not be taken again");
                    return false;
                }
            }
        }
    }
}

/// A new connection holding lock `(a, b)`, or `None` when another session holds it.
async fn retake(target: &Target, a: i32, b: i32) -> Result<Option<Client>, DbError> {
    let (client, _heard) = target.connect().await?;
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&a, &b])
        .await?;
    Ok(row.get::<_, bool>(0).then_some(client))
}

impl PgStore {
    pub(super) async fn try_claim_receive(&self, job_id: i64) -> Result<Option<ReceiveClaim>, DbError> {
        let (client, _heard) = self.target.connect().await?;
        client
            .batch_execute(&format!("SET lock_timeout = '{GRACE}'"))
            .await?;
        let (a, b) = keys(job_id);
        match client.execute("SELECT pg_advisory_lock($1, $2)", &[&a, &b]).await {
            Ok(_) => Ok(Some(ReceiveClaim::held(Box::new(Held {
                client,
                keys: (a, b),
                target: self.target.clone(),
            })))),
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
