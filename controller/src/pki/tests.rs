//! Unit tests of `pki`.
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn cert_der(path: &Path) -> Vec<u8> {
    let text = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pem.contents
}

fn parse(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der)
        .unwrap_or_else(|e| panic!("not a certificate: {e}"))
        .1
}

/// Raw subject, issuer and public key of a certificate.
struct Parts {
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

fn cert_parts(der: &[u8]) -> Option<Parts> {
    let cert = parse(der);
    Some(Parts {
        subject: cert.subject().as_raw().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
    })
}

#[derive(Debug, PartialEq)]
enum Name {
    Dns(String),
    Ip(Vec<u8>),
}

fn has_san(der: &[u8]) -> bool {
    matches!(parse(der).subject_alternative_name(), Ok(Some(_)))
}

fn sans(der: &[u8]) -> Vec<Name> {
    use x509_parser::extensions::GeneralName;
    let cert = parse(der);
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no SAN extension"));
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => Name::Dns((*d).to_string()),
            GeneralName::IPAddress(ip) => Name::Ip(ip.to_vec()),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

/// The extended key usages, as OIDs in DER.
fn ekus(der: &[u8]) -> Vec<Vec<u8>> {
    let cert = parse(der);
    let eku = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no EKU"));
    let mut out = Vec::new();
    if eku.value.server_auth {
        out.push(SERVER_AUTH.to_vec());
    }
    if eku.value.client_auth {
        out.push(CLIENT_AUTH.to_vec());
    }
    out
}

const DAY: Duration = Duration::from_secs(24 * 3600);
const SERVER_AUTH: [u8; 8] = [0x2b, 6, 1, 5, 5, 7, 3, 1];
const CLIENT_AUTH: [u8; 8] = [0x2b, 6, 1, 5, 5, 7, 3, 2];

fn openssl_available() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

/// `openssl verify` of `leaf` against `ca`, when openssl is installed.
fn openssl_verify(ca: &Path, leaf: &Path, purpose: &str) {
    if !openssl_available() {
        eprintln!("openssl not installed: skipping the chain check");
        return;
    }
    let out = Command::new("openssl")
        .args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(ca)
        .arg(leaf)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_makes_four_files_with_private_keys() {
    let tmp = tempdir();
    let dir = tmp.path().join("pki");
    init(&dir, "controller.example.com").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&dir), 0o700);
    for name in [CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
    assert_eq!(mode(&dir.join(CLIENT_KEY)), 0o600);
    // no temporary files left behind
    let count = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 4);

    let ca = cert_der(&dir.join(CA_CERT));
    let client = cert_der(&dir.join(CLIENT_CERT));
    let ca_parts = cert_parts(&ca).unwrap_or_else(|| panic!("ca.crt unparsable"));
    let client_parts = cert_parts(&client).unwrap_or_else(|| panic!("client unparsable"));
    assert_eq!(client_parts.issuer, ca_parts.subject);
    assert!(contains(&ca_parts.subject, CA_COMMON_NAME.as_bytes()));
    assert!(contains(&client_parts.subject, b"controller.example.com"));
    assert_eq!(sans(&client), [Name::Dns("controller.example.com".into())]);
    assert_eq!(ekus(&client), [CLIENT_AUTH.to_vec()]);
    openssl_verify(&dir.join(CA_CERT), &dir.join(CLIENT_CERT), "sslclient");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn init_without_dns_name_has_no_san() {
    let tmp = tempdir();
    init(tmp.path(), "ops team").unwrap_or_else(|e| panic!("{e}"));
    let client = cert_der(&tmp.path().join(CLIENT_CERT));
    assert!(!has_san(&client));
}

#[test]
fn init_twice_refuses_and_keeps_the_ca() {
    let tmp = tempdir();
    init(tmp.path(), "ctl").unwrap_or_else(|e| panic!("{e}"));
    let before = fs::read(tmp.path().join(CA_KEY)).unwrap_or_default();
    let e = match init(tmp.path(), "ctl") {
        Ok(()) => panic!("second init should fail"),
        Err(e) => e,
    };
    assert!(matches!(e, PkiError::CaExists { .. }), "{e:?}");
    assert!(e.to_string().contains("ca.key already exists"), "{e}");
    assert_eq!(fs::read(tmp.path().join(CA_KEY)).unwrap_or_default(), before);
}

#[test]
fn no_clobber_write_refuses_existing_file() {
    let tmp = tempdir();
    let path = tmp.path().join("k");
    fs::write(&path, "old").unwrap_or_else(|e| panic!("{e}"));
    let e = write_file(&path, b"new", 0o600, false);
    assert!(matches!(e, Err(PkiError::CaExists { .. })));
    assert_eq!(fs::read_to_string(&path).unwrap_or_default(), "old");
    assert_eq!(fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(0), 1);
}

#[test]
fn issue_agent_with_ip_and_dns_sans() {
    let tmp = tempdir();
    let ca_dir = tmp.path().join("ca");
    let out = tmp.path().join("agent-out");
    init(&ca_dir, "ctl").unwrap_or_else(|e| panic!("{e}"));
    let wanted = [
        "web1.example.com".to_string(),
        "10.0.0.7".to_string(),
        "[::1]".to_string(),
        "fe80::2".to_string(),
    ];
    issue_agent(&ca_dir, "web1", &wanted, &out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join(AGENT_KEY)), 0o600);
    assert_eq!(
        fs::read(out.join(CA_CERT)).unwrap_or_default(),
        fs::read(ca_dir.join(CA_CERT)).unwrap_or_default()
    );
    let agent = cert_der(&out.join(AGENT_CERT));
    let mut v6_loopback = vec![0u8; 16];
    v6_loopback[15] = 1;
    let mut v6_link = vec![0u8; 16];
    v6_link[..2].copy_from_slice(&[0xfe, 0x80]);
    v6_link[15] = 2;
    assert_eq!(
        sans(&agent),
        [
            Name::Dns("web1.example.com".into()),
            Name::Ip(vec![10, 0, 0, 7]),
            Name::Ip(v6_loopback),
            Name::Ip(v6_link),
        ]
    );
    assert_eq!(ekus(&agent), [SERVER_AUTH.to_vec()]);
    let ca = cert_der(&ca_dir.join(CA_CERT));
    assert_eq!(
        cert_parts(&agent).map(|p| p.issuer),
        cert_parts(&ca).map(|p| p.subject)
    );
    openssl_verify(&out.join(CA_CERT), &out.join(AGENT_CERT), "sslserver");
}

#[test]
fn issue_agent_without_san_errors() {
    let tmp = tempdir();
    init(tmp.path(), "ctl").unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("out");
    for sans in [vec![], vec![" ".to_string()]] {
        let e = issue_agent(tmp.path(), "web1", &sans, &out);
        assert!(matches!(e, Err(PkiError::NoSan)), "{e:?}");
    }
    assert!(!out.exists(), "nothing should be written");
    let e = issue_agent(tmp.path(), "web1", &["bad name!".to_string()], &out);
    assert!(matches!(e, Err(PkiError::BadSan { .. })), "{e:?}");
    assert_eq!(
        PkiError::NoSan.to_string(),
        "give at least one --san HOST_OR_IP: the name or address the controller dials"
    );
}

#[test]
fn issue_client_makes_client_identity() {
    let tmp = tempdir();
    let ca_dir = tmp.path().join("ca");
    let out = tmp.path().join("alice");
    init(&ca_dir, "ctl").unwrap_or_else(|e| panic!("{e}"));
    issue_client(&ca_dir, "alice", &out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&out.join(CLIENT_KEY)), 0o600);
    assert!(out.join(CA_CERT).is_file());
    let client = cert_der(&out.join(CLIENT_CERT));
    assert_eq!(ekus(&client), [CLIENT_AUTH.to_vec()]);
    let parts = cert_parts(&client).unwrap_or_else(|| panic!("unparsable"));
    assert!(contains(&parts.subject, b"alice"));
    openssl_verify(&out.join(CA_CERT), &out.join(CLIENT_CERT), "sslclient");
}

#[test]
fn missing_ca_dir_names_the_path() {
    let tmp = tempdir();
    let missing = tmp.path().join("no-such-ca");
    let e = match issue_client(&missing, "alice", &tmp.path().join("out")) {
        Ok(()) => panic!("should fail"),
        Err(e) => e,
    };
    assert!(matches!(e, PkiError::Read { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("no-such-ca/ca.crt"), "{msg}");
    assert!(msg.contains("rjob pki init"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn mismatched_ca_cert_and_key_is_refused() {
    let tmp = tempdir();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    init(&a, "ctl").unwrap_or_else(|e| panic!("{e}"));
    init(&b, "ctl").unwrap_or_else(|e| panic!("{e}"));
    fs::copy(a.join(CA_CERT), b.join(CA_CERT)).unwrap_or_else(|e| panic!("{e}"));
    let e = issue_client(&b, "x", &tmp.path().join("out"));
    assert!(matches!(e, Err(PkiError::CaMismatch { .. })), "{e:?}");
}

#[test]
fn damaged_ca_files_are_reported() {
    let tmp = tempdir();
    init(tmp.path(), "ctl").unwrap_or_else(|e| panic!("{e}"));
    fs::write(tmp.path().join(CA_CERT), "not a cert").unwrap_or_else(|e| panic!("{e}"));
    let e = issue_client(tmp.path(), "x", &tmp.path().join("out"));
    assert!(matches!(e, Err(PkiError::BadCert { .. })), "{e:?}");
    fs::write(tmp.path().join(CA_KEY), "not a key").unwrap_or_else(|e| panic!("{e}"));
    let e = issue_client(tmp.path(), "x", &tmp.path().join("out"));
    assert!(matches!(e, Err(PkiError::BadKey { .. })), "{e:?}");
}

#[test]
fn a_ca_made_elsewhere_signs_with_its_own_subject() {
    let tmp = tempdir();
    let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params = ca_params();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "Other CA");
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    fs::write(tmp.path().join(CA_CERT), cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    fs::write(tmp.path().join(CA_KEY), key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("out");
    issue_client(tmp.path(), "x", &out).unwrap_or_else(|e| panic!("{e}"));
    let client = cert_der(&out.join(CLIENT_CERT));
    let ca = cert_der(&tmp.path().join(CA_CERT));
    assert_eq!(
        cert_parts(&client).map(|p| p.issuer),
        cert_parts(&ca).map(|p| p.subject)
    );
}

#[test]
fn validity_and_serials() {
    let tmp = tempdir();
    init(tmp.path(), "ctl").unwrap_or_else(|e| panic!("{e}"));
    if !openssl_available() {
        eprintln!("openssl not installed: skipping the validity check");
        return;
    }
    let show = |file: &str| {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-checkend"])
            .arg((LEAF_VALIDITY - DAY).as_secs().to_string())
            .arg("-in")
            .arg(tmp.path().join(file))
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(out.status.success(), "{file} expires too soon");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_ne!(show(CA_CERT), show(CLIENT_CERT));
    // The leaf must expire well before the CA: not valid 3 years out.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((LEAF_VALIDITY + 30 * DAY).as_secs().to_string())
        .arg("-in")
        .arg(tmp.path().join(CLIENT_CERT))
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(!out.status.success(), "client cert lives longer than 2 years");
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-checkend"])
        .arg((CA_VALIDITY - DAY).as_secs().to_string())
        .arg("-in")
        .arg(tmp.path().join(CA_CERT))
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(out.status.success(), "CA should live 10 years");
}

#[test]
fn dns_name_rules() {
    for ok in ["a", "web-1.example.com", "*.example.com", "host_1"] {
        assert!(is_dns_name(ok), "{ok}");
    }
    for bad in ["", "-a", "a-", "a..b", "a b", "ü.example", "*", "a.*.b"] {
        assert!(!is_dns_name(bad), "{bad}");
    }
}

#[test]
fn a_batch_larger_than_the_cap_is_refused_naming_the_limit() {
    use crate::pki::fleet::{check_batch, MAX_BATCH};
    assert!(check_batch(MAX_BATCH).is_ok());
    let refused = check_batch(MAX_BATCH + 1).expect_err("refused");
    assert!(
        refused.contains(&format!("{}", MAX_BATCH + 1))
            && refused.contains(&format!("at most {MAX_BATCH}"))
            && refused.contains("batches"),
        "{refused}"
    );
    assert!(!refused.contains('\n'), "one line: {refused}");
}
