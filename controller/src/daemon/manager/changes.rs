//! Each job's change notification: a counter in a `watch` channel, made when someone first
//! waits on the job and dropped once nobody does. The job's state changes and the output
//! writer (for the jobs whose output it stored) bump it, so a waiter wakes for the jobs it
//! waits on, never for the others; so do the changes other daemons sharing the store make,
//! as the store tells of them (`peers`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

#[derive(Default)]
pub struct Changes(Mutex<HashMap<i64, watch::Sender<u64>>>);

impl Changes {
    fn lock(&self) -> MutexGuard<'_, HashMap<i64, watch::Sender<u64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Job `id`'s notification; subscribe before reading the job, then wait for `changed()`.
    pub fn subscribe(&self, id: i64) -> watch::Receiver<u64> {
        self.lock()
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Job `id` changed: its waiters wake (nothing happens when nobody waits).
    pub fn bump(&self, id: i64) {
        let mut jobs = self.lock();
        if let Some(tx) = jobs.get(&id) {
            if tx.receiver_count() == 0 {
                jobs.remove(&id);
            } else {
                tx.send_modify(|v| *v += 1);
            }
        }
    }

    /// Any job may have changed (notices from other daemons were missed): every waiter wakes.
    pub fn bump_all(&self) {
        let mut jobs = self.lock();
        jobs.retain(|_, tx| tx.receiver_count() > 0);
        for tx in jobs.values() {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Job `id` is gone: its waiters wake once more (and find it gone), then the channel closes.
    pub fn removed(&self, id: i64) {
        if let Some(tx) = self.lock().remove(&id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// How many jobs have a notification.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_for_its_job_only() {
        let changes = Changes::default();
        let mut one = changes.subscribe(1);
        let mut two = changes.subscribe(2);
        changes.bump(2);
        assert!(
            !one.has_changed().expect("open"),
            "job 2's change woke job 1's waiter"
        );
        assert!(two.has_changed().expect("open"));
        changes.bump(1);
        one.changed().await.expect("job 1 changed");
        two.changed().await.expect("job 2 changed");
    }

    #[tokio::test]
    async fn a_notification_goes_once_nobody_waits() {
        let changes = Changes::default();
        changes.bump(3);
        assert_eq!(changes.len(), 0, "a bump makes no channel");
        let waiter = changes.subscribe(3);
        assert_eq!(changes.len(), 1);
        drop(waiter);
        changes.bump(3);
        assert_eq!(changes.len(), 0);
    }

    #[tokio::test]
    async fn a_resync_wakes_every_waiter() {
        let changes = Changes::default();
        let mut one = changes.subscribe(1);
        let mut two = changes.subscribe(2);
        drop(changes.subscribe(3));
        changes.bump_all();
        one.changed().await.expect("job 1's waiter wakes");
        two.changed().await.expect("job 2's waiter wakes");
        assert_eq!(changes.len(), 2, "nobody waits on job 3 any more");
    }

    #[tokio::test]
    async fn a_removed_job_wakes_its_waiters_once_then_closes() {
        let changes = Changes::default();
        let mut waiter = changes.subscribe(4);
        changes.removed(4);
        assert!(waiter.changed().await.is_ok(), "the last change is seen");
        assert!(waiter.changed().await.is_err(), "then the channel is closed");
        assert_eq!(changes.len(), 0);
    }
}
