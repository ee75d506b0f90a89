//! Sessions kept across a daemon's restart: `STATE_DIR/sessions.json` holds what
//! `rjob session new` was asked (name, hosts, throttle limit, connect timeout, when), written
//! atomically after every `session new` and `session remove`. A new daemon opens them again
//! at start: each is listed at once, and its hosts are dialled in the background (an invoke
//! meanwhile dials a host that is not connected yet, as it does for any host that is down).
//!
//! Only the definitions are kept: connections are never carried over, and nothing secret is
//! in the file (the controller's identity is read from its own place, as for every job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::hosts::Host;

/// The file's name in the state directory.
pub const FILE: &str = "sessions.json";

/// Larger than any real list of sessions; a bigger file is not read (and is set aside).
const MAX_FILE_BYTES: u64 = 64 << 20;

const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("cannot keep the sessions in {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the sessions in {path}: {why}")]
    Read { path: PathBuf, why: String },
}

/// One session as `rjob session new` asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub name: String,
    pub hosts: Vec<SavedHost>,
    pub throttle_limit: u32,
    pub connect_timeout_ms: u64,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedHost {
    pub name: String,
    pub port: u16,
}

impl Saved {
    /// The session this asks for, over `conns`.
    pub fn session(&self, conns: std::sync::Arc<dyn crate::pool::Connections>) -> crate::pool::Session {
        crate::pool::Session {
            name: self.name.clone(),
            conns,
            created_at_ms: self.created_at_ms,
            throttle_limit: self.throttle_limit,
            builtin: false,
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub fn hosts(&self) -> Vec<Host> {
        self.hosts
            .iter()
            .map(|h| Host {
                name: h.name.clone(),
                port: h.port,
            })
            .collect()
    }
}

impl From<&Host> for SavedHost {
    fn from(host: &Host) -> SavedHost {
        SavedHost {
            name: host.name.clone(),
            port: host.port,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    sessions: Vec<Saved>,
}

/// The sessions of one state directory, as last written.
#[derive(Debug)]
pub struct SavedSessions {
    path: PathBuf,
    sessions: Mutex<BTreeMap<String, Saved>>,
}

impl SavedSessions {
    /// Reads `DIR/sessions.json` (none yet: no sessions). A file that cannot be read or
    /// understood is renamed to `sessions.json.bad`, kept for the operator, and said in the
    /// error; the daemon then starts with no sessions rather than not at all.
    pub fn open(dir: &Path) -> (SavedSessions, Option<SavedError>) {
        let path = dir.join(FILE);
        let (sessions, error) = match read(&path) {
            Ok(sessions) => (sessions, None),
            Err(why) => {
                let aside = dir.join(format!("{FILE}.bad"));
                let _ = std::fs::rename(&path, &aside);
                let why = format!("{why}; set aside as {}", aside.display());
                (
                    Vec::new(),
                    Some(SavedError::Read {
                        path: path.clone(),
                        why,
                    }),
                )
            }
        };
        let sessions = sessions.into_iter().map(|s| (s.name.clone(), s)).collect();
        (
            SavedSessions {
                path,
                sessions: Mutex::new(sessions),
            },
            error,
        )
    }

    /// Every session kept, by name.
    pub fn all(&self) -> Vec<Saved> {
        self.lock().values().cloned().collect()
    }

    /// Keeps `session` (replacing one of its name) and writes the file.
    pub fn add(&self, session: Saved) -> Result<(), SavedError> {
        let mut sessions = self.lock();
        let before = sessions.insert(session.name.clone(), session.clone());
        self.write(&sessions).inspect_err(|_| {
            match before {
                Some(old) => sessions.insert(old.name.clone(), old),
                None => sessions.remove(&session.name),
            };
        })
    }

    /// Forgets the session `name` (if it was kept) and writes the file.
    pub fn remove(&self, name: &str) -> Result<(), SavedError> {
        let mut sessions = self.lock();
        if sessions.remove(name).is_none() {
            return Ok(());
        }
        self.write(&sessions)
    }

    fn write(&self, sessions: &BTreeMap<String, Saved>) -> Result<(), SavedError> {
        let on_disk = OnDisk {
            version: VERSION,
            sessions: sessions.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&on_disk).map_err(|e| SavedError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::daemon::statedir::write_atomic(&self.path, &bytes).map_err(|source| SavedError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Saved>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read(path: &Path) -> Result<Vec<Saved>, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{size} bytes, more than the {MAX_FILE_BYTES} a sessions file may have"
        ));
    }
    let bytes = crate::limits::read_capped(file, MAX_FILE_BYTES)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("it grew past the {MAX_FILE_BYTES} bytes a sessions file may have"))?;
    let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| format!("not a sessions file: {e}"))?;
    if on_disk.version != VERSION {
        return Err(format!(
            "version {} (this rjob reads version {VERSION}): written by another rjob",
            on_disk.version
        ));
    }
    for session in &on_disk.sessions {
        crate::pool::check_name(&session.name).map_err(|e| e.to_string())?;
        for host in &session.hosts {
            crate::hosts::check_host_name(&host.name).map_err(|e| e.to_string())?;
        }
    }
    Ok(on_disk.sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(name: &str) -> Saved {
        Saved {
            name: name.to_string(),
            hosts: vec![SavedHost {
                name: "web01".to_string(),
                port: 7443,
            }],
            throttle_limit: 8,
            connect_timeout_ms: 5000,
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn what_was_added_is_read_back_by_the_next_daemon_and_a_removal_sticks() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (saved, error) = SavedSessions::open(dir.path());
        assert!(error.is_none());
        assert!(saved.all().is_empty());
        saved.add(web("a")).expect("in the test");
        saved.add(web("b")).expect("in the test");
        saved.remove("a").expect("in the test");
        let (again, error) = SavedSessions::open(dir.path());
        assert!(error.is_none(), "{error:?}");
        assert_eq!(again.all(), [web("b")]);
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_named_not_fatal() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join(FILE), b"{\"version\": 1, \"sessions\": [").expect("in the test");
        let (saved, error) = SavedSessions::open(dir.path());
        let error = error.expect("the damage is said").to_string();
        assert!(
            error.contains("sessions.json") && error.contains(".bad"),
            "{error}"
        );
        assert!(saved.all().is_empty());
        assert!(dir.path().join("sessions.json.bad").exists());
        // A bad host name in an otherwise well-formed file is refused the same way.
        let mut bad = web("c");
        bad.hosts[0].name = "-rf /".to_string();
        let text = serde_json::to_string(&OnDisk {
            version: VERSION,
            sessions: vec![bad],
        })
        .expect("in the test");
        std::fs::write(dir.path().join(FILE), text).expect("in the test");
        assert!(SavedSessions::open(dir.path()).1.is_some());
    }

    #[test]
    fn a_failed_write_keeps_memory_as_the_file_is() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (saved, _) = SavedSessions::open(&dir.path().join("gone"));
        let e = saved.add(web("a")).expect_err("no such directory");
        assert!(e.to_string().contains("cannot keep the sessions in"), "{e}");
        assert!(saved.all().is_empty());
    }
}
