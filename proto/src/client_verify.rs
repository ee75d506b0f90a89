//! The agent's check of a client certificate chain, stricter than webpki's defaults:
//! - the client certificate must carry the clientAuth extended key usage (webpki accepts a
//!   certificate without any EKU);
//! - the path length constraint of the CA in `client_ca` is enforced (webpki enforces it on
//!   intermediates only, never on the trust anchor): a CA with `pathlen:0`, as `rjob pki`
//!   makes, signs client certificates itself and no intermediate CA below it counts.

use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::server::danger::ClientCertVerified;
use rustls::{CertificateError, OtherError};

/// The OID of the clientAuth key purpose (1.3.6.1.5.5.7.3.2).
const EKU_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("the client certificate is not for client authentication (no clientAuth extended key usage)")]
    NoClientAuth,
    #[error("the client certificate chain is longer than its CA allows (path length constraint {allowed}, {used} intermediate CAs)")]
    PathLength { allowed: u32, used: usize },
}

impl From<ChainError> for rustls::Error {
    fn from(e: ChainError) -> Self {
        let error = match e {
            ChainError::NoClientAuth => CertificateError::InvalidPurpose,
            ChainError::PathLength { .. } => CertificateError::Other(OtherError(std::sync::Arc::new(e))),
        };
        rustls::Error::InvalidCertificate(error)
    }
}

/// One trusted CA: its trust anchor and its path length constraint, if any.
#[derive(Debug)]
pub struct Anchor {
    anchor: TrustAnchor<'static>,
    path_len: Option<u32>,
}

/// The CAs whose client certificates an agent accepts.
#[derive(Debug)]
pub struct ClientChains {
    anchors: Vec<Anchor>,
    roots: Vec<TrustAnchor<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientChains {
    pub fn new(
        cas: &[CertificateDer<'static>],
        algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
    ) -> Result<ClientChains, rustls::Error> {
        let mut anchors = Vec::new();
        for der in cas {
            let anchor = webpki::anchor_from_trusted_cert(der)
                .map_err(|e| rustls::Error::General(format!("client CA: {e}")))?
                .to_owned();
            let path_len = x509_parser::parse_x509_certificate(der)
                .ok()
                .and_then(|(_, cert)| {
                    cert.basic_constraints()
                        .ok()
                        .flatten()
                        .map(|b| b.value.path_len_constraint)
                })
                .flatten();
            anchors.push(Anchor { anchor, path_len });
        }
        let roots = anchors.iter().map(|a| a.anchor.clone()).collect();
        Ok(ClientChains {
            anchors,
            roots,
            algorithms,
        })
    }

    /// The CA's path length constraint for a path that ends at `anchor`.
    fn path_len(&self, anchor: &TrustAnchor<'_>) -> Option<u32> {
        self.anchors
            .iter()
            .find(|a| {
                a.anchor.subject.as_ref() == anchor.subject.as_ref()
                    && a.anchor.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
            })
            .and_then(|a| a.path_len)
    }

    /// Verifies a client's chain: signatures and validity to one of the CAs (webpki), the
    /// clientAuth purpose, and the CA's path length constraint.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !has_client_auth(end_entity) {
            return Err(ChainError::NoClientAuth.into());
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_error)?;
        let within_path_len = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let used = path.intermediate_certificates().count();
            match self.path_len(path.anchor()) {
                Some(allowed) if used > allowed as usize => Err(webpki::Error::PathLenConstraintViolated),
                _ => Ok(()),
            }
        };
        cert.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            Some(&within_path_len),
        )
        .map_err(|e| match e {
            webpki::Error::PathLenConstraintViolated => {
                let allowed = self.anchors.iter().filter_map(|a| a.path_len).min().unwrap_or(0);
                ChainError::PathLength {
                    allowed,
                    used: intermediates.len(),
                }
                .into()
            }
            other => webpki_error(other),
        })?;
        Ok(ClientCertVerified::assertion())
    }
}

/// Whether the certificate's extended key usage names clientAuth (an absent extension does not).
fn has_client_auth(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => {
            eku.value.client_auth
                || eku
                    .value
                    .other
                    .iter()
                    .any(|o| o.to_id_string() == EKU_CLIENT_AUTH)
        }
        _ => false,
    }
}

/// webpki's verdict as rustls reports it (the alert the client gets follows from it).
fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let error = match e {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => CertificateError::BadEncoding,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::CertExpired { .. } => CertificateError::Expired,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => CertificateError::BadSignature,
        E::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        other => CertificateError::Other(OtherError(std::sync::Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(error)
}
