//! What users read: host-labelled lines (or JSON records) and the closing summary.

use std::collections::BTreeMap;
use std::io::Write;

use rjob_proto::v1::Stream;
use serde_json::json;

use crate::child::ChildOutcome;
use crate::cli::OutputFormat;
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
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: OutputFormat, labels: Vec<String>) -> Self {
        let prefixes = labels
            .iter()
            .map(|l| {
                [
                    format!("{l}: ").into_bytes(),
                    format!("{l} [stderr]: ").into_bytes(),
                ]
            })
            .collect();
        Printer {
            out,
            format,
            labels,
            prefixes,
            partial: BTreeMap::new(),
        }
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

    /// A host is done: print what is left of its unfinished lines, then its result record.
    pub fn done(&mut self, host: usize, outcome: &ChildOutcome) -> std::io::Result<()> {
        for is_err in [false, true] {
            if let Some(line) = self.partial.remove(&(host, is_err)) {
                self.line(host, is_err, 0, &line)?;
            }
        }
        if self.format == OutputFormat::Json {
            let record = json!({
                "type": "result",
                "host": self.labels[host],
                "state": outcome.state,
                "exit_code": outcome.exit_code,
                "signal": outcome.signal,
                "duration_ms": u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
                "error": outcome.reason,
            });
            writeln!(self.out, "{record}")?;
        }
        Ok(())
    }

    fn line(&mut self, host: usize, is_err: bool, seq: u64, line: &[u8]) -> std::io::Result<()> {
        let label = &self.labels[host];
        match self.format {
            OutputFormat::Text => {
                self.out.write_all(&self.prefixes[host][usize::from(is_err)])?;
                self.out.write_all(line)?;
                self.out.write_all(b"\n")
            }
            OutputFormat::Json => {
                let stream = if is_err { "stderr" } else { "stdout" };
                let record = match std::str::from_utf8(line) {
                    Ok(text) => {
                        json!({"type": "output", "host": label, "stream": stream, "seq": seq, "data": text})
                    }
                    Err(_) => json!({
                        "type": "output", "host": label, "stream": stream, "seq": seq,
                        "data": String::from_utf8_lossy(line),
                        "data_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, line),
                    }),
                };
                writeln!(self.out, "{record}")
            }
        }
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

/// The closing summary: counts per state, then each host that did not complete and why.
pub fn summary(labels: &[String], outcomes: &[Option<ChildOutcome>], elapsed: std::time::Duration) -> String {
    let mut counts: BTreeMap<State, usize> = BTreeMap::new();
    for o in outcomes.iter().flatten() {
        *counts.entry(o.state).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut text = format!(
        "rjob: {} host{}: {} in {:.1}s\n",
        labels.len(),
        if labels.len() == 1 { "" } else { "s" },
        counts.join(", "),
        elapsed.as_secs_f64()
    );
    for (label, outcome) in labels.iter().zip(outcomes) {
        match outcome {
            Some(o) if o.state != State::Completed => {
                let reason = o.reason.as_deref().unwrap_or("no reason given");
                text.push_str(&format!("rjob: {label}: {}: {reason}\n", o.state));
            }
            Some(_) => {}
            None => text.push_str(&format!("rjob: {label}: no result\n")),
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
            duration: Duration::from_millis(5),
        }
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
