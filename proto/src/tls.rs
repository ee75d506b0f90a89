//! The TLS side of the wire: TLS 1.3 only, mutual authentication, one configuration per
//! process built once and shared by every connection.
//!
//! Both ends are rjob, so nothing older than TLS 1.3 is offered. AES-128-GCM comes first
//! (SHA-256 key schedule, hardware AES on the machines rjob runs on). Session tickets are
//! neither sent nor kept: a controller process talks to each agent once per run, and a ticket
//! cache would only cost memory and an extra record per connection.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol of gRPC.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: &'static str },
    #[error("{what}: {source}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("client CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// ring, with the TLS 1.3 suites in rjob's order of preference.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    provider.cipher_suites = vec![
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    Arc::new(provider)
}

/// The agent's configuration: its certificate chain and key, and the CA whose certificates it
/// accepts from clients (a client without one is refused in the handshake).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(roots(client_ca_pem, "client CA certificate")?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_pem, "certificate")?, key(key_pem)?)
        .map_err(|source| TlsError::Rustls {
            what: "certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// The controller's configuration: the CA that signs agents' certificates, and its own
/// certificate chain and key.
pub fn client_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            what: "TLS versions",
            source,
        })?
        .with_root_certificates(roots(ca_pem, "CA certificate")?)
        .with_client_auth_cert(certs(cert_pem, "certificate")?, key(key_pem)?)
        .map_err(|source| TlsError::Rustls {
            what: "certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn certs(pem: &[u8], what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| TlsError::Pem {
        what: "private key",
        source,
    })
}

fn roots(pem: &[u8], what: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(pem, what)? {
        roots
            .add(cert)
            .map_err(|source| TlsError::Rustls { what, source })?;
    }
    Ok(roots)
}
