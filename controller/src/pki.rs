//! Certificates for mutual TLS, made by `rjob pki`.
//!
//! An identity directory holds `ca.crt` (the CA to trust) plus one certificate
//! and key. `init` makes a new CA and the controller's client certificate;
//! `issue_agent` and `issue_client` sign more certificates with that CA.
//!
//! Private keys are created with mode 0600 and directories with 0700. Every
//! file is written to a temporary name in its directory and then renamed into
//! place, so a crash never leaves a half-written certificate or key behind.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const CLIENT_CERT: &str = "client.crt";
pub const CLIENT_KEY: &str = "client.key";
pub const AGENT_CERT: &str = "agent.crt";
pub const AGENT_KEY: &str = "agent.key";

/// Common name of the CA made by [`init`]; [`issue_agent`] and [`issue_client`]
/// only sign with a CA whose certificate carries exactly this subject.
pub const CA_COMMON_NAME: &str = "rjob CA";

const HOUR: Duration = Duration::from_secs(3600);
const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 3600); // 10 years
const LEAF_VALIDITY: Duration = Duration::from_secs(731 * 24 * 3600); // 2 years

/// Why a `rjob pki` step failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path} already exists: refusing to overwrite an existing CA; use another directory, or remove it yourself if you really mean to start over")]
    CaExists { path: PathBuf },
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source} (run `rjob pki init` first, or point at the directory holding ca.crt and ca.key)")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a usable PEM private key: {source}")]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("{path} is not a usable PEM certificate: {reason}")]
    BadCert { path: PathBuf, reason: String },
    #[error("{cert} and {key} do not belong together: the CA certificate was not made for this key")]
    CaMismatch { cert: PathBuf, key: PathBuf },
    #[error("give at least one --san HOST_OR_IP: the name or address the controller dials")]
    NoSan,
    #[error(
        "bad --san {san:?}: it is neither an IP address nor a DNS name (letters, digits, '-', '_' and '.')"
    )]
    BadSan { san: String },
    #[error("bad certificate name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("cannot make the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("cannot read random bytes from {path}: {source}")]
    Random { path: PathBuf, source: io::Error },
    #[error("the system clock is before 1970: set the clock, then retry")]
    Clock,
}

/// Creates `dir` (mode 0700) holding a new CA (`ca.crt`, `ca.key`) and a
/// client certificate for the controller (`client.crt`, `client.key`) with
/// common name `client_name`. Refuses if `dir/ca.key` already exists.
pub fn init(dir: &Path, client_name: &str) -> Result<(), PkiError> {
    check_name(client_name)?;
    let ca_key_path = dir.join(CA_KEY);
    if fs::symlink_metadata(&ca_key_path).is_ok() {
        return Err(PkiError::CaExists { path: ca_key_path });
    }
    create_dir(dir)?;

    let ca_key = generate_key("CA key")?;
    let mut ca_params = ca_params();
    set_validity(&mut ca_params, CA_VALIDITY)?;
    ca_params.serial_number = Some(random_serial()?);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| PkiError::Generate {
            what: "CA certificate",
            source,
        })?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let sans = if is_dns_name(client_name) {
        vec![dns_san(client_name)?]
    } else {
        Vec::new()
    };
    let (client_cert, client_key) = leaf(client_name, ExtendedKeyUsagePurpose::ClientAuth, sans, &issuer)?;

    // ca.key goes first and never replaces an existing file: it is the lock
    // that stops two concurrent inits from making two CAs in one directory.
    write_file(&ca_key_path, ca_key.serialize_pem().as_bytes(), 0o600, false)?;
    let rest = [
        (CA_CERT, ca_cert.pem(), 0o644),
        (CLIENT_CERT, client_cert, 0o644),
        (CLIENT_KEY, client_key, 0o600),
    ];
    for (name, contents, mode) in rest {
        if let Err(e) = write_file(&dir.join(name), contents.as_bytes(), mode, true) {
            // Without its certificate the new CA is useless; let a retry start clean.
            let _ = fs::remove_file(&ca_key_path);
            return Err(e);
        }
    }
    Ok(())
}

/// Signs an agent (server) certificate with the CA in `ca_dir` and writes
/// `out/agent.crt`, `out/agent.key` and `out/ca.crt`. Each entry of `sans`
/// that is an IP address becomes an IP SAN, anything else a DNS SAN.
pub fn issue_agent(ca_dir: &Path, name: &str, sans: &[String], out: &Path) -> Result<(), PkiError> {
    check_name(name)?;
    let sans = parse_sans(sans)?;
    let ca = LoadedCa::load(ca_dir)?;
    let (cert, key) = leaf(name, ExtendedKeyUsagePurpose::ServerAuth, sans, &ca.issuer()?)?;
    write_identity(out, &ca.cert_pem, AGENT_CERT, &cert, AGENT_KEY, &key)
}

/// Signs a client certificate (for another controller) with the CA in
/// `ca_dir` and writes `out/client.crt`, `out/client.key` and `out/ca.crt`.
pub fn issue_client(ca_dir: &Path, name: &str, out: &Path) -> Result<(), PkiError> {
    check_name(name)?;
    let ca = LoadedCa::load(ca_dir)?;
    let sans = if is_dns_name(name) {
        vec![dns_san(name)?]
    } else {
        Vec::new()
    };
    let (cert, key) = leaf(name, ExtendedKeyUsagePurpose::ClientAuth, sans, &ca.issuer()?)?;
    write_identity(out, &ca.cert_pem, CLIENT_CERT, &cert, CLIENT_KEY, &key)
}

/// The parameters of the CA made by [`init`]. Signing needs only the subject,
/// key usages and key identifier method, which this rebuilds exactly; the
/// loaded certificate is checked against them.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

struct LoadedCa {
    cert_pem: String,
    key: KeyPair,
}

impl LoadedCa {
    fn load(ca_dir: &Path) -> Result<Self, PkiError> {
        let cert_path = ca_dir.join(CA_CERT);
        let key_path = ca_dir.join(CA_KEY);
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::BadKey {
            path: key_path.clone(),
            source,
        })?;
        let bad_cert = |reason: &str| PkiError::BadCert {
            path: cert_path.clone(),
            reason: reason.to_string(),
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| bad_cert("it holds no PEM certificate"))?;
        let cert = pem
            .parse_x509()
            .map_err(|_| bad_cert("the DER inside is not an X.509 certificate"))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::CaMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        Ok(Self { cert_pem, key })
    }

    /// Signs with the stored CA certificate's own subject and key identifier.
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(|source| PkiError::Generate {
            what: "CA issuer",
            source,
        })
    }
}

/// Makes a leaf key and certificate signed by `issuer`; returns their PEM texts.
fn leaf(
    name: &str,
    usage: ExtendedKeyUsagePurpose,
    sans: Vec<SanType>,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(String, String), PkiError> {
    let key = generate_key("certificate key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, LEAF_VALIDITY)?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| PkiError::Generate {
            what: "certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write_identity(
    out: &Path,
    ca_pem: &str,
    cert_name: &str,
    cert_pem: &str,
    key_name: &str,
    key_pem: &str,
) -> Result<(), PkiError> {
    create_dir(out)?;
    write_file(&out.join(key_name), key_pem.as_bytes(), 0o600, true)?;
    write_file(&out.join(cert_name), cert_pem.as_bytes(), 0o644, true)?;
    write_file(&out.join(CA_CERT), ca_pem.as_bytes(), 0o644, true)
}

fn generate_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate().map_err(|source| PkiError::Generate { what, source })
}

/// Valid from an hour ago (tolerating clock skew) until `lifetime` from now.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) -> Result<(), PkiError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| PkiError::Clock)?;
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - HOUR;
    params.not_after = now + lifetime;
    Ok(())
}

/// 16 random bytes from the kernel, as a positive serial number.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| PkiError::Random {
            path: path.to_path_buf(),
            source,
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive, and never shorter than 16 bytes
    Ok(SerialNumber::from_slice(&bytes))
}

fn check_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.trim().is_empty() {
        "it is empty; give the host or user name the certificate is for"
    } else if name.chars().any(char::is_control) {
        "it holds control characters"
    } else if name.len() > 64 {
        "it is longer than 64 bytes, the limit for a certificate common name"
    } else {
        return Ok(());
    };
    Err(PkiError::BadName {
        name: name.to_string(),
        reason,
    })
}

fn parse_sans(sans: &[String]) -> Result<Vec<SanType>, PkiError> {
    let mut out = Vec::new();
    for raw in sans {
        let san = raw.trim();
        if san.is_empty() {
            continue;
        }
        let unbracketed = san
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(san);
        let entry = if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(san) {
            dns_san(san)?
        } else {
            return Err(PkiError::BadSan { san: raw.to_string() });
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    if out.is_empty() {
        return Err(PkiError::NoSan);
    }
    Ok(out)
}

fn dns_san(name: &str) -> Result<SanType, PkiError> {
    let ia5 = name
        .to_ascii_lowercase()
        .try_into()
        .map_err(|source| PkiError::Generate {
            what: "DNS name",
            source,
        })?;
    Ok(SanType::DnsName(ia5))
}

/// A host name usable as a DNS SAN: ASCII labels of letters, digits, '-' and
/// '_', 1 to 63 bytes, not starting or ending with '-'; an optional leading
/// `*` label (wildcard).
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').enumerate().all(|(i, label)| {
        (i == 0 && label == "*" && name.len() > 2)
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    })
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to a new temporary file (created with `mode`) beside
/// `path`, then moves it into place. With `replace` false, an existing `path`
/// is left alone and reported as [`PkiError::CaExists`].
fn write_file(path: &Path, contents: &[u8], mode: u32, replace: bool) -> Result<(), PkiError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let write_err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        if replace {
            fs::rename(&tmp, path)
        } else {
            // hard_link fails if `path` exists, so an existing file is never replaced.
            fs::hard_link(&tmp, path)
        }
    })();
    let cleanup = if replace && result.is_ok() {
        Ok(())
    } else {
        fs::remove_file(&tmp)
    };
    match result {
        Err(e) if !replace && e.kind() == io::ErrorKind::AlreadyExists => Err(PkiError::CaExists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(write_err(e)),
        Ok(()) => cleanup.map_err(write_err),
    }
}

#[cfg(test)]
mod tests {
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
}
