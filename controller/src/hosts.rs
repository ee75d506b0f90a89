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
    #[error("cannot read hosts file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
}

/// Parses `-H` values (each a comma-separated list of entries) into hosts.
///
/// Ranges are expanded, duplicates (same name and port) dropped, and the
/// first-seen order kept. An empty result is an error.
pub fn parse_host_list(specs: &[String]) -> Result<Vec<Host>, HostError> {
    let mut seen = HashSet::new();
    let mut hosts = Vec::new();
    for spec in specs {
        for entry in split_entries(spec)? {
            for host in parse_entry(entry)? {
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
    let text = std::fs::read_to_string(path).map_err(|source| HostError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|line| line.split_once('#').map_or(line, |(before, _)| before).trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

/// Splits one spec on commas outside brackets; entries are trimmed and empty ones dropped.
fn split_entries(spec: &str) -> Result<Vec<&str>, HostError> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in spec.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth.checked_sub(1).ok_or_else(|| HostError::Unbalanced {
                    spec: spec.trim().to_string(),
                })?
            }
            ',' if depth == 0 => {
                entries.push(spec[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostError::Unbalanced {
            spec: spec.trim().to_string(),
        });
    }
    entries.push(spec[start..].trim());
    entries.retain(|e| !e.is_empty());
    Ok(entries)
}

/// Parses and expands one entry (no top-level commas, already trimmed).
fn parse_entry(entry: &str) -> Result<Vec<Host>, HostError> {
    if let Some(host) = parse_ipv6(entry)? {
        return Ok(vec![host]);
    }
    let (name_part, port) = split_port(entry)?;
    let segments = parse_segments(entry, name_part)?;
    let names = expand(entry, &segments)?;
    names
        .into_iter()
        .map(|name| {
            check_name(entry, &name)?;
            Ok(Host { name, port })
        })
        .collect()
}

/// Recognises `[v6]`, `[v6]:port` and bare `v6` (two or more colons, no brackets).
fn parse_ipv6(entry: &str) -> Result<Option<Host>, HostError> {
    let bad = || HostError::BadIpv6 {
        spec: entry.to_string(),
    };
    if let Some(rest) = entry.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err(HostError::Unbalanced {
                spec: entry.to_string(),
            });
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
                    spec: entry.to_string(),
                    reason: "':' inside brackets is only allowed in an IPv6 address written as [ADDRESS]"
                        .to_string(),
                })
            }
            ':' if colon.is_some() => {
                return Err(HostError::BadName {
                    spec: entry.to_string(),
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
                    spec: entry.to_string(),
                    port: port_text.to_string(),
                });
            }
            Ok((&entry[..i], parse_port(entry, port_text)?))
        }
    }
}

fn parse_port(entry: &str, text: &str) -> Result<u16, HostError> {
    let bad = || HostError::BadPort {
        spec: entry.to_string(),
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

/// A piece of a host name: literal text, or the alternatives of one bracket range.
#[derive(Debug)]
enum Segment {
    Literal(String),
    Choice(Vec<String>),
}

/// Splits `name_part` (a prefix of `entry`) into literal text and expanded ranges.
fn parse_segments(entry: &str, name_part: &str) -> Result<Vec<Segment>, HostError> {
    let mut segments = Vec::new();
    let mut rest = name_part;
    let mut offset = 0; // byte offset of `rest` within `entry`
    while let Some(open) = rest.find(['[', ']']) {
        if rest[open..].starts_with(']') {
            return Err(HostError::Unbalanced {
                spec: entry.to_string(),
            });
        }
        if open > 0 {
            segments.push(Segment::Literal(rest[..open].to_string()));
        }
        let after_open = &rest[open + 1..];
        let close = after_open.find(']').ok_or_else(|| HostError::Unbalanced {
            spec: entry.to_string(),
        })?;
        let body = &after_open[..close];
        if body.contains('[') {
            return Err(HostError::BadRange {
                spec: entry.to_string(),
                reason: "brackets cannot be nested".to_string(),
            });
        }
        let body_offset = offset + open + 1;
        segments.push(Segment::Choice(parse_range_body(entry, body, body_offset)?));
        let consumed = open + 1 + close + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_string()));
    }
    Ok(segments)
}

/// Expands the inside of one bracket: `1-9`, `01-20`, `1,3,5-7`.
/// `body_offset` is where `body` starts in `entry`, for the "counts down" hint.
fn parse_range_body(entry: &str, body: &str, body_offset: usize) -> Result<Vec<String>, HostError> {
    let bad = |reason: String| HostError::BadRange {
        spec: entry.to_string(),
        reason,
    };
    if body.trim().is_empty() {
        return Err(bad("the brackets are empty".to_string()));
    }
    let mut out = Vec::new();
    let mut item_start = 0;
    for item in body.split(',') {
        let this_start = item_start;
        item_start += item.len() + 1;
        let trimmed = item.trim();
        if trimmed.is_empty() {
            return Err(bad(format!("[{body}] has an empty item")));
        }
        let (lo_text, hi_text) = match trimmed.split_once('-') {
            Some((lo, hi)) => (lo.trim(), Some(hi.trim())),
            None => (trimmed, None),
        };
        let lo = parse_number(lo_text)
            .ok_or_else(|| bad(format!("{trimmed:?} is not a number or a range of numbers")))?;
        let Some(hi_text) = hi_text else {
            push_checked(entry, &mut out, lo_text.to_string())?;
            continue;
        };
        let hi = parse_number(hi_text)
            .ok_or_else(|| bad(format!("{trimmed:?} is not a number or a range of numbers")))?;
        if hi < lo {
            let item_at = body_offset + this_start;
            let fixed = format!(
                "{}{}-{}{}",
                &entry[..item_at],
                hi_text,
                lo_text,
                &entry[item_at + item.len()..]
            );
            return Err(HostError::Descending {
                spec: entry.to_string(),
                fixed,
            });
        }
        let count = hi - lo + 1;
        if count > (MAX_HOSTS - out.len()) as u64 {
            return Err(HostError::TooMany {
                spec: entry.to_string(),
                limit: MAX_HOSTS,
            });
        }
        let width = if lo_text.len() > 1 && lo_text.starts_with('0') {
            lo_text.len()
        } else {
            0
        };
        out.extend((lo..=hi).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

fn push_checked(entry: &str, out: &mut Vec<String>, value: String) -> Result<(), HostError> {
    if out.len() >= MAX_HOSTS {
        return Err(HostError::TooMany {
            spec: entry.to_string(),
            limit: MAX_HOSTS,
        });
    }
    out.push(value);
    Ok(())
}

/// Parses a decimal number of at most 18 digits (so ranges never overflow).
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Cartesian product of the segments, in order, refusing more than [`MAX_HOSTS`].
fn expand(entry: &str, segments: &[Segment]) -> Result<Vec<String>, HostError> {
    let mut total: usize = 1;
    for segment in segments {
        if let Segment::Choice(choices) = segment {
            total = total.saturating_mul(choices.len());
        }
    }
    if total > MAX_HOSTS {
        return Err(HostError::TooMany {
            spec: entry.to_string(),
            limit: MAX_HOSTS,
        });
    }
    let mut names = vec![String::new()];
    for segment in segments {
        match segment {
            Segment::Literal(text) => names.iter_mut().for_each(|n| n.push_str(text)),
            Segment::Choice(choices) => {
                names = names
                    .iter()
                    .flat_map(|prefix| choices.iter().map(move |c| format!("{prefix}{c}")))
                    .collect();
            }
        }
    }
    Ok(names)
}

fn check_name(entry: &str, name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::EmptyName {
            spec: entry.to_string(),
        });
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '[' | ']'))
    {
        return Err(HostError::BadName {
            spec: entry.to_string(),
            reason: format!("{c:?} cannot appear in a host name"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
