//! Host lists: `-H web[01-20],db1:8443 -H 10.0.0.[1-9]` and `--hosts-file FILE`.
//!
//! A host spec is a comma-separated list of entries. Each entry is a host name
//! or address, optionally followed by `:PORT`. A name may hold one or more
//! bracket ranges (`web[01-20]`, `rack[1-2]-node[1-3]`, `web[1,3,5-7]`), which
//! expand to the cartesian product of the ranges, in order. A bracket that
//! holds a `:` is an IPv6 literal (`[::1]:7443`), not a range.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use rjob_proto::DEFAULT_PORT;

use range::Pattern;

pub mod fold;
mod range;

/// Largest number of hosts one entry (or the whole list) may expand to.
pub const MAX_HOSTS: usize = 100_000;

/// One agent to dial: a host name or IP address (IPv6 without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host {
    pub name: String,
    pub port: u16,
}

impl Host {
    /// Short name for output: the name alone on the default port, else `name:port`.
    /// IPv6 addresses are bracketed whenever a port is shown (`[::1]:8443`).
    pub fn label(&self) -> String {
        if self.port == DEFAULT_PORT {
            self.name.clone()
        } else {
            self.authority()
        }
    }

    /// `name:port` for dialing, with IPv6 addresses bracketed (`[::1]:7443`).
    pub fn authority(&self) -> String {
        if self.name.contains(':') {
            format!("[{}]:{}", self.name, self.port)
        } else {
            format!("{}:{}", self.name, self.port)
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Why a host list or hosts file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no hosts given: use -H HOST[,HOST…] or --hosts-file FILE")]
    Empty,
    #[error("host range {spec} counts down: write it as {fixed}")]
    Descending { spec: String, fixed: String },
    #[error("bad host range in {spec}: {reason}; write ranges as name[1-9], name[01-20] or name[1,3,5-7]")]
    BadRange { spec: String, reason: String },
    #[error("unbalanced brackets in host {spec}: every '[' needs a matching ']'")]
    Unbalanced { spec: String },
    #[error("bad port {port:?} in host {spec}: use a number from 1 to 65535, as in NAME:7443")]
    BadPort { spec: String, port: String },
    #[error("empty host name in {spec}: write NAME or NAME:PORT")]
    EmptyName { spec: String },
    #[error("bad host name in {spec}: {reason}")]
    BadName { spec: String, reason: String },
    #[error("bad IPv6 address in {spec}: write it as [ADDRESS] or [ADDRESS]:PORT")]
    BadIpv6 { spec: String },
    #[error("too many hosts: {spec} expands to more than {limit}; split the list or narrow the ranges")]
    TooMany { spec: String, limit: usize },
    #[error("empty item in host list {spec:?}: remove the extra ','")]
    EmptyItem { spec: String },
    #[error("host {spec} makes a name of {len} characters; a host name has at most {MAX_NAME_LEN}")]
    TooLong { spec: String, len: u64 },
    #[error("the host lists name more than {MAX_LISTED} hosts before duplicates are dropped: split the list or narrow the ranges")]
    TooManyListed,
    #[error("cannot read hosts file {path}: {reason}")]
    ReadFile { path: PathBuf, reason: String },
}

/// Longest host name (DNS allows 253 characters).
pub const MAX_NAME_LEN: u64 = 253;
/// Most hosts all lists together may name before duplicates are dropped.
pub const MAX_LISTED: u64 = 10 * MAX_HOSTS as u64;

/// `spec` as shown in an error: at most 80 characters, control characters escaped.
fn shown(spec: &str) -> String {
    let spec = spec.trim();
    let mut text: String = spec.chars().take(80).collect();
    if text.len() < spec.len() {
        text.push('…');
    }
    crate::escape::text(&text).into_owned()
}

/// Parses `-H` values (each a comma-separated list of entries) into hosts.
///
/// Ranges are expanded, duplicates (same name and port) dropped, and the
/// first-seen order kept. An empty result is an error.
///
/// Every entry is parsed and its expansion counted (arithmetically, nothing built) before any
/// host is made: more than [`MAX_LISTED`] in all, more than [`MAX_HOSTS`] in one entry, or a
/// name longer than [`MAX_NAME_LEN`] is refused before it takes memory.
pub fn parse_host_list(specs: &[String]) -> Result<Vec<Host>, HostError> {
    let mut listed: u64 = 0;
    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    for spec in specs {
        for entry in split_entries(spec)? {
            let parsed = parse_entry(entry)?;
            listed = listed.saturating_add(parsed.count());
            if listed > MAX_LISTED {
                return Err(HostError::TooManyListed);
            }
            for host in parsed.build()? {
                if seen.insert(host.clone()) {
                    if hosts.len() >= MAX_HOSTS {
                        return Err(HostError::TooMany {
                            spec: "the host list".to_string(),
                            limit: MAX_HOSTS,
                        });
                    }
                    hosts.push(host);
                }
            }
        }
    }
    if hosts.is_empty() {
        return Err(HostError::Empty);
    }
    Ok(hosts)
}

/// Reads a hosts file: one host spec per line, `#` starts a comment (whole
/// line or trailing), blank lines ignored. The specs are meant for
/// [`parse_host_list`], so ranges and comma lists work in files too.
pub fn parse_hosts_file(path: &Path) -> Result<Vec<String>, HostError> {
    let limit = crate::limits::MAX_HOSTS_FILE_BYTES;
    let read_error = |reason: String| HostError::ReadFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read_error(e.to_string()))?;
    let bytes = crate::limits::read_capped(file, limit)
        .map_err(|e| read_error(e.to_string()))?
        .ok_or_else(|| {
            read_error(format!(
                "it is larger than {}, the most rjob reads",
                crate::limits::size_text(limit)
            ))
        })?;
    let text = String::from_utf8(bytes).map_err(|_| read_error("it is not UTF-8 text".to_string()))?;
    Ok(text
        .lines()
        .map(|line| line.split_once('#').map_or(line, |(before, _)| before).trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

/// Splits one spec on commas outside brackets; entries are trimmed. An empty item among
/// others (`a,,b`, `a,`) is an error.
pub(crate) fn split_entries(spec: &str) -> Result<Vec<&str>, HostError> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| HostError::Unbalanced { spec: shown(spec) })?
            }
            ',' if depth == 0 => {
                entries.push(spec[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostError::Unbalanced { spec: shown(spec) });
    }
    entries.push(spec[start..].trim());
    // A list that is all blank names nothing (the caller says so); an empty item among others
    // is a typo.
    if entries.iter().any(|e| e.is_empty()) && entries.iter().any(|e| !e.is_empty()) {
        return Err(HostError::EmptyItem { spec: shown(spec) });
    }
    entries.retain(|e| !e.is_empty());
    Ok(entries)
}

/// Whether one entry (no top-level commas) names its port: `web1:8443`, `[::1]:8443`.
pub(crate) fn entry_has_port(entry: &str) -> bool {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some(close) = rest.find(']') {
            if rest[..close].contains(':') {
                return rest[close + 1..].starts_with(':');
            }
        }
    }
    if !entry.contains('[') && entry.matches(':').count() >= 2 {
        return false; // a bare IPv6 address
    }
    let mut depth = 0usize;
    entry.chars().any(|c| {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth == 0 => return true,
            _ => {}
        }
        false
    })
}

/// One entry of a host list, parsed and counted but not yet expanded.
enum Entry<'a> {
    Single(Host),
    Pattern {
        entry: &'a str,
        pattern: Pattern,
        port: u16,
    },
}

impl Entry<'_> {
    fn count(&self) -> u64 {
        match self {
            Entry::Single(_) => 1,
            Entry::Pattern { pattern, .. } => pattern.count(),
        }
    }

    /// The hosts, each name checked.
    fn build(self) -> Result<Vec<Host>, HostError> {
        match self {
            Entry::Single(host) => Ok(vec![host]),
            Entry::Pattern { entry, pattern, port } => pattern
                .names()
                .into_iter()
                .map(|name| {
                    check_name(entry, &name)?;
                    Ok(Host { name, port })
                })
                .collect(),
        }
    }
}

/// Parses one entry (no top-level commas, already trimmed).
fn parse_entry(entry: &str) -> Result<Entry<'_>, HostError> {
    if let Some(host) = parse_ipv6(entry)? {
        return Ok(Entry::Single(host));
    }
    let (name_part, port) = split_port(entry)?;
    Ok(Entry::Pattern {
        entry,
        pattern: Pattern::parse(entry, name_part)?,
        port,
    })
}

/// Recognises `[v6]`, `[v6]:port` and bare `v6` (two or more colons, no brackets).
fn parse_ipv6(entry: &str) -> Result<Option<Host>, HostError> {
    let bad = || HostError::BadIpv6 { spec: shown(entry) };
    if let Some(rest) = entry.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(HostError::Unbalanced { spec: shown(entry) });
        };
        let inner = &rest[..close];
        if !inner.contains(':') {
            return Ok(None); // a leading range such as [1-3].example.com
        }
        let addr: Ipv6Addr = inner.parse().map_err(|_| bad())?;
        let after = &rest[close + 1..];
        let port = if after.is_empty() {
            DEFAULT_PORT
        } else if let Some(port) = after.strip_prefix(':') {
            parse_port(entry, port)?
        } else {
            return Err(bad());
        };
        return Ok(Some(Host {
            name: addr.to_string(),
            port,
        }));
    }
    if !entry.contains('[') && entry.matches(':').count() >= 2 {
        // A bare IPv6 address; anything else with several colons is reported by split_port.
        if let Ok(addr) = entry.parse::<Ipv6Addr>() {
            return Ok(Some(Host {
                name: addr.to_string(),
                port: DEFAULT_PORT,
            }));
        }
    }
    Ok(None)
}

/// Splits `name:port` at a colon outside brackets. No colon means the default port.
fn split_port(entry: &str) -> Result<(&str, u16), HostError> {
    let mut depth = 0usize;
    let mut colon = None;
    for (i, c) in entry.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ':' if depth > 0 => {
                return Err(HostError::BadRange {
                    spec: shown(entry),
                    reason: "':' inside brackets is only allowed in an IPv6 address written as [ADDRESS]"
                        .to_string(),
                })
            }
            ':' if colon.is_some() => {
                return Err(HostError::BadName {
                    spec: shown(entry),
                    reason: "more than one ':'; write NAME:PORT, or [ADDRESS]:PORT for IPv6".to_string(),
                })
            }
            ':' => colon = Some(i),
            _ => {}
        }
    }
    match colon {
        None => Ok((entry, DEFAULT_PORT)),
        Some(i) => {
            let port_text = &entry[i + 1..];
            if entry[i + 1..].contains(['[', ']']) {
                return Err(HostError::BadPort {
                    spec: shown(entry),
                    port: port_text.to_string(),
                });
            }
            Ok((&entry[..i], parse_port(entry, port_text)?))
        }
    }
}

fn parse_port(entry: &str, text: &str) -> Result<u16, HostError> {
    let bad = || HostError::BadPort {
        spec: shown(entry),
        port: text.to_string(),
    };
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// A host name as the controller dials it (an IPv6 address without brackets): the checks an
/// expanded host list has passed.
pub fn check_host_name(name: &str) -> Result<(), HostError> {
    check_name(name, name)
}

fn check_name(entry: &str, name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::EmptyName { spec: shown(entry) });
    }
    if name.len() as u64 > MAX_NAME_LEN {
        return Err(HostError::TooLong {
            spec: shown(entry),
            len: name.len() as u64,
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '[' | ']'))
    {
        return Err(HostError::BadName {
            spec: shown(entry),
            reason: format!(
                "{} cannot appear in a host name",
                crate::escape::text(&format!("{c:?}"))
            ),
        });
    }
    // What the controller dials and checks the agent's certificate against: a DNS name
    // (letters, digits, '-', '_' and dots; labels of 1 to 63 characters) or an IP address.
    if rustls::pki_types::ServerName::try_from(name).is_err() {
        return Err(HostError::BadName {
            spec: shown(entry),
            reason: "not a DNS name or an IP address: use letters, digits, '-' and '.', in labels of 1 to 63 characters".to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
