//! This daemon's lease on a shared store, and its claims: it registers at start, heartbeats
//! (and claims) every interval, and runs what it claimed as batches of children under the
//! fan-out ([`Manager::launch`]). A heartbeat that finds the lease lost (the daemon was
//! paused, or cut off from the database, past its TTL) drops every child without an
//! acknowledgement, lets the output writer refuse what they had handed over, and registers
//! the daemon anew: its children are adopted, by it or by another daemon, through the path
//! of a restart (attach again from the last stored sequence number, or find a starting
//! child's run by its label).
//!
//! On a store of one daemon's own (SQLite) the lease never lapses and a job is claimed
//! whole, at its creation or at the daemon's start: there is no loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::Manager;
use crate::daemon::writer::WriteOp;
use crate::store::StoreError;

/// The batches of children this daemon runs.
#[derive(Default)]
pub(super) struct Batches {
    next: u64,
    /// Each batch's job and task.
    running: HashMap<u64, (i64, JoinHandle<()>)>,
    /// How many batches of each job run here.
    per_job: HashMap<i64, usize>,
}

impl Batches {
    /// A new batch of job `job_id`: its key.
    pub(super) fn add(&mut self, job_id: i64) -> u64 {
        self.next += 1;
        *self.per_job.entry(job_id).or_default() += 1;
        self.next
    }

    pub(super) fn started(&mut self, key: u64, job_id: i64, task: JoinHandle<()>) {
        self.running.insert(key, (job_id, task));
    }

    /// Batch `key` of job `job_id` ended: whether it was the job's last one here.
    pub(super) fn ended(&mut self, key: u64, job_id: i64) -> bool {
        self.running.remove(&key);
        let left = self.per_job.get_mut(&job_id).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == 0 {
            self.per_job.remove(&job_id);
        }
        left == 0
    }
}

/// The claims of each job asked for by kicks: one goes at a time, and the kicks that come
/// meanwhile fold into one more. It also keeps the jobs whose last claim left nothing to
/// claim: a child's end there frees a slot that no claim would fill, so it claims nothing
/// (10,000 children on 3 daemons made 10,000 claims, each reading every unfinished child).
#[derive(Default)]
pub(super) struct Kicks(HashMap<i64, bool>, HashSet<i64>);

impl Kicks {
    /// The last claim of job `job_id` found `more` claimable children left, or none.
    pub(super) fn left(&mut self, job_id: i64, more: bool) {
        if more {
            self.1.remove(&job_id);
        } else {
            self.1.insert(job_id);
        }
    }

    /// Whether a slot freed in job `job_id` is worth a claim: its last claim left some.
    pub(super) fn worth_a_claim(&self, job_id: i64) -> bool {
        !self.1.contains(&job_id)
    }

    /// Job `job_id` is gone: nothing is kept of it.
    pub(super) fn forget(&mut self, job_id: i64) {
        self.0.remove(&job_id);
        self.1.remove(&job_id);
    }

    /// Job `job_id` was kicked: whether a claim should start now (none is going for it);
    /// otherwise the claim going does one more once it is done.
    pub(super) fn kicked(&mut self, job_id: i64) -> bool {
        match self.0.get_mut(&job_id) {
            Some(again) => {
                *again = true;
                false
            }
            None => {
                self.0.insert(job_id, false);
                true
            }
        }
    }

    /// The claim of job `job_id` is done: whether to claim once more (kicked meanwhile).
    pub(super) fn claimed(&mut self, job_id: i64) -> bool {
        match self.0.get_mut(&job_id) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                self.0.remove(&job_id);
                false
            }
        }
    }
}

impl Manager {
    /// Registers this daemon on its store, then claims (and runs) what it may: every
    /// unfinished job an earlier daemon left, or a lapsed daemon's children. The number of
    /// jobs it claimed children of.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        self.register().await?;
        self.claim_round().await
    }

    async fn register(&self) -> Result<(), StoreError> {
        let sent = Instant::now();
        let epoch = self.store.register().await?;
        self.health.clear_fenced();
        self.confirmed(sent);
        if epoch != 0 {
            tracing::info!(
                daemon = epoch,
                "this daemon holds a lease on the shared job store"
            );
        }
        Ok(())
    }

    /// The lease was renewed by a heartbeat sent at `sent`: it lasts at least the TTL from
    /// then, on this daemon's clock.
    fn confirmed(&self, sent: Instant) {
        let until = (self.store.epoch() != 0).then(|| sent + self.timing.ttl);
        *self.lease_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// Returns once this daemon knows its lease to be live (at once on a store of its own):
    /// before an acknowledgement goes to an agent.
    pub(crate) async fn lease_confirmed(&self) {
        let pause = (self.timing.heartbeat / 4).min(std::time::Duration::from_millis(100));
        loop {
            let until = *self.lease_until.lock().unwrap_or_else(|p| p.into_inner());
            if until.is_none_or(|t| Instant::now() < t) {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Starts the heartbeat and claim loop, on a store shared by several daemons.
    pub fn start_lease(self: &Arc<Self>) {
        if self.store.epoch() == 0 {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move { manager.lease_loop().await });
    }

    async fn lease_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.timing.heartbeat).await;
            let sent = Instant::now();
            match self.store.heartbeat().await {
                Ok(()) => self.confirmed(sent),
                Err(StoreError::Fenced) => {
                    tracing::warn!(
                        daemon = self.store.epoch(),
                        "this daemon's lease on the job store lapsed: its children are dropped, and it registers again"
                    );
                    self.drop_children().await;
                    if let Err(e) = self.register().await {
                        tracing::error!(error = %e, "cannot register on the job store; trying again");
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed; trying again");
                    continue;
                }
            }
            if let Err(e) = self.claim_round().await {
                tracing::warn!(error = %e, "claiming children failed; trying again");
            }
        }
    }

    /// Claims what it may of every claimable job: the number of jobs it claimed children of.
    async fn claim_round(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut n = 0;
        for job_id in self.store.claimable().await? {
            if self.claim_job(job_id).await? > 0 {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Claims what it may of job `job_id`'s children and runs them: how many.
    pub(super) async fn claim_job(self: &Arc<Self>, job_id: i64) -> Result<usize, StoreError> {
        let children = match self.store.claim(job_id).await {
            Ok(c) => {
                self.kicks().left(job_id, c.more);
                c.children
            }
            // The heartbeat finds it too, and drops and registers.
            Err(StoreError::Fenced) => return Ok(0),
            Err(e) => return Err(e),
        };
        if children.is_empty() {
            return Ok(0);
        }
        let Some(job) = self.store.job(job_id).await? else {
            return Ok(0);
        };
        let n = children.len();
        let adopted = children.iter().filter(|c| c.started_at_ms.is_some()).count();
        tracing::info!(job = job_id, name = %job.name, children = n, adopted, "claimed children of a job");
        self.launch(job, children);
        Ok(n)
    }

    /// Claims more of job `job_id` (one of its children ended, freeing a slot), in the
    /// background. One claim of a job at a time: kicks that come while it goes ask for one
    /// more claim after it, not one each (a claim reads every unfinished child of the job,
    /// with its row locked: 10,000 ends are not 10,000 claims).
    pub(super) fn kick(self: &Arc<Self>, job_id: i64) {
        if self.store.epoch() == 0 || !self.kicks().kicked(job_id) {
            return;
        }
        self.claim_in_background(job_id);
    }

    /// A child of job `job_id` ended here: a claim, unless the last one left nothing to
    /// claim (the heartbeat's claims find what a lapsed daemon leaves, a notice a changed
    /// job).
    pub(super) fn slot_freed(self: &Arc<Self>, job_id: i64) {
        if self.kicks().worth_a_claim(job_id) {
            self.kick(job_id);
        }
    }

    fn claim_in_background(self: &Arc<Self>, job_id: i64) {
        let manager = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = manager.claim_job(job_id).await {
                    tracing::warn!(job = job_id, error = %e, "claiming children failed; trying again later");
                }
                if !manager.kicks().claimed(job_id) {
                    break;
                }
            }
        });
    }

    /// Drops every child this daemon runs, without a write or an acknowledgement more, and
    /// waits until the output writer has refused whatever they had handed over.
    async fn drop_children(&self) {
        let tasks: Vec<(i64, JoinHandle<()>)> = {
            let mut batches = self.batches();
            batches.per_job.clear();
            batches.running.drain().map(|(_, task)| task).collect()
        };
        for (_, task) in &tasks {
            task.abort();
        }
        let mut jobs = Vec::new();
        for (job_id, task) in tasks {
            let _ = task.await;
            jobs.push(job_id);
        }
        jobs.sort_unstable();
        jobs.dedup();
        {
            let mut active = self.active();
            for id in &jobs {
                active.remove(id);
            }
        }
        let (done, drained) = oneshot::channel();
        if self.writer.send(WriteOp::Flush { done }).await.is_ok() {
            let _ = drained.await;
        }
        for id in jobs {
            self.changed(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kicks;

    #[test]
    fn kicks_during_a_claim_fold_into_one_more_claim() {
        let mut kicks = Kicks::default();
        assert!(kicks.kicked(7), "the first kick claims");
        assert!(!kicks.kicked(7), "a kick meanwhile waits for the claim going");
        assert!(!kicks.kicked(7));
        assert!(kicks.kicked(8), "another job claims apart");
        assert!(kicks.claimed(7), "kicked meanwhile: once more");
        assert!(!kicks.claimed(7), "nothing since: done");
        assert!(kicks.kicked(7), "a later kick claims again");
        assert!(!kicks.claimed(7));
        assert!(!kicks.claimed(8));
        assert!(kicks.0.is_empty(), "nothing is left once the claims are done");
    }

    #[test]
    fn a_job_whose_last_claim_left_nothing_is_not_worth_a_claim_at_each_end() {
        let mut kicks = Kicks::default();
        assert!(kicks.worth_a_claim(7), "never claimed: worth one");
        kicks.left(7, false);
        assert!(!kicks.worth_a_claim(7));
        assert!(kicks.worth_a_claim(8), "another job is apart");
        kicks.left(7, true);
        assert!(kicks.worth_a_claim(7), "children left: worth a claim again");
        kicks.left(7, false);
        kicks.forget(7);
        assert!(kicks.worth_a_claim(7) && kicks.1.is_empty());
    }
}
