//! Several daemons on one database hear each other's changes through LISTEN/NOTIFY, on the
//! channel [`CHANNEL`].
//!
//! - Each write a follower waits for sends one NOTIFY: a committed batch of output (one for
//!   the whole batch, inside its transaction, never one per chunk), a child's run or state,
//!   a child's end, a job's flags, a removal, a new job. The payload is `ORIGIN KIND IDS`: the
//!   sending store's random origin (a store skips its own notices: its daemon knew already),
//!   `c` (changed), `f` (flags), `r` (removed) or `n` (new: children to claim), and the jobs'
//!   Ids, comma separated.
//! - Each daemon listens on a connection of its own ([`spawn`]), outside the pool. A lost
//!   connection (the server restarted) is made again, with backoff; once it listens again it
//!   sends [`Notice::Resync`], since notices sent meanwhile were lost.

use std::time::Duration;

use tokio::sync::mpsc;

use super::connect::Target;
use super::error::DbError;
use super::PgStore;
use crate::store::Notice;

/// The channel every rjob daemon of a database listens on.
pub(super) const CHANNEL: &str = "rjob";

/// A payload longer than this is split (PostgreSQL refuses 8000 bytes and more).
const MAX_PAYLOAD: usize = 7000;

/// How often a listening connection is checked, and how long the check may take: a
/// connection that stopped answering is made again.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// What a notice says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Changed,
    Flags,
    Removed,
    /// A new job, with children to claim.
    Claimable,
}

impl Kind {
    fn code(self) -> &'static str {
        match self {
            Kind::Changed => "c",
            Kind::Flags => "f",
            Kind::Removed => "r",
            Kind::Claimable => "n",
        }
    }
}

/// The payloads that tell of `kind` for `ids`: one, unless the Ids do not fit in one.
pub(super) fn payloads(origin: &str, kind: Kind, ids: &[i64]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let head = format!("{origin} {} ", kind.code());
    let mut out = Vec::new();
    let mut payload = head.clone();
    for id in ids {
        let id = id.to_string();
        if payload.len() > head.len() && payload.len() + 1 + id.len() > MAX_PAYLOAD {
            out.push(std::mem::replace(&mut payload, head.clone()));
        }
        if payload.len() > head.len() {
            payload.push(',');
        }
        payload.push_str(&id);
    }
    if payload.len() > head.len() {
        out.push(payload);
    }
    out
}

/// What a payload tells, unless it is the store's own (`origin`). A payload that cannot be
/// read (a newer rjob's) is a resync: something changed, and it is not known what.
pub(super) fn notice(origin: &str, payload: &str) -> Option<Notice> {
    let mut parts = payload.splitn(3, ' ');
    let (from, kind, ids) = (parts.next()?, parts.next(), parts.next());
    if from == origin {
        return None;
    }
    let ids: Option<Vec<i64>> = ids.and_then(|ids| ids.split(',').map(|id| id.parse().ok()).collect());
    Some(match (kind, ids.as_deref()) {
        (Some("c"), Some(ids)) => Notice::Changed(ids.to_vec()),
        (Some("f"), Some([id])) => Notice::Flags(*id),
        (Some("r"), Some([id])) => Notice::Removed(*id),
        (Some("n"), Some(ids)) => Notice::Claimable(ids.to_vec()),
        _ => Notice::Resync,
    })
}

impl PgStore {
    /// Tells the other daemons of `kind` on `ids` (after the change committed). A notice
    /// that cannot be sent is logged, not an error: the change itself went through, and a
    /// listener that lost its connection resyncs.
    pub(super) async fn notify(&self, kind: Kind, ids: &[i64]) {
        let result = super::error::retrying!("notify", self.try_notify(kind, ids).await);
        if let Err(e) = result {
            tracing::warn!(error = %e, "job store: the other daemons could not be told of a change");
        }
    }

    async fn try_notify(&self, kind: Kind, ids: &[i64]) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        for payload in payloads(&self.origin, kind, ids) {
            client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await?;
        }
        Ok(())
    }
}

/// Listens on a connection of its own, sending what it hears to `to` until `to` closes.
pub(super) fn spawn(target: Target, origin: String, to: mpsc::UnboundedSender<Notice>) {
    tokio::spawn(async move {
        let mut attempt = 0;
        loop {
            match session(&target, &origin, &to, &mut attempt).await {
                Ok(()) => return, // nobody listens any more
                Err(e) => {
                    let delay = crate::backoff::capped(attempt, Duration::from_secs(2));
                    tracing::warn!(error = %e, "job store: the listening connection was lost; connecting again in {delay:?}");
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = to.closed() => return,
                    }
                }
            }
        }
    });
}

/// One listening connection, until it is lost (an error) or `to` closes (`Ok`).
async fn session(
    target: &Target,
    origin: &str,
    to: &mpsc::UnboundedSender<Notice>,
    attempt: &mut u32,
) -> Result<(), String> {
    let lost = |e: tokio_postgres::Error| DbError::from(e).detail();
    let (client, mut heard) = target.connect().await.map_err(lost)?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(lost)?;
    *attempt = 0;
    tracing::debug!("job store: listening to the other daemons");
    // Whatever was sent while nobody listened is lost: every job may have changed.
    if to.send(Notice::Resync).is_err() {
        return Ok(());
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            n = heard.recv() => {
                let Some(n) = n else {
                    return Err("the connection ended".to_string());
                };
                if let Some(notice) = notice(origin, n.payload()) {
                    if to.send(notice).is_err() {
                        return Ok(());
                    }
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.batch_execute("SELECT 1")).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(lost(e)),
                    Err(_) => return Err(format!("no answer to a check within {PING_TIMEOUT:?}")),
                }
            }
            () = to.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reads_back_as_it_was_sent() {
        let sent = payloads("a1", Kind::Changed, &[3, 1, 3, 2]);
        assert_eq!(sent, ["a1 c 1,2,3"]);
        assert_eq!(notice("b2", &sent[0]), Some(Notice::Changed(vec![1, 2, 3])));
        let flags = payloads("a1", Kind::Flags, &[7]);
        assert_eq!(notice("b2", &flags[0]), Some(Notice::Flags(7)));
        let removed = payloads("a1", Kind::Removed, &[8]);
        assert_eq!(notice("b2", &removed[0]), Some(Notice::Removed(8)));
        let new = payloads("a1", Kind::Claimable, &[9]);
        assert_eq!(notice("b2", &new[0]), Some(Notice::Claimable(vec![9])));
    }

    #[test]
    fn a_store_skips_its_own_notices() {
        assert_eq!(notice("a1", "a1 c 1"), None);
    }

    #[test]
    fn a_payload_not_understood_is_a_resync() {
        assert_eq!(notice("b2", "a1 z 1"), Some(Notice::Resync));
        assert_eq!(notice("b2", "a1 c x"), Some(Notice::Resync));
        assert_eq!(notice("b2", "a1"), Some(Notice::Resync));
    }

    #[test]
    fn many_jobs_are_split_over_payloads_that_fit() {
        let ids: Vec<i64> = (1_000_000_000_000..1_000_000_002_000).collect();
        let sent = payloads("origin", Kind::Changed, &ids);
        assert!(sent.len() > 1, "{} payloads", sent.len());
        let mut heard = Vec::new();
        for p in &sent {
            assert!(p.len() <= MAX_PAYLOAD, "{} bytes", p.len());
            match notice("other", p) {
                Some(Notice::Changed(ids)) => heard.extend(ids),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(heard, ids);
        assert!(payloads("o", Kind::Changed, &[]).is_empty());
    }
}
