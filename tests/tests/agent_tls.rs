//! The agent against TLS clients that are not what they claim: its cipher order wins, and
//! client certificates the CA did not mean for a controller (no client purpose, under an
//! intermediate) are refused, over raw TLS and over gRPC. Split from `agent_guard.rs`.

use std::net::TcpStream;
use std::sync::Arc;

use rjob_proto::v1 as pb;
use rjob_tests::{ran, Agent, Fleet, WAIT};

/// A TLS 1.3 client of `agent` with this identity and cipher order; returns the suite the
/// agent chose and whether it then served (sent HTTP/2's opening) or refused.
fn tls_probe(
    agent: &Agent,
    ca_pem: &[u8],
    chain_pem: &[u8],
    key_pem: &[u8],
    suites: Vec<rustls::SupportedCipherSuite>,
) -> (Option<rustls::CipherSuite>, Result<usize, String>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::Read;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem)
        .map(|c| c.expect("pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::from(agent.addr.ip());
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tcp = TcpStream::connect(agent.addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return (
                conn.negotiated_cipher_suite().map(|s| s.suite()),
                Err(e.to_string()),
            );
        }
    }
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let mut buf = [0u8; 64];
    let served = rustls::Stream::new(&mut conn, &mut tcp)
        .read(&mut buf)
        .map_err(|e| e.to_string());
    (suite, served)
}

struct CaKeys {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn test_ca(fleet: &Fleet) -> CaKeys {
    let ca_pem = std::fs::read_to_string(fleet.pki.dir.join("ca.crt")).expect("ca.crt");
    let key = std::fs::read_to_string(fleet.pki.dir.join("ca.key")).expect("ca.key");
    let key = rcgen::KeyPair::from_pem(&key).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, key).expect("issuer");
    CaKeys { ca_pem, issuer }
}

/// A certificate for `rjob-controller` with these purposes, signed by `issuer`.
fn leaf(
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
    ekus: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ca: bool,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        if ca {
            "rogue intermediate"
        } else {
            "rjob-controller"
        },
    );
    params.extended_key_usages = ekus;
    params.is_ca = if ca {
        rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        rcgen::IsCa::ExplicitNoCa
    };
    if ca {
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert, key)
}

#[test]
fn tls_the_agent_picks_its_cipher_order_and_refuses_chains_the_ca_did_not_mean() {
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::CipherSuite;
    let fleet = Fleet::start(1).expect("fleet");
    let agent = &fleet.agents[0];
    let marker = fleet.scratch().join("ran");
    let ca = test_ca(&fleet);
    let read = |f: &str| std::fs::read(fleet.pki.dir.join(f)).expect("identity file");

    // ChaCha20 offered first: the agent still picks AES-128-GCM, and serves.
    let (suite, served) = tls_probe(
        agent,
        ca.ca_pem.as_bytes(),
        &read("client.crt"),
        &read("client.key"),
        vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
        ],
    );
    assert_eq!(suite, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
    assert!(
        served.is_ok(),
        "the controller's own certificate was refused: {served:?}"
    );

    let suites = || vec![cs::TLS13_AES_128_GCM_SHA256];
    // Signed by the CA, but with no extended key usage, or for servers only.
    for ekus in [vec![], vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]] {
        let (cert, key) = leaf(&ca.issuer, ekus.clone(), false);
        let (_, served) = tls_probe(
            agent,
            ca.ca_pem.as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            suites(),
        );
        assert!(
            served.is_err(),
            "a client certificate with EKU {ekus:?} was accepted"
        );
    }
    // A client certificate under an intermediate CA, below a CA with pathlen 0.
    let (inter, inter_key) = leaf(&ca.issuer, vec![], true);
    let inter_issuer = rcgen::Issuer::from_ca_cert_pem(&inter.pem(), inter_key).expect("intermediate");
    let (cert, key) = leaf(
        &inter_issuer,
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        false,
    );
    let chain = format!("{}{}", cert.pem(), inter.pem());
    let (_, served) = tls_probe(
        agent,
        ca.ca_pem.as_bytes(),
        chain.as_bytes(),
        key.serialize_pem().as_bytes(),
        suites(),
    );
    assert!(
        served.is_err(),
        "a chain through an intermediate under a pathlen-0 CA was accepted"
    );
    // And through gRPC: nothing runs for such a client.
    let dir = fleet.scratch().join("rogue");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("ca.crt"), &ca.ca_pem).expect("write");
    std::fs::write(dir.join("client.crt"), &chain).expect("write");
    std::fs::write(dir.join("client.key"), key.serialize_pem()).expect("write");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result = runtime.block_on(async {
        rjob_tests::raw::try_agent_client(agent, &dir)
            .await?
            .start_run(pb::StartRunRequest {
                script: format!("touch {}", marker.display()),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
    });
    assert!(result.is_err(), "the rogue client was served");
    assert!(!marker.exists(), "a script ran for the rogue client");
    // The controller's own identity is still served.
    let host = fleet.hosts();
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host, "--script", "echo fine"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of(&host), ["fine"], "{out}");
}
