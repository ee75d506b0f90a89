//! The TCP listener and the TLS handshakes in front of the gRPC service, hardened against
//! peers that connect and never finish (or never start) the handshake.
//!
//! - Handshakes in flight are capped overall and per source ([`crate::handshake`]); a
//!   connection beyond the caps is closed at once, unread, with a reset.
//! - Each handshake has `handshake_timeout` to complete. One that times out or is evicted is
//!   closed with a reset too.
//! - Failures are counted and logged once per interval ([`crate::handshake_log`]).
//! - Out of descriptors (EMFILE), the loop does not spin on the error: it frees a spare
//!   descriptor kept for this, takes the waiting connection, closes it, and takes the spare
//!   back; if even that fails it waits a little before it tries again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rjob_proto::coalesce::CoalescingStream;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::handshake::{Handshakes, Source};
use crate::handshake_log::{is_out_of_descriptors, FailureLog, Outcome};

/// Connections the kernel queues for `accept` (it caps this at `net.core.somaxconn`): a burst
/// of connections must not fill the queue and make a controller's SYN wait for a resend.
const LISTEN_BACKLOG: u32 = 4096;

/// How long the loop waits when it cannot accept at all (no spare descriptor, or another
/// error that may last), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The handshake caps and timings (from the config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_handshakes: usize,
    pub max_handshakes_per_source: usize,
    pub handshake_timeout: Duration,
    pub log_interval: Duration,
}

/// Binds `addr` with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections whose TLS handshake completed.
pub type Established = mpsc::Receiver<std::io::Result<TlsStream<CoalescingStream>>>;

/// Accepts connections and completes their TLS handshakes concurrently, within the limits;
/// the established ones come out of the channel. Aborting the task stops accepting.
pub fn accept_tls(
    listener: TcpListener,
    config: rustls::ServerConfig,
    limits: Limits,
) -> (Established, tokio::task::JoinHandle<()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(256);
    let handshakes = Handshakes::new(limits.max_handshakes, limits.max_handshakes_per_source);
    let failures = FailureLog::new();
    let report = failures.clone().report_every(limits.log_interval, {
        let handshakes = handshakes.clone();
        move || handshakes.in_flight()
    });
    let accepting = tokio::spawn(async move {
        let accept_loop = accept_loop(listener, acceptor, tx, handshakes, failures, limits);
        tokio::select! {
            () = report => {}
            () = accept_loop => {}
        }
    });
    (rx, accepting)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<TlsStream<CoalescingStream>>>,
    handshakes: Arc<Handshakes>,
    failures: Arc<FailureLog>,
    limits: Limits,
) {
    let mut spare = Spare::open();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_out_of_descriptors(&e) => {
                failures.accept_error(&e);
                shed_one(&listener, &mut spare, &failures).await;
                continue;
            }
            Err(e) => {
                failures.accept_error(&e);
                if !matches!(e.raw_os_error(), Some(libc::ECONNABORTED) | Some(libc::EINTR)) {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let source = Source::of(peer.ip());
        let admitted = match handshakes.admit(source) {
            Ok(admitted) => admitted,
            Err(why) => {
                failures.refused(source, why);
                refuse(tcp);
                continue;
            }
        };
        if let Some(victim) = admitted.evicted {
            failures.record(victim, Outcome::Evicted, None);
        }
        // Small answers must not wait ~40 ms for the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let failures = failures.clone();
        let mut slot = admitted.slot;
        let timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let mut handshake = acceptor.accept(CoalescingStream::new(tcp));
            let outcome = tokio::select! {
                outcome = &mut handshake => Some(outcome),
                () = tokio::time::sleep(timeout) => None,
                // Counted when the newcomer was admitted.
                () = slot.evicted() => return reset(handshake),
            };
            // Established, failed or timed out, it is no longer a handshake in flight.
            drop(slot);
            match outcome {
                Some(Ok(mut tls)) => {
                    // One line per connection (not per request): how often controllers pay
                    // a handshake, e.g. none after the first over a session.
                    tracing::info!(%peer, "TLS connection established");
                    // HTTP/2's opening (SETTINGS, WINDOW_UPDATE, and the answers to what came
                    // with the client's preface) leaves in one write, when the connection
                    // first waits for the client.
                    tls.get_mut().0.hold_until_read();
                    let _ = tx.send(Ok(tls)).await;
                }
                // Closed normally: a TLS alert may be on its way to the peer.
                Some(Err(e)) => failures.record(source, Outcome::Failed, Some(&e)),
                None => {
                    failures.record(source, Outcome::TimedOut, None);
                    reset(handshake);
                }
            }
        });
    }
}

/// Closes a stalled handshake with a reset: there is nothing to tell the peer, and a reset
/// leaves no TIME_WAIT behind (nor a connection-tracking entry for two minutes).
fn reset(handshake: tokio_rustls::Accept<CoalescingStream>) {
    if let Some(stream) = handshake.get_ref() {
        let _ = stream.get_ref().set_zero_linger();
    }
}

/// Closes a connection without reading it, with a reset (no TIME_WAIT left behind).
fn refuse(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// Out of descriptors: frees the spare, takes the connection waiting in the queue (if any)
/// and closes it, then takes the spare back. Without a spare (or if another thread took it),
/// waits a little: the error would otherwise come back at once, forever.
///
/// The accept here must not wait: the kernel reports EMFILE before it looks at the queue, so
/// the queue may well be empty, and a connection accepted later is one that might have been
/// served.
async fn shed_one(listener: &TcpListener, spare: &mut Spare, failures: &FailureLog) {
    use futures::FutureExt as _;
    if spare.release() {
        if let Some(Ok((tcp, peer))) = listener.accept().now_or_never() {
            failures.no_descriptors(Source::of(peer.ip()));
            refuse(tcp);
        }
        spare.reopen();
        if spare.held() {
            return;
        }
    }
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// A descriptor kept open so that, when the process has run out, one can be freed to accept
/// and close what waits in the queue.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Spare {
        let mut spare = Spare(None);
        spare.reopen();
        spare
    }

    fn reopen(&mut self) {
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
    }

    fn held(&self) -> bool {
        self.0.is_some()
    }

    /// Closes the spare; true when there was one.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }
}
