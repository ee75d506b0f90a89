//! Sessions (PowerShell's PSSession): sets of agents whose connections the daemon keeps open,
//! so that a fan-out over them pays no TCP or TLS handshake.
//!
//! The interface: a session is any [`Connections`], a source of already-connected
//! [`Agent`]s for its hosts. A child reaches one through [`crate::child::Target::Pooled`]
//! (its host and the session's `Arc<dyn Connections>`), so the fan-out and the child code
//! are the same with or without a session. The [`Pool`] is this daemon's registry of
//! sessions by name: [`Dialled`] is a session the daemon dialled (`rjob session new`); a
//! registry of agents that dialled in plugs in as one more `Connections`, inserted as the
//! built-in `@connected` session ([`Session::builtin`]; `rjob session remove` refuses it).
//!
//! Sessions are per daemon (with several daemons on one PostgreSQL store, each has its own);
//! their connections live in its memory, and what was asked for is kept in the state
//! directory, opened again by the next daemon ([`crate::daemon::saved_sessions`]).

mod dialled;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::connect::{Agent, ConnectError};
use crate::hosts::Host;

pub use dialled::Dialled;

/// A host of a session, as `rjob session list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub host: Host,
    pub connected: bool,
    /// Why it is not connected (empty when it is).
    pub reason: String,
}

/// Live connections to a set of agents.
pub trait Connections: Send + Sync + 'static {
    /// Its hosts, in order, each connected or not.
    fn hosts(&self) -> Vec<HostLink>;
    /// An agent over the live connection to `host`; when that connection is down, dialled
    /// once (within `timeout`) before it fails with the reason.
    fn agent<'a>(&'a self, host: &'a Host, timeout: Duration) -> BoxFuture<'a, Result<Agent, ConnectError>>;
    /// Closes every connection and stops reconnecting (`rjob session remove`).
    fn close(&self);
}

/// One session of the pool.
#[derive(Clone)]
pub struct Session {
    pub name: String,
    pub conns: Arc<dyn Connections>,
    pub created_at_ms: i64,
    pub throttle_limit: u32,
    /// Kept by the daemon itself (`@connected`): never removed by a user.
    pub builtin: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("no session {0:?}: `rjob session list` lists them")]
    Unknown(String),
    #[error("a session {0:?} exists already: remove it first (`rjob session remove {0}`)")]
    Exists(String),
    #[error("session {0:?} is built in: the daemon keeps it, it cannot be removed")]
    Builtin(String),
    #[error("bad session name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
}

/// A session name a user may give: 1 to 64 letters, digits, `.`, `_` or `-`, not starting
/// with `-` (names starting with `@` are the daemon's own).
pub fn check_name(name: &str) -> Result<(), PoolError> {
    let bad = |why| {
        Err(PoolError::BadName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("give 1 to 64 characters");
    }
    if name.starts_with('-') {
        return bad("it may not start with '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("use letters, digits, '.', '_' and '-' only");
    }
    Ok(())
}

/// This daemon's sessions, by name.
#[derive(Default)]
pub struct Pool {
    sessions: Mutex<BTreeMap<String, Session>>,
}

impl Pool {
    fn sessions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session; its name must be free.
    pub fn insert(&self, session: Session) -> Result<(), PoolError> {
        let mut sessions = self.sessions();
        if sessions.contains_key(&session.name) {
            return Err(PoolError::Exists(session.name));
        }
        sessions.insert(session.name.clone(), session);
        Ok(())
    }

    /// Whether a session has this name (a new one would be refused).
    pub fn contains(&self, name: &str) -> bool {
        self.sessions().contains_key(name)
    }

    pub fn get(&self, name: &str) -> Result<Session, PoolError> {
        self.sessions()
            .get(name)
            .cloned()
            .ok_or_else(|| PoolError::Unknown(name.to_string()))
    }

    /// Removes a session and closes its connections (runs going over them finish first).
    pub fn remove(&self, name: &str) -> Result<Session, PoolError> {
        let mut sessions = self.sessions();
        match sessions.get(name) {
            None => return Err(PoolError::Unknown(name.to_string())),
            Some(s) if s.builtin => return Err(PoolError::Builtin(name.to_string())),
            Some(_) => {}
        }
        let session = sessions
            .remove(name)
            .ok_or_else(|| PoolError::Unknown(name.to_string()))?;
        drop(sessions);
        session.conns.close();
        Ok(session)
    }

    /// Every session, by name.
    pub fn list(&self) -> Vec<Session> {
        self.sessions().values().cloned().collect()
    }

    /// Closes every session (the daemon stops).
    pub fn close_all(&self) {
        for session in std::mem::take(&mut *self.sessions()).into_values() {
            session.conns.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Host>);

    impl Connections for Fixed {
        fn hosts(&self) -> Vec<HostLink> {
            self.0
                .iter()
                .map(|h| HostLink {
                    host: h.clone(),
                    connected: false,
                    reason: "never".into(),
                })
                .collect()
        }
        fn agent<'a>(&'a self, host: &'a Host, _: Duration) -> BoxFuture<'a, Result<Agent, ConnectError>> {
            Box::pin(async move { Err(ConnectError::Transport(format!("{}: no", host.label()))) })
        }
        fn close(&self) {}
    }

    fn session(name: &str, builtin: bool) -> Session {
        Session {
            name: name.into(),
            conns: Arc::new(Fixed(vec![Host {
                name: "web01".into(),
                port: 7443,
            }])),
            created_at_ms: 0,
            throttle_limit: 32,
            builtin,
        }
    }

    #[test]
    fn names_are_unique_and_builtins_stay() {
        let pool = Pool::default();
        pool.insert(session("web", false)).expect("free");
        assert_eq!(
            pool.insert(session("web", false)),
            Err(PoolError::Exists("web".into()))
        );
        pool.insert(session("@connected", true)).expect("free");
        assert_eq!(
            pool.remove("@connected").err(),
            Some(PoolError::Builtin("@connected".into()))
        );
        assert_eq!(pool.list().len(), 2);
        assert!(pool.remove("web").is_ok());
        assert_eq!(pool.get("web").err(), Some(PoolError::Unknown("web".into())));
        assert_eq!(
            PoolError::Unknown("db".into()).to_string(),
            "no session \"db\": `rjob session list` lists them"
        );
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_name("web-prod_1.a").is_ok());
        for bad in ["", "@connected", "-x", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
