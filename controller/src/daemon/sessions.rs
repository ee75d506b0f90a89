//! The daemon's sessions (`rjob session new|list|remove`): the requests checked, the
//! sessions opened in (and closed from) the daemon's [`Pool`], and shown as the CLI lists
//! them. Sessions are this daemon's own (see [`crate::pool`]); what was asked for is kept in
//! the state directory ([`crate::daemon::saved_sessions`]) and opened again by the next
//! daemon.

use std::sync::Arc;

use rjob_proto::v1 as pb;
use tonic::Status;

use crate::daemon::manager::Manager;
use crate::daemon::saved_sessions::{Saved, SavedHost};
use crate::hosts::Host;
use crate::pool::{check_name, Dialled, PoolError, Session};

/// The wire's status for a pool error: all of them are about what the user asked.
pub fn status(e: PoolError) -> Status {
    match e {
        PoolError::Unknown(_) => Status::not_found(e.to_string()),
        PoolError::Exists(_) | PoolError::Builtin(_) => Status::failed_precondition(e.to_string()),
        PoolError::BadName { .. } => Status::invalid_argument(e.to_string()),
    }
}

/// The hosts of a request, checked as a job's are.
pub fn hosts_of(addrs: &[pb::HostAddr]) -> Result<Vec<Host>, Status> {
    addrs
        .iter()
        .map(|h| {
            crate::hosts::check_host_name(&h.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let port = u16::try_from(h.port)
                .map_err(|_| Status::invalid_argument(format!("bad port {}", h.port)))?;
            Ok(Host {
                name: h.name.clone(),
                port,
            })
        })
        .collect()
}

/// A session as the CLI lists it.
pub fn info(session: &Session) -> pb::SessionInfo {
    pb::SessionInfo {
        name: session.name.clone(),
        hosts: session
            .conns
            .hosts()
            .into_iter()
            .map(|link| pb::SessionHost {
                host: Some(pb::HostAddr {
                    name: link.host.name,
                    port: u32::from(link.host.port),
                    user: String::new(),
                }),
                connected: link.connected,
                reason: link.reason,
            })
            .collect(),
        created_at_ms: session.created_at_ms,
        throttle_limit: session.throttle_limit,
        builtin: session.builtin,
    }
}

/// `rjob session new`: dials every host once, keeps the session (even when some hosts could
/// not be reached: they are redialled meanwhile, and at each invoke).
pub async fn new_session(
    manager: &Arc<Manager>,
    req: pb::NewSessionRequest,
) -> Result<pb::SessionInfo, Status> {
    check_name(&req.name).map_err(status)?;
    let hosts = hosts_of(&req.hosts)?;
    if hosts.is_empty() {
        return Err(Status::invalid_argument("a session needs at least one host"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = hosts.iter().find(|h| !seen.insert(*h)) {
        return Err(Status::invalid_argument(format!(
            "{} is named twice: a session has each host once",
            twice.label()
        )));
    }
    let tls = manager.identity_tls().map_err(Status::failed_precondition)?;
    if manager.pool().contains(&req.name) {
        return Err(status(PoolError::Exists(req.name)));
    }
    let saved = Saved {
        name: req.name.clone(),
        hosts: hosts.iter().map(SavedHost::from).collect(),
        throttle_limit: req.throttle_limit.max(1),
        connect_timeout_ms: req.connect_timeout_ms.max(1),
        created_at_ms: crate::clock::now_ms(),
    };
    let conns = Dialled::open(hosts, tls, saved.throttle_limit as usize, saved.timeout()).await;
    let session = saved.session(conns.clone());
    if let Err(e) = manager.pool().insert(session.clone()) {
        // Another `session new` of this name came first.
        crate::pool::Connections::close(&*conns);
        return Err(status(e));
    }
    if let Err(e) = manager.saved_sessions().add(saved) {
        // A session the next daemon would not know: none at all, and why.
        let _ = manager.pool().remove(&req.name);
        crate::pool::Connections::close(&*conns);
        return Err(Status::unavailable(format!(
            "session {} not opened: {e}",
            req.name
        )));
    }
    let info = info(&session);
    let connected = info.hosts.iter().filter(|h| h.connected).count();
    tracing::info!(session = %session.name, hosts = info.hosts.len(), connected, "session opened");
    Ok(info)
}

/// `rjob session list`.
pub fn list(manager: &Manager, names: &[String]) -> Result<Vec<pb::SessionInfo>, Status> {
    if names.is_empty() {
        return Ok(manager.pool().list().iter().map(info).collect());
    }
    names
        .iter()
        .map(|n| manager.pool().get(n).map(|s| info(&s)).map_err(status))
        .collect()
}

/// `rjob session remove`.
pub fn remove(manager: &Manager, name: &str) -> Result<pb::SessionInfo, Status> {
    // Forgotten on disk first: a session removed must not come back at the next start.
    if manager.pool().get(name).is_ok_and(|s| !s.builtin) {
        manager
            .saved_sessions()
            .remove(name)
            .map_err(|e| Status::unavailable(format!("session {name} not removed: {e}")))?;
    }
    let session = manager.pool().remove(name).map_err(status)?;
    tracing::info!(session = %name, "session removed");
    Ok(info(&session))
}

/// Opens again the sessions an earlier daemon of this state directory kept: each is listed
/// at once with the age it had, and its hosts are dialled in the background.
pub fn reopen(manager: &Arc<Manager>) {
    let saved = manager.saved_sessions().all();
    if saved.is_empty() {
        return;
    }
    let tls = match manager.identity_tls() {
        Ok(tls) => tls,
        Err(why) => {
            // Kept on disk: opened by a daemon that has an identity.
            tracing::error!(
                sessions = saved.len(),
                "the sessions kept are not opened again: {why}"
            );
            return;
        }
    };
    for kept in saved {
        let (conns, dialling) = Dialled::start(
            kept.hosts(),
            tls.clone(),
            kept.throttle_limit as usize,
            kept.timeout(),
        );
        match manager.pool().insert(kept.session(conns)) {
            Ok(()) => {
                tracing::info!(session = %kept.name, hosts = kept.hosts.len(), "session opened again");
                tokio::spawn(dialling);
            }
            Err(e) => tracing::error!(session = %kept.name, "the session kept is not opened again: {e}"),
        }
    }
}
