//! Runs the daemon gave up on: a child whose agent stayed out of reach past the reconnect
//! window fails, but its run may go on when the host is back. Each such run is kept in a small
//! durable list (`STATE_DIR/orphaned-runs.json`, written atomically) and chased: StopRun is
//! retried with jittered backoff (250ms doubling to 30s) until the agent answers (stopped, or
//! the run is gone), across daemon restarts; then it leaves the list. The child's recorded end
//! (Failed, with its reason) is left as it is. Each try takes the daemon's identity as it is
//! then ([`Identity`]): a daemon that started before `rjob pki init` stops these runs once the
//! identity exists, with no restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rjob_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::backoff::{jittered, random_unit};
use crate::child::LeftRun;
use crate::connect::{connect, describe_status};
use crate::daemon::identity::Identity;
use crate::hosts::Host;

/// The list's file in the state directory.
pub const FILE_NAME: &str = "orphaned-runs.json";

/// The on-disk format's version.
const VERSION: u32 = 1;

/// Longest wait between two tries at an agent still out of reach.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// How long one try may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A run to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub host: String,
    pub port: u16,
    /// The run's id, when known.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Otherwise the run's label (`InstanceId/index`): the run, if it started, has it.
    #[serde(default)]
    pub label: String,
    pub job_id: i64,
    pub idx: u32,
    pub since_ms: i64,
}

impl Orphan {
    pub fn new(host: &Host, run: &LeftRun, job_id: i64, idx: u32, since_ms: i64) -> Orphan {
        let (run_id, label) = match run {
            LeftRun::Id(id) => (Some(id.clone()), String::new()),
            LeftRun::Label(label) => (None, label.clone()),
        };
        Orphan {
            host: host.name.clone(),
            port: host.port,
            run_id,
            label,
            job_id,
            idx,
            since_ms,
        }
    }

    fn same_run(&self, other: &Orphan) -> bool {
        (&self.host, self.port, &self.run_id, &self.label)
            == (&other.host, other.port, &other.run_id, &other.label)
    }

    fn target(&self) -> Host {
        Host {
            name: self.host.clone(),
            port: self.port,
        }
    }

    fn run(&self) -> &str {
        self.run_id.as_deref().unwrap_or(&self.label)
    }
}

#[derive(Serialize, Deserialize)]
struct ListFile {
    version: u32,
    runs: Vec<Orphan>,
}

/// What the agent said.
enum Answer {
    Stopped,
    Gone,
    /// It will never take this stop (another client's run, say): nothing more to do.
    Refused(String),
}

pub struct Orphans {
    path: PathBuf,
    /// The daemon's identity, as it is at each try (loaded once it exists).
    identity: Arc<Identity>,
    list: Mutex<Vec<Orphan>>,
    /// Held while the file is written, so that the last write has the latest list.
    writing: Mutex<()>,
    /// The file is behind the list (a write failed): written again at the next chance.
    dirty: AtomicBool,
}

impl Orphans {
    /// Loads the list in `state_dir`. A file that cannot be read is moved aside, with an
    /// error in the log; it is never overwritten.
    pub fn open(state_dir: &Path, identity: Arc<Identity>) -> Arc<Orphans> {
        let path = state_dir.join(FILE_NAME);
        let list = match load(&path) {
            Ok(list) => list,
            Err(e) => {
                let aside = path.with_extension("json.unreadable");
                tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %e, "cannot read the list of runs to stop; moving it aside (those runs are not stopped)");
                let _ = std::fs::rename(&path, &aside);
                Vec::new()
            }
        };
        if !list.is_empty() {
            tracing::info!(
                runs = list.len(),
                "runs left by an earlier daemon to stop once their agents answer"
            );
        }
        Arc::new(Orphans {
            path,
            identity,
            list: Mutex::new(list),
            writing: Mutex::new(()),
            dirty: AtomicBool::new(false),
        })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Orphan>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts chasing every run in the list (at the daemon's start).
    pub fn resume(self: &Arc<Self>) {
        for orphan in self.list().clone() {
            tokio::spawn(self.clone().chase(orphan));
        }
    }

    /// Adds a run and starts chasing it; it is on disk when this returns (or the failure to
    /// write it is logged and the write is tried again).
    pub async fn add(self: &Arc<Self>, orphan: Orphan) {
        {
            let mut list = self.list();
            if list.iter().any(|o| o.same_run(&orphan)) {
                return;
            }
            list.push(orphan.clone());
        }
        tracing::warn!(job = orphan.job_id, child = orphan.idx, host = %orphan.target().label(), run = orphan.run(), "gave up on a run that may still be going: it is stopped once its agent answers");
        self.persist().await;
        tokio::spawn(self.clone().chase(orphan));
    }

    /// How many runs wait to be stopped.
    pub fn pending(&self) -> usize {
        self.list().len()
    }

    async fn chase(self: Arc<Self>, orphan: Orphan) {
        let mut attempt = 0u32;
        loop {
            if self.dirty.load(Ordering::SeqCst) {
                self.persist().await;
            }
            match self.stop(&orphan).await {
                Ok(answer) => {
                    let host = orphan.target().label();
                    match answer {
                        Answer::Stopped => {
                            tracing::info!(
                                job = orphan.job_id,
                                child = orphan.idx,
                                host,
                                run = orphan.run(),
                                "stopped a run the daemon had given up on"
                            )
                        }
                        Answer::Gone => {
                            tracing::info!(
                                job = orphan.job_id,
                                child = orphan.idx,
                                host,
                                run = orphan.run(),
                                "a run the daemon had given up on is gone from its agent"
                            )
                        }
                        Answer::Refused(reason) => {
                            tracing::warn!(
                                job = orphan.job_id,
                                child = orphan.idx,
                                host,
                                run = orphan.run(),
                                reason,
                                "the agent refused to stop a run the daemon had given up on"
                            )
                        }
                    }
                    break;
                }
                Err(reason) => {
                    tracing::debug!(
                        job = orphan.job_id,
                        child = orphan.idx,
                        run = orphan.run(),
                        reason,
                        attempt,
                        "the agent of a run to stop is still out of reach"
                    )
                }
            }
            tokio::time::sleep(jittered(attempt, RETRY_CAP, random_unit())).await;
            attempt = attempt.saturating_add(1);
        }
        self.list().retain(|o| o != &orphan);
        self.persist().await;
    }

    /// One try: `Err` when the agent could not be asked.
    async fn stop(&self, orphan: &Orphan) -> Result<Answer, String> {
        let tls = self.identity.get().map_err(|e| self.identity.missing(&e))?;
        let mut client = connect(&orphan.target(), &tls, CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let run_id = match &orphan.run_id {
            Some(id) => id.clone(),
            // No label tells this run apart: never stop another one.
            None if orphan.label.is_empty() => return Ok(Answer::Gone),
            None => {
                let runs = match client.list_runs(pb::ListRunsRequest {}).await {
                    Ok(r) => r.into_inner().runs,
                    Err(status) => return answer(&status),
                };
                match runs.into_iter().find(|r| r.label == orphan.label) {
                    Some(run) => run.run_id,
                    // Never started: nothing to stop.
                    None => return Ok(Answer::Gone),
                }
            }
        };
        let request = pb::RunControlRequest { run_id };
        match client.stop_run(request).await {
            Ok(_) => Ok(Answer::Stopped),
            Err(status) => answer(&status),
        }
    }

    /// Writes the list (temp file, fsync, rename, fsync of the directory), off the runtime.
    async fn persist(self: &Arc<Self>) {
        let me = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _writing = me.writing.lock().unwrap_or_else(|p| p.into_inner());
            // Taken under the write lock: a later write always has a later list.
            let runs = me.list().clone();
            me.dirty.store(false, Ordering::SeqCst);
            let result = save(&me.path, &runs);
            if result.is_err() {
                me.dirty.store(true, Ordering::SeqCst);
            }
            result
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the list of runs to stop; trying again")
            }
            Err(e) => tracing::error!(error = %e, "writing the list of runs to stop failed"),
        }
    }
}

/// A status from the agent: a definite answer, or `Err` when worth asking again.
fn answer(status: &tonic::Status) -> Result<Answer, String> {
    use tonic::Code;
    match status.code() {
        Code::NotFound => Ok(Answer::Gone),
        Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument => {
            Ok(Answer::Refused(describe_status(status)))
        }
        _ => Err(describe_status(status)),
    }
}

fn load(path: &Path) -> Result<Vec<Orphan>, String> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let file: ListFile = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if file.version != VERSION {
        return Err(format!(
            "version {} (this daemon reads version {VERSION})",
            file.version
        ));
    }
    Ok(file.runs)
}

fn save(path: &Path, runs: &[Orphan]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_vec_pretty(&ListFile {
        version: VERSION,
        runs: runs.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn orphan(run: LeftRun) -> Orphan {
        let host = Host {
            name: "127.0.0.9".into(),
            port: 7443,
        };
        Orphan::new(&host, &run, 3, 1, 1000)
    }

    #[test]
    fn the_list_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(load(&path).unwrap(), Vec::new());
        let runs = vec![
            orphan(LeftRun::Id("r-1".into())),
            orphan(LeftRun::Label("uuid/1".into())),
        ];
        save(&path, &runs).unwrap();
        assert_eq!(load(&path).unwrap(), runs);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn an_unreadable_list_is_moved_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"{\"version\": 1, \"runs\": [tru").unwrap();
        let orphans = Orphans::open(dir.path(), Arc::new(Identity::new(None, None)));
        assert_eq!(orphans.pending(), 0);
        let aside = std::fs::read(path.with_extension("json.unreadable")).unwrap();
        assert_eq!(aside, b"{\"version\": 1, \"runs\": [tru");
        std::fs::write(&path, b"{\"version\": 2, \"runs\": []}").unwrap();
        assert!(load(&path).unwrap_err().contains("version 2"));
    }

    #[tokio::test]
    async fn a_try_uses_the_identity_made_after_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let identity = Arc::new(Identity::new(Some(pki.clone()), None));
        let orphans = Orphans::open(dir.path(), identity);
        // Port 1 on 127.0.0.1: nothing listens there.
        let mut run = orphan(LeftRun::Id("r-1".into()));
        (run.host, run.port) = ("127.0.0.1".into(), 1);
        let before = orphans.stop(&run).await.err().unwrap();
        assert!(before.contains("no controller identity"), "{before}");
        crate::pki::init(&pki, "rjob-controller").unwrap();
        let after = orphans.stop(&run).await.err().unwrap();
        assert!(
            !after.contains("identity") && after.contains("127.0.0.1:1"),
            "the try dials the agent once the identity exists: {after}"
        );
    }

    #[test]
    fn only_a_definite_answer_ends_the_chase() {
        use tonic::Status;
        assert!(matches!(answer(&Status::not_found("no run")), Ok(Answer::Gone)));
        assert!(matches!(
            answer(&Status::permission_denied("another client's")),
            Ok(Answer::Refused(_))
        ));
        assert!(answer(&Status::unavailable("connection refused")).is_err());
        assert!(answer(&Status::deadline_exceeded("slow")).is_err());
    }
}
