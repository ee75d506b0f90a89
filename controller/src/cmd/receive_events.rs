//! What `rjob receive -o json` says besides output: each finished host's `result` record (the
//! one `rjob invoke -o json` prints), and with `--follow` a `state` record each time a host's
//! state changes (Receive-Job -WriteEvents).
//!
//! Without `--follow`, a result is given only for a host that had finished before the receive
//! began (all its output was then stored, so the record comes after the last of it). With
//! `--follow`, every host has finished when the output ends, and the results come then.

use std::time::Duration;

use rjob_proto::v1 as pb;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::child::ChildOutcome;
use crate::daemon::client::DaemonClient;
use crate::output::result_record;
use crate::state::State;

/// How often `--follow` looks at the hosts' states.
const POLL: Duration = Duration::from_millis(200);

pub struct Events {
    /// The job as state records name it.
    tag: String,
    instance_id: String,
    labels: Vec<String>,
    /// Children the receive shows (all, or the one of --host).
    selected: Vec<bool>,
    /// The last state seen per child.
    states: Vec<State>,
    /// Per child: its outcome, once the receive may give it.
    results: Vec<Option<ChildOutcome>>,
    given: Vec<bool>,
    follow: bool,
    client: DaemonClient,
    snapshots: Option<mpsc::Receiver<pb::JobInfo>>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

impl Events {
    pub fn new(
        client: &DaemonClient,
        job: &pb::JobInfo,
        tag: String,
        host: Option<&str>,
        follow: bool,
    ) -> Events {
        let outcomes = crate::receive_view::outcomes(job);
        let results = job
            .children
            .iter()
            .zip(outcomes)
            .map(|(c, o)| o.filter(|_| !follow && State::from_pb(c.state).is_finished()))
            .collect();
        let (snapshots, poller) = if follow {
            let (tx, rx) = mpsc::channel(1);
            let mut lister = client.clone();
            let id = job.instance_id.clone();
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(POLL).await;
                    let request = pb::ListJobsRequest {
                        jobs: vec![id.clone()],
                    };
                    let Ok(listed) = lister.list_jobs(request).await else {
                        continue;
                    };
                    let Some(job) = listed.into_inner().jobs.into_iter().next() else {
                        return;
                    };
                    if tx.send(job).await.is_err() {
                        return;
                    }
                }
            });
            (Some(rx), Some(task))
        } else {
            (None, None)
        };
        Events {
            tag,
            instance_id: job.instance_id.clone(),
            labels: job.children.iter().map(|c| c.host.clone()).collect(),
            selected: job
                .children
                .iter()
                .map(|c| host.is_none_or(|h| h == c.host))
                .collect(),
            states: job.children.iter().map(|c| State::from_pb(c.state)).collect(),
            results,
            given: vec![false; job.children.len()],
            follow,
            client: client.clone(),
            snapshots,
            poller,
        }
    }

    /// The job's states as the poller sees them (`--follow`); taken once, by the loop that
    /// waits on them.
    pub fn take_snapshots(&mut self) -> Option<mpsc::Receiver<pb::JobInfo>> {
        self.snapshots.take()
    }

    /// A state record for each selected child whose state moved since last seen.
    pub fn changes(&mut self, job: &pb::JobInfo) -> Vec<Value> {
        let mut records = Vec::new();
        for (i, c) in job.children.iter().enumerate().take(self.states.len()) {
            let state = State::from_pb(c.state);
            if !self.selected[i] || self.states[i] == state {
                continue;
            }
            self.states[i] = state;
            let record = crate::records::StateRecord {
                kind: crate::records::StateTag::Tag,
                job: self.tag.clone(),
                host: self.labels[i].clone(),
                state,
            };
            records.push(serde_json::to_value(record).unwrap_or_default());
        }
        records
    }

    /// Child `i`'s result record, once, when the receive may give it.
    pub fn result(&mut self, i: usize) -> Option<Value> {
        if !self.selected.get(i).copied().unwrap_or(false) || self.given[i] {
            return None;
        }
        let outcome = self.results[i].as_ref()?;
        self.given[i] = true;
        Some(result_record(&self.labels[i], outcome))
    }

    /// The output ended: with `--follow`, the last state changes and every result; then the
    /// results not given yet.
    pub async fn at_end(&mut self) -> Vec<Value> {
        let mut records = Vec::new();
        if self.follow {
            let request = pb::ListJobsRequest {
                jobs: vec![self.instance_id.clone()],
            };
            if let Ok(listed) = self.client.list_jobs(request).await {
                if let Some(job) = listed.into_inner().jobs.into_iter().next() {
                    records.extend(self.changes(&job));
                    let outcomes = crate::receive_view::outcomes(&job);
                    for ((slot, c), o) in self.results.iter_mut().zip(&job.children).zip(outcomes) {
                        *slot = o.filter(|_| State::from_pb(c.state).is_finished());
                    }
                }
            }
        }
        for i in 0..self.labels.len() {
            records.extend(self.result(i));
        }
        records
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(task) = self.poller.take() {
            task.abort();
        }
    }
}
