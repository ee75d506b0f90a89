//! `--gather` (clush `-b`, dshbak `-c`) and `--sort` (clush `-L`): output kept per host in a
//! [`Spool`] and printed at the end, identical outputs once under their folded host set.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::child::ChildOutcome;
use crate::colour::Paint;
use crate::hosts::{fold, Host};
use crate::output::MAX_LINE;
use crate::spool::Spool;

/// (length, hash) of stdout and of stderr: hosts with equal output have equal keys.
type Key = ((u64, u64), (u64, u64));

/// Hosts whose stdout and stderr are byte for byte the same, largest set first (ties: the
/// set whose first host came first).
pub fn groups(spool: &Spool) -> io::Result<Vec<Vec<usize>>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut buckets: HashMap<Key, Vec<usize>> = HashMap::new();
    for host in 0..spool.len() {
        let key = (spool.key(host, false), spool.key(host, true));
        let bucket = buckets.entry(key).or_default();
        let mut found = None;
        for &g in bucket.iter() {
            let first = groups[g][0];
            if spool.same(first, host, false)? && spool.same(first, host, true)? {
                found = Some(g);
                break;
            }
        }
        match found {
            Some(g) => groups[g].push(host),
            None => {
                bucket.push(groups.len());
                groups.push(vec![host]);
            }
        }
    }
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    Ok(groups)
}

/// How the gathered text is shown.
pub struct Look {
    pub paint: Paint,
    /// Show control characters as visible escapes (a terminal without `--raw`).
    pub escape: bool,
    /// Hosts are labelled with their port (not all on one port).
    pub show_port: bool,
}

/// Prints each group: a header with the folded set and its size, then its lines (stderr
/// lines marked). A group with a host that did not complete has its header marked.
pub fn print_text(
    out: &mut impl Write,
    spool: &Spool,
    hosts: &[Host],
    outcomes: &[Option<ChildOutcome>],
    look: &Look,
) -> io::Result<()> {
    for group in groups(spool)? {
        let folded = fold::fold_hosts(group.iter().map(|&i| &hosts[i]), look.show_port);
        let folded = crate::escape::text(&folded);
        let failed = group.iter().any(|&i| {
            outcomes
                .get(i)
                .and_then(Option::as_ref)
                .is_none_or(|o| o.state != crate::state::State::Completed || o.exit_code != Some(0))
        });
        let title = format!("{folded} ({})", group.len());
        let rule = "-".repeat(title.chars().count().clamp(15, 79));
        let title = if failed {
            look.paint.failure(&title)
        } else {
            look.paint.host(&title)
        };
        writeln!(out, "{rule}\n{title}\n{rule}")?;
        let first = group[0];
        let mark = format!("{} ", look.paint.stderr_mark());
        for (is_err, prefix) in [(false, ""), (true, mark.as_str())] {
            let mut lines = Lines::new(prefix.as_bytes(), look.escape);
            spool.for_each(first, is_err, |chunk| lines.feed(out, chunk))?;
            lines.finish(out)?;
        }
    }
    Ok(())
}

/// The `--output json` group records (after the usual records), one per group.
pub fn print_json(
    out: &mut impl Write,
    spool: &Spool,
    hosts: &[Host],
    labels: &[String],
    outcomes: &[Option<ChildOutcome>],
    show_port: bool,
) -> io::Result<()> {
    for group in groups(spool)? {
        let first = group[0];
        let stdout = spool.read(first, false)?;
        let stderr = spool.read(first, true)?;
        let base64 = |bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .is_err()
                .then(|| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes))
        };
        let record = crate::records::GroupRecord {
            kind: crate::records::GroupTag::Tag,
            hosts: group.iter().map(|&i| labels[i].clone()).collect(),
            folded: fold::fold_hosts(group.iter().map(|&i| &hosts[i]), show_port),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            // Output that is not UTF-8 also comes whole, as the output records give it.
            stdout_base64: base64(&stdout),
            stderr_base64: base64(&stderr),
            exit_codes: group
                .iter()
                .map(|&i| outcomes.get(i).and_then(Option::as_ref).and_then(|o| o.exit_code))
                .collect(),
        };
        let record = serde_json::to_string(&record).map_err(io::Error::other)?;
        writeln!(out, "{record}")?;
    }
    Ok(())
}

/// The hosts in host order: names in natural order (`web2` before `web10`), then ports.
pub fn host_order(hosts: &[Host]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    order.sort_by(|&a, &b| {
        fold::natural_cmp(&hosts[a].name, &hosts[b].name).then(hosts[a].port.cmp(&hosts[b].port))
    });
    order
}

/// Cuts chunks into lines, each written after `prefix`; a line without its newline is cut
/// at [`MAX_LINE`], as the live printer does.
struct Lines<'a> {
    prefix: &'a [u8],
    escape: bool,
    partial: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(prefix: &'a [u8], escape: bool) -> Self {
        Lines {
            prefix,
            escape,
            partial: Vec::new(),
        }
    }

    fn feed(&mut self, out: &mut impl Write, mut chunk: &[u8]) -> io::Result<()> {
        while let Some(pos) = memchr::memchr(b'\n', chunk) {
            if self.partial.is_empty() {
                self.line(out, &chunk[..pos])?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..pos]);
                self.line(out, &line)?;
            }
            chunk = &chunk[pos + 1..];
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() >= MAX_LINE {
            let long = std::mem::take(&mut self.partial);
            self.line(out, &long)?;
        }
        Ok(())
    }

    fn line(&self, out: &mut impl Write, line: &[u8]) -> io::Result<()> {
        out.write_all(self.prefix)?;
        if self.escape {
            out.write_all(&crate::escape::output(line))?;
        } else {
            out.write_all(line)?;
        }
        out.write_all(b"\n")
    }

    fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(out, &rest)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;
    use crate::state::State;
    use std::time::Duration;

    fn done(code: i32) -> Option<ChildOutcome> {
        Some(ChildOutcome {
            state: if code == 0 {
                State::Completed
            } else {
                State::Failed
            },
            exit_code: Some(code),
            signal: None,
            reason: None,
            cause: crate::child::Cause::Exited,
            duration: Duration::from_millis(1),
        })
    }

    #[test]
    fn identical_outputs_are_printed_once_under_their_folded_set() {
        let hosts = crate::hosts::parse_host_list(&["web[01-05]".to_string()]).unwrap();
        let mut spool = Spool::with_budget(5, 4, 1 << 20);
        for host in 0..5 {
            let text: &[u8] = if host == 3 { b"other\n" } else { b"same\nlines\n" };
            spool.append(host, false, text).unwrap();
        }
        spool.append(3, true, b"warn").unwrap();
        let outcomes = vec![done(0), done(0), done(0), done(1), done(0)];
        let look = Look {
            paint: Paint::new(false),
            escape: false,
            show_port: false,
        };
        let mut out = Vec::new();
        print_text(&mut out, &spool, &hosts, &outcomes, &look).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "-----------------\nweb[01-03,05] (4)\n-----------------\nsame\nlines\n\
             ---------------\nweb04 (1)\n---------------\nother\n[stderr] warn\n"
        );
        let labels: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        let mut out = Vec::new();
        print_json(&mut out, &spool, &hosts, &labels, &outcomes, false).unwrap();
        let records: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["folded"], "web[01-03,05]");
        assert_eq!(records[0]["exit_codes"], serde_json::json!([0, 0, 0, 0]));
        assert_eq!(records[1]["stderr"], "warn");
        assert!(records[1].get("stderr_base64").is_none());
        // Bytes that are not UTF-8 come whole in base64 too.
        spool.append(3, true, b"\xff").unwrap();
        let mut out = Vec::new();
        print_json(&mut out, &spool, &hosts, &labels, &outcomes, false).unwrap();
        let last: serde_json::Value =
            serde_json::from_slice(out.split(|b| *b == b'\n').nth(1).unwrap()).unwrap();
        assert_eq!(last["stderr_base64"], "d2Fybv8=");
    }

    #[test]
    fn host_order_is_natural() {
        let hosts = crate::hosts::parse_host_list(&["n10,n2,a1,n1".to_string()]).unwrap();
        let names: Vec<&str> = host_order(&hosts)
            .into_iter()
            .map(|i| hosts[i].name.as_str())
            .collect();
        assert_eq!(names, ["a1", "n1", "n2", "n10"]);
    }
}
