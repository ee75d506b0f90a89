//! The TLS side of the wire: TLS 1.3 only, mutual authentication, one configuration per
//! process built once and shared by every connection.
//!
//! Both ends are rjob, so nothing older than TLS 1.3 is offered. AES-128-GCM comes first
//! (SHA-256 key schedule, hardware AES on the machines rjob runs on), and the agent picks by
//! its own order, whatever order the client offers. Client certificates are checked as
//! [`crate::client_verify`] says (clientAuth purpose, the CA's path length). Session tickets are
//! neither sent nor kept: a controller process talks to each agent once per run, and a ticket
//! cache would only cost memory and an extra record per connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::client_verify::ClientChains;

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
    let chains = ClientChains::new(
        &certs(client_ca_pem, "client CA certificate")?,
        provider.signature_verification_algorithms,
    )
    .map_err(|source| TlsError::Rustls {
        what: "client CA certificate",
        source,
    })?;
    let verifier = Arc::new(RememberingClientVerifier::new(
        WebPkiClientVerifier::builder_with_provider(roots, provider.clone()).build()?,
        chains,
    ));
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
    // The agent's order of cipher suites, not the client's.
    config.ignore_client_order = true;
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

/// How long an accepted client certificate chain is taken as verified without checking it
/// again (its validity period and CA signature); bounds how late an expiry takes effect.
const CHAIN_REMEMBERED: Duration = Duration::from_secs(60);

/// How many accepted chains are remembered (a handful of controllers is usual).
const CHAINS_REMEMBERED: usize = 64;

/// Verifies client certificates ([`ClientChains`]: webpki and rjob's stricter checks) and remembers the chains it accepted, for
/// [`CHAIN_REMEMBERED`]: a controller shows the same certificate on every connection, and the
/// CA signature on it was a quarter of the agent's handshake work. The client's proof that it
/// holds the certificate's key (the handshake signature) is checked on every connection, and
/// a chain that fails is never remembered.
#[derive(Debug)]
struct RememberingClientVerifier {
    /// rustls's verifier, for the handshake signatures and the CA names offered to clients.
    inner: Arc<dyn ClientCertVerifier>,
    chains: ClientChains,
    /// Chain (length-prefixed DER of each certificate) -> when it was verified, in Unix seconds.
    accepted: Mutex<HashMap<Vec<u8>, u64>>,
}

impl RememberingClientVerifier {
    fn new(inner: Arc<dyn ClientCertVerifier>, chains: ClientChains) -> RememberingClientVerifier {
        RememberingClientVerifier {
            inner,
            chains,
            accepted: Mutex::new(HashMap::new()),
        }
    }

    fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<u8> {
        let mut key = Vec::new();
        for cert in std::iter::once(end_entity).chain(intermediates) {
            key.extend_from_slice(&(cert.len() as u64).to_le_bytes());
            key.extend_from_slice(cert);
        }
        key
    }
}

impl ClientCertVerifier for RememberingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = Self::key(end_entity, intermediates);
        let now_s = now.as_secs();
        let fresh = |at: u64| now_s >= at && now_s - at < CHAIN_REMEMBERED.as_secs();
        {
            let accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
            if accepted.get(&key).is_some_and(|at| fresh(*at)) {
                return Ok(ClientCertVerified::assertion());
            }
        }
        let verified = self.chains.verify(end_entity, intermediates, now)?;
        let mut accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        accepted.retain(|_, at| fresh(*at));
        if accepted.len() < CHAINS_REMEMBERED {
            accepted.insert(key, now_s);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
