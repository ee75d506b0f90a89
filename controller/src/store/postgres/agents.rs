//! The registry of which agent is dialled in to which daemon (`rjob-agent --connect`,
//! `rjob serve --agent-listen`), in the store: each daemon publishes the names of the agents
//! connected to it now, under its lease epoch, and claims skip a child whose agent is
//! connected to another live daemon ([`super::lease`]). Rows of a daemon that died or
//! registered again under a new epoch are ignored (its lease is not live) and replaced when
//! it publishes again.

use super::error::DbError;
use super::PgStore;
use std::sync::atomic::Ordering;

impl PgStore {
    pub(super) async fn try_publish_agents(&self, names: &[String]) -> Result<(), DbError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if epoch == 0 {
            return Ok(()); // not registered yet: published once it is
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM agents WHERE daemon = $1", &[&epoch])
            .await?;
        tx.execute(
            "INSERT INTO agents (name, daemon) SELECT DISTINCT n, $1::bigint FROM unnest($2::text[]) AS n",
            &[&epoch, &names],
        )
        .await?;
        // Rows of daemons gone for good go with the next publish of any daemon.
        tx.execute(
            "DELETE FROM agents a WHERE NOT EXISTS (SELECT 1 FROM daemons d WHERE d.id = a.daemon)",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
