//! Several daemons on one PostgreSQL store: registration and heartbeat on the database's
//! clock, claims of children with the job row locked (so that the throttle limit holds
//! across daemons), and the fence every write of an owner goes through.
//!
//! - A daemon's Id comes from a sequence: never handed out twice, it is the lease's epoch.
//! - Its lease lives while `expires_at` (set to the database's clock plus the TTL by each
//!   heartbeat) is ahead of the database's clock. A lapsed lease is never renewed.
//! - A child belongs to the daemon in its `owner`. A write of an owner locks the child's
//!   row and checks, in the same transaction, that it still owns the child under a live
//!   lease ([`fence`]); a claim takes only children whose owner's lease lapsed, with
//!   `SKIP LOCKED`, so that a write in flight is ordered before any takeover.
//! - Sessions idle in a transaction are ended by the server after half the TTL, so that a
//!   paused daemon cannot hold a child's or a job's row, and its takeover, for long.

use std::sync::atomic::Ordering;

use super::error::DbError;
use super::jobs::{child_row, CHILD_COLUMNS};
use super::{finished_list, PgStore};
use crate::store::{lease, ChildRow, Claimed};

/// A live lease, as SQL: the daemon `d` is alive.
const LIVE: &str = "d.expires_at > clock_timestamp()";

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Of the children `(jobs[i], idxs[i])`, those that daemon `epoch` owns under a live lease,
/// their rows locked until the transaction ends. Epoch 0 (a store opened without
/// registering: tools, the conformance suite) owns every child.
pub(super) async fn fence(
    tx: &deadpool_postgres::Transaction<'_>,
    epoch: i64,
    jobs: &[i64],
    idxs: &[i32],
) -> Result<Vec<(i64, i32)>, DbError> {
    if epoch == 0 {
        return Ok(jobs.iter().copied().zip(idxs.iter().copied()).collect());
    }
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT c.job_id, c.idx FROM children c JOIN daemons d ON d.id = c.owner
             WHERE c.owner = $1 AND {LIVE}
               AND (c.job_id, c.idx) IN (SELECT * FROM unnest($2::bigint[], $3::integer[]))
             ORDER BY c.job_id, c.idx
             FOR UPDATE OF c"
        ))
        .await?;
    let rows = tx.query(&stmt, &[&epoch, &jobs, &idxs]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// [`fence`] for one child: [`DbError::Fenced`] unless it is owned.
pub(super) async fn fence_one(
    tx: &deadpool_postgres::Transaction<'_>,
    epoch: i64,
    job_id: i64,
    idx: i32,
) -> Result<(), DbError> {
    if fence(tx, epoch, &[job_id], &[idx]).await?.is_empty() {
        return Err(DbError::Fenced);
    }
    Ok(())
}

impl PgStore {
    pub(super) async fn try_register(&self) -> Result<i64, DbError> {
        let client = self.pool.get().await?;
        let id: i64 = client
            .query_one(
                "INSERT INTO daemons (id, node, expires_at)
                 VALUES (nextval('daemon_ids'), $1, clock_timestamp() + $2::bigint * interval '1 millisecond')
                 RETURNING id",
                &[&self.node, &ms(self.timing.ttl)],
            )
            .await?
            .get(0);
        // Registrations lapsed long ago tell nothing any more.
        client
            .execute(
                "DELETE FROM daemons WHERE expires_at < clock_timestamp() - interval '1 day'",
                &[],
            )
            .await?;
        self.epoch.store(id, Ordering::SeqCst);
        Ok(id)
    }

    pub(super) async fn try_heartbeat(&self) -> Result<(), DbError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if epoch == 0 {
            return Ok(());
        }
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE daemons SET heartbeat_at = clock_timestamp(),
                                    expires_at = clock_timestamp() + $2::bigint * interval '1 millisecond'
                 WHERE id = $1 AND expires_at > clock_timestamp()",
            )
            .await?;
        match client.execute(&stmt, &[&epoch, &ms(self.timing.ttl)]).await? {
            0 => Err(DbError::Fenced),
            _ => Ok(()),
        }
    }

    pub(super) async fn try_claimable(&self) -> Result<Vec<i64>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT DISTINCT c.job_id FROM children c JOIN jobs j ON j.id = c.job_id
                 WHERE c.state NOT IN (3, 4, 5)
                   AND (j.location <> 'local' OR j.node = $1)
                   AND NOT EXISTS (SELECT 1 FROM daemons d WHERE d.id = c.owner AND {LIVE})
                 ORDER BY 1"
            ))
            .await?;
        let rows = client.query(&stmt, &[&self.node]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn try_claim(&self, job_id: i64) -> Result<Claimed, DbError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if epoch == 0 {
            return Err(DbError::Fenced); // not registered: no lease to claim with
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The job's row is the claims' lock: one daemon claims a job's children at a time.
        // Claims are short, so the others wait their turn (a new job's notice wakes every
        // daemon at once, and each takes its share); one that waits past CLAIM_WAIT (a
        // daemon paused mid-claim) tries again at its next heartbeat.
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{CLAIM_WAIT}'"))
            .await?;
        let job = tx
            .query_opt(
                "SELECT throttle_limit, stop_requested, suspended FROM jobs
                 WHERE id = $1 AND (location <> 'local' OR node = $2) FOR UPDATE",
                &[&job_id, &self.node],
            )
            .await;
        let job = match job {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(Claimed::default()),
            // Another daemon's claim holds the job: what is left is not known here.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                return Ok(Claimed {
                    children: Vec::new(),
                    more: true,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let (limit, stop, suspended): (i32, bool, bool) = (job.get(0), job.get(1), job.get(2));
        // Our own lease first: a daemon whose lease lapsed claims nothing.
        let live: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE {LIVE}), count(*) FILTER (WHERE {LIVE} AND d.id = $1)
                     FROM daemons d"
                ),
                &[&epoch],
            )
            .await
            .and_then(|r| {
                let mine: i64 = r.try_get(1)?;
                Ok(if mine == 0 { -1 } else { r.try_get(0)? })
            })?;
        if live < 0 {
            return Err(DbError::Fenced);
        }
        // Every unfinished child: whether its owner lives, whether it may have started.
        let rows = tx
            .query(
                &format!(
                    "SELECT c.idx, EXISTS (SELECT 1 FROM daemons d WHERE d.id = c.owner AND {LIVE}),
                            c.started_at_ms IS NOT NULL, c.owner IS NOT DISTINCT FROM $2,
                            EXISTS (SELECT 1 FROM agents a JOIN daemons d ON d.id = a.daemon
                                    WHERE a.name = c.host AND a.daemon <> $2 AND {LIVE})
                     FROM children c WHERE c.job_id = $1 AND c.state NOT IN {} ORDER BY c.idx",
                    finished_list()
                ),
                &[&job_id, &epoch],
            )
            .await?;
        let children: Vec<Kid> = rows
            .iter()
            .map(|r| Kid {
                idx: r.get(0),
                live: r.get(1),
                started: r.get(2),
                mine: r.get(3),
                elsewhere: r.get(4),
            })
            .collect();
        let limit = u32::try_from(limit).unwrap_or(1);
        let picked = pick(
            &children,
            limit,
            u32::try_from(live).unwrap_or(1),
            stop,
            suspended,
        );
        let orphans = children.iter().filter(|k| !k.live && !k.elsewhere).count();
        if picked.is_empty() {
            return Ok(Claimed {
                children: Vec::new(),
                more: orphans > 0,
            });
        }
        // Rows a write still holds (a paused daemon's, until the server ends its session)
        // are skipped: claimed at a later heartbeat.
        let locked = tx
            .query(
                "SELECT idx FROM children WHERE job_id = $1 AND idx = ANY($2) ORDER BY idx
                 FOR UPDATE SKIP LOCKED",
                &[&job_id, &picked],
            )
            .await?;
        let locked: Vec<i32> = locked.iter().map(|r| r.get(0)).collect();
        let claimed = tx
            .query(
                &format!(
                    "UPDATE children SET owner = $3, written_by = $3
                     WHERE job_id = $1 AND idx = ANY($2) RETURNING {CHILD_COLUMNS}"
                ),
                &[&job_id, &locked, &epoch],
            )
            .await?;
        tx.commit().await?;
        let mut claimed: Vec<ChildRow> = claimed.iter().map(child_row).collect();
        claimed.sort_by_key(|c| (c.started_at_ms.is_none(), c.idx));
        Ok(Claimed {
            more: orphans > claimed.len(),
            children: claimed,
        })
    }
}

/// An unfinished child, as a claim sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kid {
    pub idx: i32,
    /// Its owner's lease lives.
    pub live: bool,
    /// It has a start mark: its run may be going on its agent.
    pub started: bool,
    /// This daemon owns it.
    pub mine: bool,
    /// Its agent is dialled in to another live daemon: that one claims it.
    pub elsewhere: bool,
}

/// Which of a job's unfinished children one daemon claims. A child that may have started
/// holds a throttle slot whoever owns it (its run may be going on its agent), and so does
/// any child of a live daemon. A lapsed daemon's started children are taken first, then
/// unstarted ones while slots are free; in all, this daemon holds at most its share of the
/// throttle ([`lease::share`]), so that the daemons spread a job, and a dead daemon's
/// children, among themselves. A child whose agent is dialled in to another live daemon is
/// left to that one.
/// How long a claim waits for another daemon's claim of the same job.
const CLAIM_WAIT: &str = "2s";

pub(super) fn pick(children: &[Kid], limit: u32, live: u32, stop: bool, suspended: bool) -> Vec<i32> {
    let share = lease::share(limit, live);
    let mine = children.iter().filter(|k| k.mine && k.live).count();
    let budget = share.saturating_sub(mine);
    let in_flight = children.iter().filter(|k| k.live || k.started).count();
    let free = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(in_flight);
    // Children whose agent dialled in to another live daemon are that daemon's to claim.
    let orphaned = children.iter().filter(|k| !k.live && !k.elsewhere);
    let adopt: Vec<i32> = orphaned
        .clone()
        .filter(|k| k.started)
        .take(budget)
        .map(|k| k.idx)
        .collect();
    let fresh = if stop {
        // Stopped: each ends unstarted at once, no slot needed.
        usize::MAX
    } else if suspended {
        0
    } else {
        free.min(budget - adopt.len())
    };
    let start = orphaned.filter(|k| !k.started).take(fresh).map(|k| k.idx);
    adopt.iter().copied().chain(start).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimable_query_names_the_finished_states() {
        // The literal `(3, 4, 5)` of the claimable query (and of its partial index).
        assert_eq!(finished_list(), "(3, 4, 5)");
    }

    fn kid(idx: i32, live: bool, started: bool, mine: bool) -> Kid {
        Kid {
            idx,
            live,
            started,
            mine,
            elsewhere: false,
        }
    }

    #[test]
    fn children_whose_agents_dialled_in_elsewhere_are_left_to_that_daemon() {
        let mut kids: Vec<Kid> = (0..6).map(|i| kid(i, false, false, false)).collect();
        for k in kids.iter_mut().filter(|k| k.idx % 2 == 0) {
            k.elsewhere = true;
        }
        kids[4].started = true; // started on a daemon that died; its agent is on another now
        assert_eq!(pick(&kids, 6, 1, false, false), vec![1, 3, 5]);
        assert_eq!(pick(&kids, 6, 1, true, false), vec![1, 3, 5], "stopped too");
    }

    #[test]
    fn started_children_of_a_lapsed_daemon_are_adopted_and_hold_their_slots() {
        // 0..4 run on another live daemon, 4..7 had started on a lapsed one, 7.. never started.
        let mut kids: Vec<Kid> = (0..4).map(|i| kid(i, true, true, false)).collect();
        kids.extend((4..7).map(|i| kid(i, false, true, false)));
        kids.extend((7..20).map(|i| kid(i, false, false, false)));
        // Throttle 10, two live daemons: a share of 5; 7 slots taken, 3 free.
        assert_eq!(pick(&kids, 10, 2, false, false), vec![4, 5, 6, 7, 8]);
        // Suspended: only the started ones; stopped: every unstarted one too.
        assert_eq!(pick(&kids, 10, 2, false, true), vec![4, 5, 6]);
        assert_eq!(pick(&kids, 10, 2, true, false).len(), 3 + 13);
        // Three live daemons: a share of 4.
        assert_eq!(pick(&kids, 10, 3, false, false), vec![4, 5, 6, 7]);
        assert_eq!(pick(&kids, 4, 3, false, false), vec![4, 5]);
    }

    #[test]
    fn a_daemon_holds_at_most_its_share_and_a_full_throttle_starts_nothing_new() {
        // This daemon runs 3 of a throttle of 10 over three daemons (a share of 4).
        let mut kids: Vec<Kid> = (0..3).map(|i| kid(i, true, true, true)).collect();
        kids.extend((3..20).map(|i| kid(i, false, false, false)));
        assert_eq!(pick(&kids, 10, 3, false, false), vec![3]);
        // Alone, it takes the whole throttle.
        assert_eq!(pick(&kids, 10, 1, false, false).len(), 7);
        let full: Vec<Kid> = (0..12).map(|i| kid(i, i < 10, i < 10, false)).collect();
        assert!(pick(&full, 10, 1, false, false).is_empty());
    }
}
