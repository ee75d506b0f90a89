//! The controller's side of mutual TLS: finding its identity and dialling agents.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rjob_proto::v1::agent_client::AgentClient;
use tonic::codegen::http;

use crate::hosts::Host;

/// HTTP/2 flow-control window of a connection that is not to an agent over the network (the
/// daemon's embedded agent, on its Unix socket); an agent's comes from [`crate::flow`].
const LOCAL_WINDOW: u32 = 64 * 1024;

/// Environment variable naming the identity directory.
pub const IDENTITY_ENV: &str = "RJOB_IDENTITY";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no controller identity in {dir} ({file} is missing): run `rjob pki init {dir}` or pass --identity DIR")]
    Missing { dir: PathBuf, file: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no identity directory: pass --identity DIR, set RJOB_IDENTITY, or set HOME")]
    NoHome,
    #[error("the identity in {dir} is not usable: {source}; issue it again with `rjob pki issue-client`")]
    Invalid {
        dir: PathBuf,
        #[source]
        source: rjob_proto::tls::TlsError,
    },
}

/// Where the identity is: `--identity`, then `$RJOB_IDENTITY`, then
/// `$XDG_CONFIG_HOME/rjob/pki`, then `~/.config/rjob/pki`.
pub fn identity_dir(flag: Option<&Path>) -> Result<PathBuf, IdentityError> {
    if let Some(dir) = flag {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os(IDENTITY_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(config).join("rjob/pki"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".config/rjob/pki"))
        .ok_or(IdentityError::NoHome)
}

/// The controller's TLS settings, loaded once and shared by every connection.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    pub fn load(dir: &Path) -> Result<Tls, IdentityError> {
        let read = |file: &'static str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => IdentityError::Missing {
                    dir: dir.to_owned(),
                    file,
                },
                _ => IdentityError::Read { path, source },
            })
        };
        let config =
            rjob_proto::tls::client_config(&read("ca.crt")?, &read("client.crt")?, &read("client.key")?)
                .map_err(|source| IdentityError::Invalid {
                    dir: dir.to_owned(),
                    source,
                })?;
        Ok(Tls {
            config: Arc::new(config),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid address {0}")]
    Address(String),
    #[error("{0}")]
    Transport(String),
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("no answer from {authority} within {}", humantime::format_duration(*.timeout))]
    TimeoutAt { authority: String, timeout: Duration },
}

/// One HTTP/2 connection to an agent. Requests go straight to hyper: no buffer task and no
/// reconnecting layer (a child job reconnects by itself, with its own policy).
#[derive(Clone)]
pub struct Conn {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    /// Why the agent closed the connection, when it said so with a TLS alert (it refused
    /// this controller's certificate): requests fail with this instead of hyper's "operation
    /// was canceled".
    refused: Arc<OnceLock<String>>,
    /// Asks the agent why, once, when a request failed without an alert read.
    probe: Option<Arc<(crate::connect_alert::Probe, std::sync::atomic::AtomicBool)>>,
    /// Closed (its sender dropped) once the connection's task has ended.
    ended: tokio::sync::watch::Receiver<()>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The agent's TLS alert, as the reason a connection ended.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

impl Conn {
    /// Whether the connection has ended (the agent closed it, it broke, keep-alive failed).
    pub fn is_closed(&self) -> bool {
        self.send.is_closed() || self.ended.has_changed().is_err()
    }

    /// Resolves once the connection has ended.
    pub async fn closed(&self) {
        let mut ended = self.ended.clone();
        while ended.changed().await.is_ok() {}
    }

    fn error(&self, e: hyper::Error) -> BoxError {
        match self.refused.get() {
            Some(reason) => Box::new(Refused(reason.clone())),
            None => Box::new(e),
        }
    }
}

/// The agent API over one connection.
pub type Agent = AgentClient<Conn>;

impl tower::Service<http::Request<tonic::body::Body>> for Conn {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.send.poll_ready(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.error(e))),
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        let sent = self.send.send_request(request);
        Box::pin(async move {
            match sent.await {
                Ok(response) => Ok(response),
                Err(e) => {
                    if let Some(probe) = &this.probe {
                        let first = !probe.1.swap(true, std::sync::atomic::Ordering::SeqCst);
                        if first && this.refused.get().is_none() {
                            if let Some(reason) = probe.0.refusal().await {
                                let _ = this.refused.set(reason);
                            }
                        }
                    }
                    Err(this.error(e))
                }
            }
        })
    }
}

/// One live HTTP/2 connection to an agent, kept open (a session's): an [`Agent`] over it
/// costs nothing, and it tells when it has ended.
#[derive(Clone)]
pub struct Live {
    conn: Conn,
    origin: http::Uri,
}

impl Live {
    /// The agent API over this connection (no new connection, no handshake).
    pub fn agent(&self) -> Agent {
        AgentClient::with_origin(self.conn.clone(), self.origin.clone()).max_decoding_message_size(16 << 20)
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Resolves once the connection has ended.
    pub async fn closed(&self) {
        self.conn.closed().await
    }
}

/// Speaks HTTP/2 over an established stream (TLS to an agent, or the daemon's Unix socket);
/// the connection lives in a task of its own until every handle to it is gone.
pub async fn handshake<S>(stream: S, origin: http::Uri) -> Result<Agent, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    Ok(handshake_live(stream, origin).await?.agent())
}

/// [`handshake`], keeping the connection as a [`Live`] one (for a pool of connections).
pub async fn handshake_live<S>(stream: S, origin: http::Uri) -> Result<Live, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    handshake_noting(
        stream,
        origin,
        Arc::new(OnceLock::new()),
        None,
        KeepAlive::DIRECT,
        None,
        None,
    )
    .await
}

/// HTTP/2 keep-alive pings on a connection to an agent.
#[derive(Debug, Clone, Copy)]
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
}

impl KeepAlive {
    /// A silent partition (no RST) is noticed within about 15s: the child shows Disconnected
    /// and attaches again.
    const DIRECT: KeepAlive = KeepAlive {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    };
    /// Connections agents dialled in to the daemon stay open while idle, thousands of them:
    /// a ping every 30s keeps NAT mappings alive at a fraction of the cost (the agent pings
    /// too, and dials again when the daemon goes silent).
    const DIALLED_IN: KeepAlive = KeepAlive {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(20),
    };
}

/// What ties a connection's life to its owner: the connection closes when `close` fires or
/// is dropped, and `over` is dropped once the connection is over, whichever side ended it.
pub struct Lifetime {
    pub close: tokio::sync::oneshot::Receiver<()>,
    pub over: tokio::sync::oneshot::Sender<()>,
}

/// [`handshake`], with the slot where the stream notes an agent's refusal. `agent_window`:
/// a connection to an agent over the network, with its share of the budget
/// ([`crate::flow::window`]); `None`: a local one (Unix socket).
async fn handshake_noting<S>(
    stream: S,
    origin: http::Uri,
    refused: Arc<OnceLock<String>>,
    probe: Option<crate::connect_alert::Probe>,
    keep_alive: KeepAlive,
    life: Option<Lifetime>,
    agent_window: Option<u32>,
) -> Result<Live, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let window = agent_window.unwrap_or(LOCAL_WINDOW);
    let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // What an agent may send ahead of the reader: its share of the process's budget
        // (crate::flow), so that memory does not grow with the fleet. One stream per
        // connection: the connection's window is the stream's.
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .keep_alive_interval(keep_alive.interval)
        .keep_alive_timeout(keep_alive.timeout)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Transport(describe(&e)))?;
    let (ended_tx, ended) = tokio::sync::watch::channel(());
    // A connection to an agent counts among those sharing the budget while it is open.
    let open = agent_window.map(|_| crate::flow::open());
    tokio::spawn(async move {
        let ended = match life {
            Some(Lifetime { close, over }) => {
                let ended = tokio::select! {
                    ended = connection => Some(ended),
                    _ = close => None,
                };
                drop(over);
                ended
            }
            None => Some(connection.await),
        };
        if let Some(Err(e)) = ended {
            tracing::debug!(error = %e, "connection to the agent ended");
        }
        drop(open);
        drop(ended_tx);
    });
    let probe = probe.map(|p| Arc::new((p, std::sync::atomic::AtomicBool::new(false))));
    let conn = Conn {
        send,
        refused,
        probe,
        ended,
    };
    Ok(Live { conn, origin })
}

/// Dials one agent and completes the TLS handshake within `timeout`. The agent's certificate
/// must be signed by the CA and name the host exactly as it was dialled (DNS name or IP).
pub async fn connect(host: &Host, tls: &Tls, timeout: Duration) -> Result<Agent, ConnectError> {
    Ok(connect_live(host, tls, timeout).await?.agent())
}

/// [`connect`], keeping the connection as a [`Live`] one (a session's).
pub async fn connect_live(host: &Host, tls: &Tls, timeout: Duration) -> Result<Live, ConnectError> {
    let authority = host.authority();
    let server_name = rustls::pki_types::ServerName::try_from(host.name.clone())
        .map_err(|_| ConnectError::Address(host.name.clone()))?;
    let origin: http::Uri = format!("http://{authority}")
        .parse()
        .map_err(|_| ConnectError::Address(authority.clone()))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let probe_name = server_name.clone();
    // Every error names the host and port it tried.
    let at = |text: String| ConnectError::Transport(format!("{authority}: {text}"));
    let dial = async {
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| at(describe(&e)))?;
        // Requests are small: they must not wait for the peer's delayed ACK.
        tcp.set_nodelay(true).map_err(|e| at(describe(&e)))?;
        let tcp = rjob_proto::coalesce::CoalescingStream::new(tcp);
        let mut stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| at(handshake_failure(&e)))?;
        if stream.get_ref().1.alpn_protocol() != Some(rjob_proto::tls::ALPN_H2) {
            return Err(at("the agent did not agree to HTTP/2 (ALPN h2)".to_string()));
        }
        // HTTP/2's opening (preface, SETTINGS, and the first request if it is ready by then)
        // leaves in one write, when the connection first waits for the agent.
        stream.get_mut().0.hold_until_read();
        // In TLS 1.3 the agent checks this controller's certificate after the handshake has
        // ended on this side: its refusal is an alert on the first read.
        let refused = Arc::new(OnceLock::new());
        let stream = crate::connect_alert::AlertNoting::new(stream, authority.clone(), refused.clone());
        let probe = crate::connect_alert::Probe {
            config: tls.config.clone(),
            server_name: probe_name,
            authority: authority.clone(),
            timeout,
        };
        let window = Some(crate::flow::window());
        handshake_noting(
            stream,
            origin,
            refused,
            Some(probe),
            KeepAlive::DIRECT,
            None,
            window,
        )
        .await
    };
    tokio::time::timeout(timeout, dial)
        .await
        .map_err(|_| ConnectError::TimeoutAt {
            authority: authority.clone(),
            timeout,
        })?
}

/// The controller's side of a connection an agent dialled in (`rjob-agent --connect`), its
/// preamble read: the TLS handshake as the client, the agent's certificate checked against
/// the name it announced (as if that name had been dialled), then HTTP/2. `life` ties the
/// connection to its entry in the daemon's registry.
pub async fn dialled_in(
    tcp: tokio::net::TcpStream,
    name: &str,
    tls: &Tls,
    timeout: Duration,
    life: Lifetime,
) -> Result<Agent, ConnectError> {
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|_| ConnectError::Address(name.to_string()))?;
    let origin: http::Uri = format!("http://{name}")
        .parse()
        .map_err(|_| ConnectError::Address(name.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let secure = async {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let tcp = rjob_proto::coalesce::CoalescingStream::new(tcp);
        let mut stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| ConnectError::Transport(handshake_failure(&e)))?;
        if stream.get_ref().1.alpn_protocol() != Some(rjob_proto::tls::ALPN_H2) {
            return Err(ConnectError::Transport(
                "the agent did not agree to HTTP/2 (ALPN h2)".to_string(),
            ));
        }
        stream.get_mut().0.hold_until_read();
        let refused = Arc::new(OnceLock::new());
        let stream = crate::connect_alert::AlertNoting::new(stream, name.to_string(), refused.clone());
        let window = Some(crate::flow::window());
        handshake_noting(
            stream,
            origin,
            refused,
            None,
            KeepAlive::DIALLED_IN,
            Some(life),
            window,
        )
        .await
        .map(|live| live.agent())
    };
    tokio::time::timeout(timeout, secure)
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

/// One line for a failed TLS handshake; a peer that does not speak TLS at all (another
/// service on that port) gets a hint.
fn handshake_failure(err: &std::io::Error) -> String {
    let not_tls = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)));
    if not_tls {
        format!(
            "TLS handshake failed ({}): this port does not answer like rjob-agent; check the host's port",
            describe(err)
        )
    } else {
        format!("TLS handshake failed: {}", describe(err))
    }
}

/// One line from an error and its sources, without repeating what an outer layer already said.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        let generic = matches!(
            text.as_str(),
            "transport error" | "error trying to connect" | "client error (Connect)"
        );
        if !generic && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    if parts.is_empty() {
        return err.to_string();
    }
    // Outer layers often repeat their source's text: keep the most specific tail.
    parts.dedup();
    parts.join(": ")
}

/// One line from a gRPC status, for a person.
pub fn describe_status(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let message = status.message();
    match status.source() {
        Some(source) if message.is_empty() || message == "transport error" => describe(source),
        _ if message.is_empty() => format!("{:?}", status.code()),
        _ => message.to_string(),
    }
}
