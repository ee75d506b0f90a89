//! What users read: host-labelled lines (or JSON records) and the closing summary.

use std::collections::BTreeMap;
use std::io::Write;

use rjob_proto::v1::Stream;

use crate::child::ChildOutcome;
use crate::choices::OutputFormat;
use crate::colour::Paint;
use crate::hosts::{self, Host};
use crate::records::{OutputRecord, OutputTag, ResultRecord, ResultTag, StreamName};
use crate::state::State;

/// The longest line kept back waiting for its newline.
pub const MAX_LINE: usize = 64 * 1024;

/// Turns output chunks into whole lines per host and stream, so that two hosts' partial
/// lines never mix, and writes them in the chosen format.
pub struct Printer<W: Write> {
    out: W,
    format: OutputFormat,
    labels: Vec<String>,
    /// `label: ` and `label [stderr]: ` per host, made once (the text format's hot path).
    prefixes: Vec<[Vec<u8>; 2]>,
    /// Unfinished line per (host, stream).
    partial: BTreeMap<(usize, bool), Vec<u8>>,
    /// Show control characters in lines as visible escapes (text format on a terminal).
    escape: bool,
    /// A `"job"` field in every JSON record (`rjob receive` of several jobs).
    job: Option<String>,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: OutputFormat, labels: Vec<String>) -> Self {
        let prefixes = prefixes(&labels, Paint::new(false));
        Printer {
            out,
            format,
            labels,
            prefixes,
            partial: BTreeMap::new(),
            escape: false,
            job: None,
        }
    }

    /// Adds `"job": JOB` to every JSON record.
    pub fn job_field(mut self, job: Option<String>) -> Self {
        self.job = job;
        self
    }

    /// Writes one JSON record (with the job field when set) as a line.
    pub fn record(&mut self, mut record: serde_json::Value) -> std::io::Result<()> {
        if let Some(job) = &self.job {
            record["job"] = serde_json::Value::String(job.clone());
        }
        self.json_line(&record)
    }

    /// Shows control characters other than tab in text lines as visible escapes
    /// ([`crate::escape::output`]); host labels are always escaped.
    pub fn escape_controls(mut self, on: bool) -> Self {
        self.escape = on;
        self
    }

    /// Colours host labels (each its own, stably) and the `[stderr]` mark.
    pub fn paint(mut self, paint: Paint) -> Self {
        self.prefixes = prefixes(&self.labels, paint);
        self
    }

    pub fn output(&mut self, host: usize, stream: Stream, seq: u64, data: &[u8]) -> std::io::Result<()> {
        let is_err = stream == Stream::Stderr;
        let mut rest = data;
        while let Some(pos) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(pos);
            rest = &tail[1..];
            match self.partial.remove(&(host, is_err)) {
                Some(mut start) => {
                    start.extend_from_slice(line);
                    self.line(host, is_err, seq, &start)?;
                }
                None => self.line(host, is_err, seq, line)?,
            }
        }
        if !rest.is_empty() {
            let pending = self.partial.entry((host, is_err)).or_default();
            pending.extend_from_slice(rest);
            // Output without newlines must not grow without bound: past the cap, it is
            // printed as a line of its own.
            if pending.len() >= MAX_LINE {
                let long = std::mem::take(pending);
                self.partial.remove(&(host, is_err));
                self.line(host, is_err, seq, &long)?;
            }
        }
        Ok(())
    }

    /// Bytes of `host`'s unfinished line on `stream`, held back waiting for its newline.
    pub fn held(&self, host: usize, stream: Stream) -> usize {
        self.partial
            .get(&(host, stream == Stream::Stderr))
            .map_or(0, Vec::len)
    }

    /// Prints what is left of `host`'s unfinished lines, each as a line.
    pub fn release(&mut self, host: usize) -> std::io::Result<()> {
        for is_err in [false, true] {
            if let Some(line) = self.partial.remove(&(host, is_err)) {
                self.line(host, is_err, 0, &line)?;
            }
        }
        Ok(())
    }

    /// Forgets `host`'s unfinished lines unprinted (they come again, whole, from the store).
    pub fn discard(&mut self, host: usize) {
        self.partial.remove(&(host, false));
        self.partial.remove(&(host, true));
    }

    /// A host is done: print what is left of its unfinished lines, then its result record.
    pub fn done(&mut self, host: usize, outcome: &ChildOutcome) -> std::io::Result<()> {
        self.end_lines(host)?;
        if self.format == OutputFormat::Json {
            let record = result_record(&self.labels[host], outcome);
            self.json_line(&record)?;
        }
        Ok(())
    }

    /// Prints what is left of a host's unfinished lines.
    pub fn end_lines(&mut self, host: usize) -> std::io::Result<()> {
        for is_err in [false, true] {
            if let Some(line) = self.partial.remove(&(host, is_err)) {
                self.line(host, is_err, 0, &line)?;
            }
        }
        Ok(())
    }

    /// The writer, for what is printed around the lines (gathered groups).
    pub fn writer(&mut self) -> &mut W {
        &mut self.out
    }

    fn line(&mut self, host: usize, is_err: bool, seq: u64, line: &[u8]) -> std::io::Result<()> {
        let label = &self.labels[host];
        match self.format {
            OutputFormat::Text => {
                self.out.write_all(&self.prefixes[host][usize::from(is_err)])?;
                if self.escape {
                    self.out.write_all(&crate::escape::output(line))?;
                } else {
                    self.out.write_all(line)?;
                }
                self.out.write_all(b"\n")
            }
            OutputFormat::Json => {
                let (data, data_base64) = match std::str::from_utf8(line) {
                    Ok(text) => (text.to_owned(), None),
                    Err(_) => (
                        String::from_utf8_lossy(line).into_owned(),
                        Some(base64::Engine::encode(
                            &base64::engine::general_purpose::STANDARD,
                            line,
                        )),
                    ),
                };
                let record = OutputRecord {
                    kind: OutputTag::Tag,
                    job: self.job.clone(),
                    host: label.clone(),
                    stream: if is_err {
                        StreamName::Stderr
                    } else {
                        StreamName::Stdout
                    },
                    seq,
                    data,
                    data_base64,
                };
                let record = serde_json::to_value(record).map_err(std::io::Error::other)?;
                self.json_line(&record)
            }
        }
    }

    /// One JSON record as a line. On a terminal, DEL and the C1 controls (which JSON leaves
    /// as they are) are written as `\u00XX` escapes too, so a record cannot drive the
    /// terminal; the record means the same.
    fn json_line(&mut self, record: &serde_json::Value) -> std::io::Result<()> {
        let text = record.to_string();
        if self.escape && text.chars().any(|c| ('\u{7f}'..='\u{9f}').contains(&c)) {
            let mut safe = String::with_capacity(text.len() + 16);
            for c in text.chars() {
                if ('\u{7f}'..='\u{9f}').contains(&c) {
                    safe.push_str(&format!("\\u{:04x}", u32::from(c)));
                } else {
                    safe.push(c);
                }
            }
            return writeln!(self.out, "{safe}");
        }
        writeln!(self.out, "{text}")
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Prints every unfinished line as it is, then flushes.
    pub fn finish(&mut self) -> std::io::Result<()> {
        let pending: Vec<(usize, bool)> = self.partial.keys().copied().collect();
        for (host, is_err) in pending {
            if let Some(line) = self.partial.remove(&(host, is_err)) {
                self.line(host, is_err, 0, &line)?;
            }
        }
        self.flush()
    }
}

/// A host's `{"type":"result",…}` record.
pub fn result_record(label: &str, outcome: &ChildOutcome) -> serde_json::Value {
    let record = ResultRecord {
        kind: ResultTag::Tag,
        job: None,
        host: label.to_owned(),
        state: outcome.state,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        error: outcome.reason.clone().filter(|r| !r.is_empty()),
        cause: outcome.cause,
    };
    serde_json::to_value(record).unwrap_or_default()
}

/// `label: ` and `label [stderr]: ` per host.
fn prefixes(labels: &[String], paint: Paint) -> Vec<[Vec<u8>; 2]> {
    labels
        .iter()
        .map(|l| {
            let l = paint.host(&crate::escape::text(l));
            let mark = paint.stderr_mark();
            [
                format!("{l}: ").into_bytes(),
                format!("{l} {mark}: ").into_bytes(),
            ]
        })
        .collect()
}

/// How the summary is written.
#[derive(Debug, Clone, Copy)]
pub struct SummaryLook {
    pub paint: Paint,
    /// Hosts are labelled with their port (not all on one port).
    pub show_port: bool,
    /// List this many of the longest-running hosts (`--slowest N`).
    pub slowest: usize,
}

impl Default for SummaryLook {
    fn default() -> Self {
        SummaryLook {
            paint: Paint::new(false),
            show_port: true,
            slowest: 0,
        }
    }
}

/// The closing summary: counts per state and the wall time, then one line per state and
/// reason with the folded set of hosts that did not complete for it (so 100 unreachable hosts
/// are one line), then the slowest hosts when asked.
pub fn summary(
    hosts: &[Host],
    labels: &[String],
    outcomes: &[Option<ChildOutcome>],
    elapsed: std::time::Duration,
    look: &SummaryLook,
) -> String {
    let paint = look.paint;
    // Children the error budget left unstarted count as "skipped", not with the Stopped.
    let mut counts: BTreeMap<State, usize> = BTreeMap::new();
    let mut skipped = 0;
    for o in outcomes.iter().flatten() {
        if crate::budget::skipped(o) {
            skipped += 1;
        } else {
            *counts.entry(o.state).or_default() += 1;
        }
    }
    let mut counts: Vec<String> = counts
        .iter()
        .map(|(s, n)| paint.state(*s, &format!("{n} {s}")))
        .collect();
    if skipped > 0 {
        counts.push(paint.state(State::Stopped, &format!("{skipped} skipped")));
    }
    let mut text = format!(
        "rjob: {} host{}: {} in {:.1}s\n",
        labels.len(),
        if labels.len() == 1 { "" } else { "s" },
        counts.join(", "),
        elapsed.as_secs_f64()
    );
    // Hosts that did not complete, by (state, reason), in the order first seen. A reason that
    // names its own host's address ("cannot connect: H:P: ...") is compared without it, so
    // that 100 unreachable hosts are still one line; a host alone keeps its whole reason.
    let mut order: Vec<(Option<State>, String)> = Vec::new();
    let mut sets: std::collections::HashMap<(Option<State>, String), Vec<usize>> = Default::default();
    let mut whole: std::collections::HashMap<usize, String> = Default::default();
    for (i, outcome) in outcomes.iter().enumerate().take(labels.len()) {
        let key = match outcome {
            Some(o) if o.state == State::Completed => continue,
            Some(o) => {
                let reason = o.reason.clone().unwrap_or_else(|| "no reason given".into());
                let general = match hosts.get(i) {
                    Some(h) => reason.replace(&format!("{}:{}: ", h.name, h.port), ""),
                    None => reason.clone(),
                };
                whole.insert(i, reason);
                (Some(o.state), general)
            }
            None => (None, String::new()),
        };
        let set = sets.entry(key.clone()).or_default();
        if set.is_empty() {
            order.push(key);
        }
        set.push(i);
    }
    for key in order {
        let set = &sets[&key];
        let who = if set.len() == 1 {
            crate::escape::text(&labels[set[0]]).into_owned()
        } else {
            let folded = hosts::fold::fold_hosts(set.iter().filter_map(|&i| hosts.get(i)), look.show_port);
            format!("{} ({})", crate::escape::text(&folded), set.len())
        };
        let who = paint.failure(&who);
        match key {
            (Some(state), general) => {
                let reason = match set.as_slice() {
                    [one] => whole.get(one).cloned().unwrap_or(general),
                    _ => general,
                };
                let reason = crate::escape::text(&reason);
                text.push_str(&format!("rjob: {who}: {state}: {reason}\n"));
            }
            (None, _) => text.push_str(&format!("rjob: {who}: no result\n")),
        }
    }
    if look.slowest > 0 {
        let mut timed: Vec<(usize, &ChildOutcome)> = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i, o)))
            .collect();
        timed.sort_by(|a, b| b.1.duration.cmp(&a.1.duration).then(a.0.cmp(&b.0)));
        for (i, o) in timed.into_iter().take(look.slowest) {
            let label = labels.get(i).map_or("?".into(), |l| crate::escape::text(l));
            text.push_str(&format!(
                "rjob: slowest: {} {:.3}s {}\n",
                paint.host(&label),
                o.duration.as_secs_f64(),
                paint.state(o.state, &o.state.to_string())
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;
    use std::time::Duration;

    fn outcome(state: State) -> ChildOutcome {
        ChildOutcome {
            state,
            exit_code: Some(0),
            signal: None,
            reason: None,
            cause: crate::child::Cause::Exited,
            duration: Duration::from_millis(5),
        }
    }

    #[test]
    fn hosts_failing_for_one_reason_are_one_folded_line() {
        let hosts = crate::hosts::parse_host_list(&["10.0.9.[1-100],web1".to_string()]).unwrap();
        let labels = crate::hosts::fold::labels(&hosts);
        let mut outcomes: Vec<Option<ChildOutcome>> = (0..100)
            .map(|_| {
                let mut o = outcome(State::Failed);
                o.reason = Some("connection refused".into());
                Some(o)
            })
            .collect();
        outcomes.push(Some(outcome(State::Completed)));
        let look = SummaryLook {
            slowest: 1,
            show_port: false,
            ..SummaryLook::default()
        };
        let text = summary(&hosts, &labels, &outcomes, Duration::from_millis(1500), &look);
        assert_eq!(
            text,
            "rjob: 101 hosts: 1 Completed, 100 Failed in 1.5s\n\
             rjob: 10.0.9.[1-100] (100): Failed: connection refused\n\
             rjob: slowest: 10.0.9.1 0.005s Failed\n"
        );
    }

    #[test]
    fn json_on_a_terminal_escapes_del_and_c1_controls_and_means_the_same() {
        let data = "a\u{9b}31mb\u{7f}c\u{1b}]0;x\u{7}\n";
        let mut buf = Vec::new();
        let mut p = Printer::new(&mut buf, OutputFormat::Json, vec!["h".into()]).escape_controls(true);
        p.output(0, Stream::Stdout, 1, data.as_bytes()).unwrap();
        p.finish().unwrap();
        drop(p);
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("\\u009b") && text.contains("\\u007f"), "{text}");
        let record: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(record["data"], data.trim_end_matches('\n'));
    }

    #[test]
    fn partial_lines_of_two_hosts_never_mix() {
        let mut buf = Vec::new();
        let mut p = Printer::new(&mut buf, OutputFormat::Text, vec!["a".into(), "b".into()]);
        p.output(0, Stream::Stdout, 1, b"hel").unwrap();
        p.output(1, Stream::Stdout, 1, b"wor").unwrap();
        p.output(0, Stream::Stderr, 2, b"oops\n").unwrap();
        p.output(0, Stream::Stdout, 3, b"lo\nnext").unwrap();
        p.output(1, Stream::Stdout, 2, b"ld\n").unwrap();
        p.done(0, &outcome(State::Completed)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text, "a [stderr]: oops\na: hello\nb: world\na: next\n");
    }

    #[test]
    fn json_records_parse_and_carry_host_stream_seq_and_data() {
        let mut buf = Vec::new();
        let mut p = Printer::new(&mut buf, OutputFormat::Json, vec!["h".into()]);
        p.output(0, Stream::Stdout, 7, b"x y\n").unwrap();
        p.done(0, &outcome(State::Completed)).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["data"], "x y");
        assert_eq!(lines[0]["seq"], 7);
        assert_eq!(lines[1]["type"], "result");
        assert_eq!(lines[1]["state"], "Completed");
    }
}
