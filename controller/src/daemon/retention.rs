//! The retention sweep of `rjob serve --retention AGE --max-store-size SIZE`: at start, then
//! every interval, it removes jobs by age and then by size, as [`crate::store::retention`]
//! rules, each through the manager's own removal (so waiters and receivers of the job end as
//! they do after `rjob remove`). Every removal is logged with the job and why.
//!
//! Several daemons on one PostgreSQL store may sweep at once: a job another one removed
//! meanwhile is skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::manager::{now_ms, JobError, Manager};
use crate::store::retention::{expired, kept_because, show_size, size_order, Policy};
use crate::store::RetentionRow;

/// Environment variable for the time between sweeps (hidden; `--retention-interval` too).
pub const INTERVAL_ENV: &str = "RJOB_RETENTION_INTERVAL";

/// The time between sweeps when none is given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub by_age: Vec<i64>,
    pub by_size: Vec<i64>,
}

/// Runs the sweep at start and then every `interval`, for the daemon's life (nothing when
/// the policy sets no limit).
pub fn spawn(manager: Arc<Manager>, policy: Policy, interval: Duration) {
    if !policy.is_set() {
        return;
    }
    tracing::info!(
        retention = ?policy.max_age.map(|a| humantime::format_duration(a).to_string()),
        max_store_size = ?policy.max_size.map(show_size),
        force = policy.force,
        interval = %humantime::format_duration(interval),
        "retention on"
    );
    tokio::spawn(async move {
        loop {
            if let Err(e) = sweep(&manager, &policy).await {
                tracing::warn!(
                    "retention: {e}; trying again in {}",
                    humantime::format_duration(interval)
                );
            }
            tokio::time::sleep(interval).await;
        }
    });
}

/// Removes the job, stopping it first when it is still going; false when it was gone.
async fn remove(manager: &Manager, row: &RetentionRow) -> Result<bool, JobError> {
    match manager.remove(&[row.id.to_string()], !row.finished).await {
        Ok(_) => Ok(true),
        Err(JobError::NotFound(_)) => Ok(false), // removed meanwhile (`rjob remove`, another daemon)
        Err(e) => Err(e),
    }
}

/// One sweep: by age, then by size.
pub async fn sweep(manager: &Manager, policy: &Policy) -> Result<Swept, JobError> {
    let store = manager.store.clone();
    let rows = store.retention_rows().await?;
    let now = now_ms();
    let mut swept = Swept::default();
    if let Some(max_age) = policy.max_age {
        let age = humantime::format_duration(max_age);
        for row in expired(&rows, now, max_age, policy.force) {
            let bytes = store.job_size(row.id).await?;
            if remove(manager, &row).await? {
                let ago = Duration::from_millis(
                    u64::try_from(now.saturating_sub(row.ended_at_ms.unwrap_or(now))).unwrap_or(0),
                );
                let ago = humantime::format_duration(Duration::from_secs(ago.as_secs()));
                tracing::info!(
                    job = row.id,
                    why = "age",
                    unreceived = row.unreceived,
                    output = %show_size(bytes),
                    "retention: removed job {}: it ended {ago} ago, more than the retention of {age}",
                    row.id
                );
                swept.by_age.push(row.id);
            }
        }
        for row in rows.iter().filter(|r| r.finished) {
            if let Some(why) = kept_because(row, policy.force) {
                let past = row.ended_at_ms.is_some_and(|end| {
                    now.saturating_sub(end) > i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX)
                });
                if past {
                    tracing::debug!(
                        job = row.id,
                        "retention: job {} is past its age but kept: {why} (--force-retention removes it)",
                        row.id
                    );
                }
            }
        }
    }
    if let Some(max) = policy.max_size {
        let done: HashSet<i64> = swept.by_age.iter().copied().collect();
        let mut size = store.store_size().await?;
        for row in size_order(&rows, policy.force) {
            if size <= max {
                break;
            }
            if done.contains(&row.id) {
                continue;
            }
            let bytes = store.job_size(row.id).await?;
            if !remove(manager, &row).await? {
                continue;
            }
            let after = store.store_size().await?;
            tracing::info!(
                job = row.id,
                why = "size",
                finished = row.finished,
                unreceived = row.unreceived,
                output = %show_size(bytes),
                "retention: removed job {}: the store held {}, over its limit of {} (now {})",
                row.id,
                show_size(size),
                show_size(max),
                show_size(after)
            );
            swept.by_size.push(row.id);
            size = after;
        }
        if size > max {
            let hint = if policy.force {
                "nothing is left to remove"
            } else {
                "the jobs left are not finished or have output no `rjob receive` has taken (--force-retention removes those too)"
            };
            tracing::warn!(
                "retention: the store holds {}, over its limit of {}: {hint}",
                show_size(size),
                show_size(max)
            );
        }
    }
    Ok(swept)
}
