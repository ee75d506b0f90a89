//! PKI for a fleet: one agent certificate per host of a host list, every certificate listed
//! with its expiry, and a warning when the controller's own identity is about to expire.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::Digest as _;

use super::{PkiError, AGENT_CERT, CA_CERT, CLIENT_CERT};

/// How soon before its end the controller's certificate is warned about.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// A short id of a CA key: the first 4 bytes of the SHA-256 of its SubjectPublicKeyInfo, in
/// hex. It makes each CA's subject distinguishable (`rjob CA 3f9a1c02`).
pub fn key_id(spki_der: &[u8]) -> String {
    hex::encode(&sha2::Sha256::digest(spki_der)[..4])
}

/// Most certificates one `rjob pki issue-agent --hosts` makes. Each is a key, a certificate
/// and a directory, made one after the other: ten thousand take a few minutes and leave a
/// directory that `ls` and `rjob pki list` still handle; a larger fleet is issued in batches.
pub const MAX_BATCH: usize = 10_000;

/// Why a batch is refused before anything is written: it names more than [`MAX_BATCH`] hosts.
pub fn check_batch(hosts: usize) -> Result<(), String> {
    if hosts > MAX_BATCH {
        return Err(format!(
            "the host list names {hosts} hosts; rjob pki issue-agent issues at most {MAX_BATCH} certificates at a time: issue them in batches (a group or a range each)"
        ));
    }
    Ok(())
}

/// One agent certificate per host: NAME is the host's name, its SANs the name and, when the
/// inventory dials it by another address, that address too. Written to `out/NAME/`.
pub fn issue_agents(ca_dir: &Path, hosts: &[(String, String)], out: &Path) -> Result<Vec<PathBuf>, PkiError> {
    let mut written = Vec::with_capacity(hosts.len());
    for (name, address) in hosts {
        let mut sans = vec![name.clone()];
        if address != name {
            sans.push(address.clone());
        }
        let dir = out.join(name);
        super::issue_agent(ca_dir, name, &sans, &dir)?;
        written.push(dir);
    }
    Ok(written)
}

/// One certificate found by [`list`].
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Listed {
    /// ca, client or agent.
    #[schemars(extend("enum" = ["ca", "client", "agent"]))]
    pub kind: &'static str,
    pub subject: String,
    pub path: PathBuf,
    /// Seconds since the epoch.
    pub not_after: i64,
    /// Days from now to the end (negative once expired).
    pub days_left: i64,
}

/// Every certificate under `dir`: its CA, its own client identity, and `agents/*/agent.crt`,
/// `clients/*/client.crt` as `rjob pki issue-*` write them, soonest to expire first.
pub fn list(dir: &Path) -> Result<Vec<Listed>, PkiError> {
    let mut paths: Vec<(&'static str, PathBuf)> =
        vec![("ca", dir.join(CA_CERT)), ("client", dir.join(CLIENT_CERT))];
    for (sub, kind, file) in [
        ("agents", "agent", AGENT_CERT),
        ("clients", "client", CLIENT_CERT),
    ] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join(file))
                .collect();
            found.sort();
            paths.extend(found.into_iter().map(|p| (kind, p)));
        }
    }
    let mut listed = Vec::new();
    for (kind, path) in paths {
        if !path.exists() {
            continue;
        }
        let (subject, not_after) = read_cert(&path)?;
        listed.push(Listed {
            kind,
            subject,
            days_left: days_left(not_after),
            path,
            not_after,
        });
    }
    if listed.is_empty() {
        return Err(PkiError::Read {
            path: dir.join(CA_CERT),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    listed.sort_by_key(|l| l.not_after);
    Ok(listed)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn days_left(not_after: i64) -> i64 {
    (not_after - now_secs()).div_euclid(86_400)
}

/// A certificate's subject (its common name) and end, in seconds since the epoch.
pub fn read_cert(path: &Path) -> Result<(String, i64), PkiError> {
    let text = std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: &str| PkiError::BadCert {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).map_err(|_| bad("it holds no PEM certificate"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| bad("the DER inside is not an X.509 certificate"))?;
    let subject = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .next()
        .map_or_else(|| cert.subject().to_string(), str::to_string);
    Ok((subject, cert.validity().not_after.timestamp()))
}

/// The date a timestamp falls on, `2026-12-31`.
pub fn date_text(secs: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .get(..10)
        .unwrap_or_default()
        .to_string()
}

/// `rjob pki list`'s table.
pub fn render(listed: &[Listed]) -> String {
    let width = listed
        .iter()
        .map(|l| l.subject.chars().count())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut text = format!(
        "{:<6}  {:<width$}  {:<10}  {:>9}  PATH\n",
        "KIND", "SUBJECT", "EXPIRES", "DAYS LEFT"
    );
    for l in listed {
        text.push_str(&format!(
            "{:<6}  {:<width$}  {:<10}  {:>9}  {}\n",
            l.kind,
            crate::escape::text(&l.subject),
            date_text(l.not_after),
            l.days_left,
            l.path.display()
        ));
    }
    text
}

/// The warning to print when the controller's certificate in `identity` ends within
/// [`EXPIRY_WARNING`] (or has ended); nothing when it is far off or cannot be read (the
/// commands that use it say why).
pub fn expiry_warning(identity: &Path) -> Option<String> {
    let path = identity.join(CLIENT_CERT);
    let (_, not_after) = read_cert(&path).ok()?;
    let left = not_after - now_secs();
    let limit = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if left > limit {
        return None;
    }
    let when = if left <= 0 {
        format!("expired on {}", date_text(not_after))
    } else {
        format!(
            "expires in {} days, on {}",
            days_left(not_after),
            date_text(not_after)
        )
    };
    Some(format!(
        "the controller's certificate {} {when}: issue a new one with `rjob pki issue-client NAME --out DIR`",
        path.display()
    ))
}
