//! The progress line: while hosts are in flight, stderr shows one line updated in place,
//! `[ 812/1024 done · 3 failed · 64 running · 12.4s ]` (indicatif).
//!
//! Shown only when stderr is a terminal, the output is text and `--quiet` was not given. It is
//! cleared before output reaches the terminal and drawn again after, and output is handed to
//! the terminal in whole lines only ([`Guarded`]), so the line never splits or mixes with
//! output. One line per process, as there is one terminal: it is kept here, not passed around,
//! so the printers only wrap their writer.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::choices::OutputFormat;

/// How often the line is drawn again (its clock moves on).
const TICK: Duration = Duration::from_millis(100);

/// Counts behind the line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub running: usize,
}

impl Counts {
    /// `812/1024 done · 3 failed · 64 running`.
    pub fn text(&self) -> String {
        format!(
            "{}/{} done · {} failed · {} running",
            self.done, self.total, self.failed, self.running
        )
    }
}

struct Line {
    bar: ProgressBar,
    counts: Counts,
    /// Per host: whether it is counted as running.
    running: Vec<bool>,
}

static LINE: Mutex<Option<Line>> = Mutex::new(None);

fn with_line<R>(f: impl FnOnce(&mut Option<Line>) -> R) -> R {
    let mut guard = LINE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// Whether a command shows the line: stderr is a terminal, the output is text, no `--quiet`.
pub fn wanted(quiet: bool, format: OutputFormat) -> bool {
    !quiet && format == OutputFormat::Text && std::io::stderr().is_terminal()
}

/// Whether a command that writes output lines as they come shows the line: as [`wanted`],
/// and standard output is not a pipe. A pipe's reader (`| grep`, `| less`) may write to the
/// same terminal at any time later, across the line; a file or the terminal itself is fine.
pub fn wanted_beside_output(quiet: bool, format: OutputFormat) -> bool {
    wanted(quiet, format) && !stdout_is_a_pipe()
}

fn stdout_is_a_pipe() -> bool {
    use nix::sys::stat::{fstat, SFlag};
    match fstat(std::io::stdout()) {
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK
        }
        Err(_) => true, // unknown: no line
    }
}

/// Starts the line for `total` hosts, if `shown` (see [`wanted`]).
pub fn begin(total: usize, shown: bool) {
    if !shown {
        return;
    }
    let style = ProgressStyle::with_template("[ {msg} · {secs} ]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "secs",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
            },
        );
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(style);
    let counts = Counts {
        total,
        ..Counts::default()
    };
    bar.set_message(counts.text());
    // Drawn only once it is the line every writer suspends: a write that came between its
    // first draw and its being known would land beside it and leave it on the screen.
    with_line(|line| {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.enable_steady_tick(TICK);
        *line = Some(Line {
            bar,
            counts,
            running: vec![false; total],
        });
    });
}

fn update(f: impl FnOnce(&mut Line)) {
    with_line(|line| {
        if let Some(line) = line {
            f(line);
            line.bar.set_message(line.counts.text());
        }
    });
}

/// Host `host` runs.
pub fn started(host: usize) {
    update(|line| {
        if let Some(r) = line.running.get_mut(host).filter(|r| !**r) {
            *r = true;
            line.counts.running += 1;
        }
    });
}

/// Host `host` is done; `ok` when it completed.
pub fn done(host: usize, ok: bool) {
    update(|line| {
        if let Some(r) = line.running.get_mut(host).filter(|r| **r) {
            *r = false;
            line.counts.running -= 1;
        }
        line.counts.done += 1;
        line.counts.failed += usize::from(!ok);
    });
}

/// Sets every count at once (`rjob wait`, which reads them from the daemon).
pub fn set(counts: Counts) {
    update(|line| line.counts = counts);
}

/// The counts shown now, if the line is shown.
pub fn counts() -> Option<Counts> {
    with_line(|line| line.as_ref().map(|l| l.counts.clone()))
}

/// Runs `f` (which writes to the terminal) with the line cleared, then draws it again.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = with_line(|line| line.as_ref().map(|l| l.bar.clone()));
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// Clears the line for good (before the summary).
pub fn end() {
    if let Some(line) = with_line(Option::take) {
        line.bar.finish_and_clear();
    }
}

/// A writer for output that goes to the terminal beside the line: it hands the terminal whole
/// lines only, each write with the line cleared. A partial line (a buffer that filled in the
/// middle of one) is held back until its newline or a flush.
pub struct Guarded<W: Write> {
    inner: W,
    tail: Vec<u8>,
}

impl<W: Write> Guarded<W> {
    pub fn new(inner: W) -> Self {
        Guarded {
            inner,
            tail: Vec::new(),
        }
    }
}

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match memchr::memrchr(b'\n', buf) {
            None => self.tail.extend_from_slice(buf),
            Some(last) => {
                let (lines, rest) = buf.split_at(last + 1);
                let tail = std::mem::take(&mut self.tail);
                suspend(|| {
                    self.inner.write_all(&tail)?;
                    self.inner.write_all(lines)?;
                    self.inner.flush()
                })?;
                self.tail.extend_from_slice(rest);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let tail = std::mem::take(&mut self.tail);
        suspend(|| {
            self.inner.write_all(&tail)?;
            self.inner.flush()
        })
    }
}

/// Writes a line to stderr with the progress line cleared (`rjob: HOST: agent busy …`).
pub fn eprintln(text: &str) {
    suspend(|| eprintln!("{text}"));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn counts_read_as_the_line_shows_them() {
        let c = Counts {
            total: 1024,
            done: 812,
            failed: 3,
            running: 64,
        };
        assert_eq!(c.text(), "812/1024 done · 3 failed · 64 running");
    }

    #[test]
    fn guarded_hands_on_whole_lines_only() {
        let mut out = Guarded::new(Vec::new());
        out.write_all(b"web01: par").unwrap();
        assert!(out.inner.is_empty());
        out.write_all(b"tial\nweb02: x").unwrap();
        assert_eq!(out.inner, b"web01: partial\n");
        out.write_all(b"\n").unwrap();
        assert_eq!(out.inner, b"web01: partial\nweb02: x\n");
        out.write_all(b"tail").unwrap();
        out.flush().unwrap();
        assert_eq!(out.inner, b"web01: partial\nweb02: x\ntail");
    }
}
