//! Why an agent ended a connection, when it refused this controller's certificate.
//!
//! In TLS 1.3 the agent checks the client certificate after the handshake has ended on the
//! client's side, and says no with an alert. The alert is noted when it is read
//! ([`AlertNoting`]); but an agent that closes while a request it never read is in its socket
//! resets the connection, and the alert is lost. So a connection that failed without one is
//! probed once ([`Probe`]): a new handshake that sends nothing and reads the agent's first
//! bytes, its HTTP/2 SETTINGS (it accepts this certificate) or its alert.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::AlertDescription;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

/// How to dial the agent again to ask why it ended a connection.
pub struct Probe {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    pub authority: String,
    pub timeout: Duration,
}

impl Probe {
    /// The agent's refusal of this controller's certificate, if that is what it says now.
    pub async fn refusal(&self) -> Option<String> {
        let probe = async {
            let tcp = tokio::net::TcpStream::connect(&self.authority).await.ok()?;
            let connector = tokio_rustls::TlsConnector::from(self.config.clone());
            let mut tls = connector.connect(self.server_name.clone(), tcp).await.ok()?;
            let mut first = [0u8; 64];
            match tls.read(&mut first).await {
                Err(e) => alert_of(&e).and_then(|alert| refusal(&self.authority, alert)),
                Ok(_) => None,
            }
        };
        tokio::time::timeout(self.timeout, probe).await.ok().flatten()
    }
}

/// Wraps a stream; the first read error that carries a certificate alert sets `refused`.
pub struct AlertNoting<S> {
    inner: S,
    authority: String,
    refused: Arc<OnceLock<String>>,
}

impl<S> AlertNoting<S> {
    pub fn new(inner: S, authority: String, refused: Arc<OnceLock<String>>) -> Self {
        AlertNoting {
            inner,
            authority,
            refused,
        }
    }
}

/// What an alert means for this controller's certificate, if it is about it.
pub fn refusal(authority: &str, alert: AlertDescription) -> Option<String> {
    let hint = match alert {
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown => {
            "unknown CA? (the agent's client_ca must hold the CA that signed this identity's client.crt)"
        }
        AlertDescription::CertificateExpired => "expired? (issue a new one: rjob pki issue-client)",
        AlertDescription::CertificateRevoked => "revoked?",
        AlertDescription::CertificateRequired => "none was sent",
        AlertDescription::UnsupportedCertificate | AlertDescription::DecryptError => {
            "bad certificate? (is it a client certificate of this CA?)"
        }
        AlertDescription::AccessDenied => "access denied",
        _ => return None,
    };
    Some(format!(
        "the agent at {authority} refused this controller's certificate: {hint}"
    ))
}

/// The alert inside an I/O error from rustls, if there is one.
fn alert_of(e: &io::Error) -> Option<AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AlertNoting<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            if let Some(reason) = alert_of(e).and_then(|a| refusal(&this.authority, a)) {
                let _ = this.refused.set(reason);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AlertNoting<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
