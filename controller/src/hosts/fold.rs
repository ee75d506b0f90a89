//! Folded host sets, as ClusterShell's `nodeset -f` writes them: `web[01-03,07],db[1-2]`.
//!
//! A name is split at its last run of digits (`web07` is `web` + `07`; `10.0.0.7` is
//! `10.0.0.` + `7`, so addresses fold by their last octet). Names with the same text around
//! that run share one bracket. Zero padding is kept: `web09,web10` folds to `web[09-10]`,
//! `web9,web10` to `web[9-10]`. [`super::parse_host_list`] expands a folded set back to the
//! same set of names: fold and expand are inverse.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use rjob_proto::DEFAULT_PORT;

use super::Host;

/// Longest digit run folded (range.rs parses at most 18 digits); longer runs stay literal.
const MAX_DIGITS: usize = 18;

/// Labels for output: a host's name alone when two or more hosts all use one port, else
/// [`Host::label`] (the name alone on the default port, `name:port` off it). So labels have
/// no `:` for a fleet on one port, and `dshbak -c` splits them right. A single host off the
/// default port keeps `name:port`, as before (nothing to gather, and scripts rely on it).
pub fn labels(hosts: &[Host]) -> Vec<String> {
    if same_port(hosts) {
        hosts.iter().map(|h| h.name.clone()).collect()
    } else {
        hosts.iter().map(Host::label).collect()
    }
}

/// Whether labels leave the port out: two or more hosts, all on one port.
pub fn same_port(hosts: &[Host]) -> bool {
    hosts.len() >= 2 && hosts.windows(2).all(|w| w[0].port == w[1].port)
}

/// Folds hosts: `show_port` false writes names only (labels from [`labels`] on one port);
/// true adds `:port` to the hosts off the default port, as [`Host::label`] does.
pub fn fold_hosts<'a>(hosts: impl IntoIterator<Item = &'a Host>, show_port: bool) -> String {
    let mut by_port: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for host in hosts {
        let port = if show_port { host.port } else { DEFAULT_PORT };
        by_port.entry(port).or_default().push(&host.name);
    }
    let mut parts: Vec<(String, u16)> = Vec::new();
    for (port, names) in by_port {
        parts.extend(fold_elements(&names).into_iter().map(|e| (e, port)));
    }
    parts.sort_by(|a, b| natural_cmp(&a.0, &b.0).then(a.1.cmp(&b.1)));
    let parts: Vec<String> = parts
        .into_iter()
        .map(|(e, port)| {
            if port == DEFAULT_PORT {
                e
            } else {
                format!("{e}:{port}")
            }
        })
        .collect();
    parts.join(",")
}

/// Folds names into one set: `web[01-03,07],db[1-2]`.
pub fn fold(names: &[&str]) -> String {
    fold_elements(names).join(",")
}

/// One run of numbers `lo..=hi` written `width` digits wide (0: as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Run {
    lo: u64,
    hi: u64,
    width: usize,
}

fn number(n: u64, width: usize) -> String {
    format!("{n:0width$}")
}

/// The folded set's elements (each a name or `prefix[ranges]rest`), in natural order.
///
/// Each pass folds one digit run of every element, from the last run to the first: elements
/// with the same text before the run and the same (already folded) text after it share one
/// bracket. So `rack1-node[1-3]` and `rack2-node[1-3]` become `rack[1-2]-node[1-3]`, which
/// expands (a cartesian product) to the same hosts.
fn fold_elements(names: &[&str]) -> Vec<String> {
    // (head, tail): `head` still has digit runs to fold; `tail` is folded text.
    let mut open: Vec<(String, String)> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for &name in names {
        if name.contains(':') {
            done.push(format!("[{name}]"));
        } else {
            open.push((name.to_string(), String::new()));
        }
    }
    while !open.is_empty() {
        // (prefix, rest of the element after the run) -> the run's digit strings.
        let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (head, tail) in open.drain(..) {
            match split_last_number(&head) {
                Some((prefix, digits, rest)) => groups
                    .entry((prefix.to_string(), format!("{rest}{tail}")))
                    .or_default()
                    .push(digits.to_string()),
                None => done.push(format!("{head}{tail}")),
            }
        }
        for ((prefix, rest), mut digits) in groups {
            digits.sort_by(|a, b| value(a).cmp(&value(b)).then(a.len().cmp(&b.len())));
            digits.dedup();
            let runs = runs(&digits.iter().map(String::as_str).collect::<Vec<_>>());
            let folded = match runs.as_slice() {
                [only] if only.lo == only.hi => number(only.lo, only.width),
                _ => format!("[{}]", write_runs(&runs)),
            };
            open.push((prefix, format!("{folded}{rest}")));
        }
    }
    done.sort_by(|a, b| natural_cmp(a, b));
    done.dedup();
    done
}

fn write_runs(runs: &[Run]) -> String {
    let items: Vec<String> = runs
        .iter()
        .map(|r| {
            if r.lo == r.hi {
                number(r.lo, r.width)
            } else {
                format!("{}-{}", number(r.lo, r.width), number(r.hi, r.width))
            }
        })
        .collect();
    items.join(",")
}

fn value(digits: &str) -> u64 {
    digits.parse().unwrap_or(u64::MAX)
}

/// The width a run starting at `digits` is written with: padded only with a leading zero.
fn width_of(digits: &str) -> usize {
    if digits.len() > 1 && digits.starts_with('0') {
        digits.len()
    } else {
        0
    }
}

/// Greedy runs over digit strings sorted by value: a string joins the run that expects its
/// value when that run writes it exactly so (same padding), else it starts a run.
fn runs(sorted: &[&str]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut expecting: HashMap<u64, Vec<usize>> = HashMap::new();
    for &digits in sorted {
        let v = value(digits);
        let mut candidates = expecting.remove(&v).unwrap_or_default();
        let found = candidates
            .iter()
            .position(|&i| number(v, runs[i].width) == digits);
        match found {
            Some(pos) => {
                let i = candidates.swap_remove(pos);
                runs[i].hi = v;
                if let Some(next) = v.checked_add(1) {
                    expecting.entry(next).or_default().push(i);
                }
            }
            None => {
                runs.push(Run {
                    lo: v,
                    hi: v,
                    width: width_of(digits),
                });
                if let Some(next) = v.checked_add(1) {
                    expecting.entry(next).or_default().push(runs.len() - 1);
                }
            }
        }
        if !candidates.is_empty() {
            expecting.insert(v, candidates);
        }
    }
    runs.sort();
    runs
}

/// `web07.dc` -> (`web`, `07`, `.dc`); `None` without digits, for IPv6 addresses, and for
/// digit runs too long to fold.
fn split_last_number(name: &str) -> Option<(&str, &str, &str)> {
    if name.contains(':') {
        return None;
    }
    let bytes = name.as_bytes();
    let end = bytes.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = bytes[..end]
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |p| p + 1);
    if end - start > MAX_DIGITS {
        return None;
    }
    Some((&name[..start], &name[start..end], &name[end..]))
}

/// Natural order of names: text compared as text, digit runs by value (`web2` < `web10`).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let la = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let lb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..la]), trim_zeros(&b[..lb]));
                let order = da.len().cmp(&db.len()).then(da.cmp(db)).then(la.cmp(&lb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[la..];
                b = &b[lb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
