//! Accepting agents that dial in (`rjob serve --agent-listen ADDR`): each connection's
//! preamble names the agent ([`rjob_proto::dial`]), the daemon runs the TLS client handshake
//! with that name as the server name (the agent's certificate must prove it, exactly as
//! when the daemon dials the host), then HTTP/2, and registers the connection.
//!
//! Handshakes in flight are capped ([`MAX_HANDSHAKES`]): a fleet coming back at once waits
//! in the accept queue rather than starving the daemon; each has [`HANDSHAKE_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::DialIn;
use crate::connect::{describe, dialled_in, Lifetime, Tls};

/// Most handshakes at once (preamble, TLS, HTTP/2).
const MAX_HANDSHAKES: usize = 256;

/// How long an agent has for its preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TLS and HTTP/2 handshakes may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The kernel's accept queue (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for agents to dial in to.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts agents on `listener` into `registry` until aborted. `tls` answers the
/// controller identity (none yet: agents are turned away until there is one).
pub fn spawn(
    listener: TcpListener,
    registry: DialIn,
    tls: impl Fn() -> Option<Tls> + Send + Sync + 'static,
) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        registry.set_listening(addr);
    }
    let tls = Arc::new(tls);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an agent's connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (registry, tls) = (registry.clone(), tls.clone());
            tokio::spawn(async move {
                let Some(tls) = tls() else {
                    tracing::warn!(%peer, "an agent dialled in, but the daemon has no controller identity yet (rjob pki init)");
                    return;
                };
                if let Err(reason) = admit(tcp, peer, &registry, &tls, permit).await {
                    tracing::warn!(%peer, %reason, "refused an agent that dialled in");
                }
            });
        }
    })
}

/// One agent's connection: preamble, handshakes, registration; then its entry goes when the
/// connection ends.
async fn admit(
    mut tcp: TcpStream,
    peer: SocketAddr,
    registry: &DialIn,
    tls: &Tls,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), String> {
    let name = tokio::time::timeout(PREAMBLE_TIMEOUT, rjob_proto::dial::read(&mut tcp))
        .await
        .map_err(|_| {
            format!(
                "no preamble within {}",
                humantime::format_duration(PREAMBLE_TIMEOUT)
            )
        })?
        .map_err(|e| e.to_string())?;
    let (close_tx, close) = oneshot::channel();
    let (over, ended) = oneshot::channel();
    let agent = dialled_in(tcp, &name, tls, HANDSHAKE_TIMEOUT, Lifetime { close, over })
        .await
        .map_err(|e| format!("{name}: {}", describe(&e)))?;
    drop(permit);
    let id = registry.insert(&name, agent, peer, close_tx);
    tracing::info!(host = %name, %peer, "agent dialled in");
    // The connection is over (either side ended it, or a newer one replaced it).
    let _ = ended.await;
    registry.remove(&name, id);
    tracing::info!(host = %name, %peer, "agent disconnected");
    Ok(())
}
