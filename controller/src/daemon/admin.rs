//! The daemon about itself: `rjob daemon status` (pid, uptime, store, jobs by state,
//! identity, store health) and `rjob daemon stop` (a graceful stop, as SIGTERM: remote runs go
//! on on their agents and the next daemon picks them up).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rjob_proto::v1 as pb;
use tokio::sync::Notify;

use crate::daemon::manager::{JobError, Manager};
use crate::state::State;

/// What the daemon knows of itself, and the stop it was asked for.
pub struct Admin {
    pub started_at_ms: i64,
    pub store_path: PathBuf,
    /// Notified once `rjob daemon stop` asks the daemon to stop.
    pub stop: Arc<Notify>,
}

impl Admin {
    pub fn new(store_path: PathBuf) -> Admin {
        Admin {
            started_at_ms: crate::clock::now_ms(),
            store_path,
            stop: Arc::new(Notify::new()),
        }
    }

    /// The store's files (the database and its `-wal`, `-shm`, `-journal` companions).
    fn store_bytes(&self) -> u64 {
        let base = self.store_path.as_os_str().to_owned();
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .filter_map(|suffix| {
                let mut path = base.clone();
                path.push(suffix);
                std::fs::metadata(PathBuf::from(path)).ok()
            })
            .map(|m| m.len())
            .sum()
    }

    pub async fn status(&self, manager: &Manager) -> Result<pb::DaemonStatusResponse, JobError> {
        let jobs = manager.list(&[]).await?;
        let mut by_state: BTreeMap<State, u32> = BTreeMap::new();
        for job in &jobs {
            *by_state.entry(State::from_pb(job.state)).or_default() += 1;
        }
        let health = manager.health();
        let store_health = health.warning().or_else(|| health.lost()).unwrap_or_default();
        let now = crate::clock::now_ms();
        Ok(pb::DaemonStatusResponse {
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            uptime_ms: u64::try_from(now - self.started_at_ms).unwrap_or(0),
            store_path: self.store_path.display().to_string(),
            store_bytes: self.store_bytes(),
            jobs: by_state
                .into_iter()
                .map(|(state, jobs)| pb::JobStateCount {
                    state: state.to_pb().into(),
                    jobs,
                })
                .collect(),
            identity_loaded: manager.identity_loaded(),
            store_health,
            agent_listen: manager
                .dialin()
                .listening()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            connected: manager
                .dialin()
                .list()
                .into_iter()
                .map(|c| pb::ConnectedAgent {
                    name: c.name,
                    since_ms: c.since_ms,
                    peer: c.peer.to_string(),
                })
                .collect(),
        })
    }

    /// Asks the daemon to stop; the children still running on their agents.
    pub async fn stop(&self, manager: &Manager) -> Result<pb::StopDaemonResponse, JobError> {
        let jobs = manager.list(&[]).await?;
        let running = jobs
            .iter()
            .flat_map(|j| &j.children)
            .filter(|c| State::from_pb(c.state) == State::Running)
            .count();
        tracing::info!(
            running,
            "stopping on request (rjob daemon stop); remote runs go on"
        );
        self.stop.notify_one();
        Ok(pb::StopDaemonResponse {
            running_children: u32::try_from(running).unwrap_or(u32::MAX),
        })
    }
}
