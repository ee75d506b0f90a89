//! Dialling out (`rjob-agent --connect HOST:PORT`): for an agent behind NAT or a firewall
//! that drops inbound connections, the agent opens the TCP connection to the controller
//! (`rjob serve --agent-listen`), and the rest is as when the controller dials in. The agent
//! announces its name in a short preamble ([`rjob_proto::dial`]); the controller, still the
//! TLS client, checks the agent's certificate against that name; the agent, still the TLS
//! server, checks the controller's certificate and policy exactly as on its listener. The
//! connection then carries the agent's gRPC service, HTTP/2 with the controller as client.
//!
//! Each controller has a task of its own that keeps one connection up: when it ends (or a
//! dial fails) the task waits [`reconnect_delay`] and dials again. The delays are jittered
//! over the whole window ("full jitter"), so that a fleet cut off at one instant (a
//! controller restart) comes back spread out rather than all at once. Runs do not depend on
//! the connection: they go on, their output stays spooled, and the controller attaches again
//! from where it was once the agent is back.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rjob_proto::coalesce::CoalescingStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

/// First reconnect window; it doubles with every failed attempt up to [`RECONNECT_CAP`].
const RECONNECT_BASE: Duration = Duration::from_secs(1);

/// Longest reconnect window.
pub const RECONNECT_CAP: Duration = Duration::from_secs(30);

/// Shortest wait between two dials, so that a controller that closes at once is no spin.
const RECONNECT_FLOOR: Duration = Duration::from_millis(50);

/// A connection that lasted this long was a good one: the next loss starts from the first
/// (shortest) reconnect window again.
const STABLE: Duration = Duration::from_secs(10);

/// How long the TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the TLS handshake may take. The controller chose to be dialled and may be busy
/// with many agents coming back at once: more generous than the listener's timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Every this many failed dials in a row, one is logged as a warning (the others at debug).
const WARN_EVERY: u32 = 10;

/// How long to wait before dial `attempt` (0 after a connection was lost, 1 after the first
/// failed dial, ...): a point drawn by `unit` (in [0, 1)) in a window of 1s doubling per
/// attempt, capped at 30s, never under 50ms.
pub fn reconnect_delay(attempt: u32, unit: f64) -> Duration {
    let window = RECONNECT_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(RECONNECT_CAP);
    window.mul_f64(unit.clamp(0.0, 1.0)).max(RECONNECT_FLOOR)
}

/// A random number in [0, 1), from the system's random source.
pub fn random_unit() -> f64 {
    let (bits, _) = uuid::Uuid::new_v4().as_u64_pair();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `target` reads as HOST:PORT (`[v6]:PORT` too).
pub fn valid_target(target: &str) -> bool {
    target
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

/// The name to announce by default: the certificate's first DNS name, else its first IP
/// address.
pub fn certificate_name(cert_pem: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let dns = names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => Some((*d).to_string()),
        _ => None,
    });
    dns.or_else(|| {
        names.iter().find_map(|n| match n {
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::Ipv4Addr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::Ipv6Addr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
    })
}

/// A dialled-out connection, TLS established, as the gRPC server takes it. When it is
/// dropped (the connection is over) its dialler learns so and dials again.
pub struct Dialled {
    tls: TlsStream<CoalescingStream>,
    _over: oneshot::Sender<()>,
}

impl AsyncRead for Dialled {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Dialled {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tls).poll_shutdown(cx)
    }
}

/// The peer's certificates reach the service as on the listener's connections: the same
/// policy applies.
impl tonic::transport::server::Connected for Dialled {
    type ConnectInfo = <TlsStream<CoalescingStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tls.connect_info()
    }
}

/// Whom to dial, as whom, and where the connections go.
#[derive(Clone)]
pub struct Dialler {
    /// The name announced in the preamble.
    pub name: String,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Established connections, for the gRPC server.
    pub connections: mpsc::Sender<Dialled>,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no connection within {}", humantime::format_duration(CONNECT_TIMEOUT))]
    ConnectTimeout,
    #[error("sending the preamble: {0}")]
    Preamble(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no TLS handshake within {}", humantime::format_duration(HANDSHAKE_TIMEOUT))]
    HandshakeTimeout,
    #[error("the agent is shutting down")]
    Closing,
}

impl Dialler {
    /// One task per target, each keeping a connection to it up until aborted.
    pub fn spawn(&self, targets: &[String]) -> Vec<JoinHandle<()>> {
        targets
            .iter()
            .map(|target| {
                let (dialler, target) = (self.clone(), target.clone());
                tokio::spawn(async move { dialler.keep_dialling(&target).await })
            })
            .collect()
    }

    /// Dials `target` again and again: each time a connection ends or a dial fails, after
    /// [`reconnect_delay`].
    pub async fn keep_dialling(&self, target: &str) {
        let mut attempt = 0u32;
        loop {
            match self.dial(target).await {
                Ok(over) => {
                    let up = Instant::now();
                    tracing::info!(controller = %target, name = %self.name, "dialled in to the controller");
                    let _ = over.await;
                    let lasted = up.elapsed();
                    tracing::warn!(controller = %target, lasted = %humantime::format_duration(Duration::from_secs(lasted.as_secs())), "the connection to the controller ended; dialling again");
                    attempt = if lasted >= STABLE {
                        0
                    } else {
                        attempt.saturating_add(1)
                    };
                }
                Err(DialError::Closing) => return,
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    if attempt == 1 || attempt.is_multiple_of(WARN_EVERY) {
                        tracing::warn!(controller = %target, attempts = attempt, error = %e, "cannot dial the controller; trying again with backoff");
                    } else {
                        tracing::debug!(controller = %target, attempts = attempt, error = %e, "cannot dial the controller");
                    }
                }
            }
            tokio::time::sleep(reconnect_delay(attempt, random_unit())).await;
        }
    }

    /// One dial: TCP, the preamble, the TLS handshake (as the server), and the connection
    /// handed to the gRPC server. Answers what resolves once the connection is over.
    pub async fn dial(&self, target: &str) -> Result<oneshot::Receiver<()>, DialError> {
        let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target))
            .await
            .map_err(|_| DialError::ConnectTimeout)?
            .map_err(DialError::Connect)?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let preamble = rjob_proto::dial::encode(&self.name)
            .map_err(|e| DialError::Preamble(std::io::Error::other(e.to_string())))?;
        tcp.write_all(&preamble).await.map_err(DialError::Preamble)?;
        let handshake = self.acceptor.accept(CoalescingStream::new(tcp));
        let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| DialError::HandshakeTimeout)?
            .map_err(DialError::Handshake)?;
        // As on the listener: HTTP/2's opening leaves in one write.
        tls.get_mut().0.hold_until_read();
        let (over_tx, over) = oneshot::channel();
        let dialled = Dialled { tls, _over: over_tx };
        self.connections
            .send(dialled)
            .await
            .map_err(|_| DialError::Closing)?;
        Ok(over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_spread_over_a_window_that_doubles_to_the_cap() {
        assert_eq!(reconnect_delay(0, 0.5), Duration::from_millis(500));
        assert_eq!(reconnect_delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(reconnect_delay(3, 0.999), Duration::from_millis(7992));
        assert_eq!(reconnect_delay(5, 1.0), RECONNECT_CAP);
        assert_eq!(reconnect_delay(u32::MAX, 0.5), RECONNECT_CAP / 2);
        // Never a spin, never beyond the cap, whatever the randomness says.
        assert_eq!(reconnect_delay(0, 0.0), RECONNECT_FLOOR);
        assert_eq!(reconnect_delay(9, -3.0), RECONNECT_FLOOR);
        assert_eq!(reconnect_delay(9, 7.0), RECONNECT_CAP);
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn ten_thousand_agents_cut_at_once_do_not_come_back_at_once() {
        // After a controller restart every agent is at attempt 0, then 1, ...: within the
        // first window no 100ms holds more than a few percent of the fleet.
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = reconnect_delay(0, random_unit());
            let i = usize::try_from(d.as_millis() / 100).unwrap_or(9).min(9);
            buckets[i] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 1_500), "{buckets:?}");
    }

    #[test]
    fn targets_are_host_and_port() {
        assert!(valid_target("ctl.example:7444"));
        assert!(valid_target("10.0.0.1:7444"));
        assert!(valid_target("[fd00::1]:7444"));
        assert!(!valid_target("ctl.example"));
        assert!(!valid_target(":7444"));
        assert!(!valid_target("ctl:0"));
        assert!(!valid_target("ctl:99999"));
    }
}
