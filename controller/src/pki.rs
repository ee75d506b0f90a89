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

/// Common name of the CA made by [`init`], followed by the short id of its key
/// ([`fleet::key_id`]: `rjob CA 3f9a1c02`), so that two CAs are told apart in logs and by
/// `rjob pki list`.
pub const CA_COMMON_NAME: &str = "rjob CA";

pub mod fleet;

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
    let ca_name = format!(
        "{CA_COMMON_NAME} {}",
        fleet::key_id(ca_key.subject_public_key_info().as_slice())
    );
    let mut ca_params = ca_params_named(&ca_name);
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
#[cfg(test)]
fn ca_params() -> CertificateParams {
    ca_params_named(CA_COMMON_NAME)
}

fn ca_params_named(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
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
mod tests;
