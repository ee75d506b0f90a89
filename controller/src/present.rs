//! What `rjob invoke` does with each host's output: print it live (the default), keep it for
//! the end (`--gather`, `--sort`), and write it to `--output-dir`.

use std::io::{self, Write};

use rjob_proto::v1::Stream;

use crate::child::ChildOutcome;
use crate::choices::OutputFormat;
use crate::colour::Paint;
use crate::gather;
use crate::hosts::Host;
use crate::outdir::OutDir;
use crate::output::{self, Printer};
use crate::spool::Spool;

/// The choices that shape the output.
pub struct Presentation {
    pub format: OutputFormat,
    pub hosts: Vec<Host>,
    pub labels: Vec<String>,
    /// Show control characters as visible escapes.
    pub escape: bool,
    pub paint: Paint,
    pub gather: bool,
    pub sort: bool,
    pub outdir: Option<OutDir>,
    /// Labels carry ports (the hosts are not all on one port).
    pub show_port: bool,
}

pub struct Presenter<W: Write> {
    printer: Printer<W>,
    spool: Option<Spool>,
    how: Presentation,
    /// Lines are printed as they come (text without --gather/--sort, and always JSON).
    live: bool,
    /// A spool or output-dir write failed (said on stderr once).
    broken: bool,
    /// Hosts whose `--output-dir` files are written.
    written: Vec<bool>,
}

impl<W: Write> Presenter<W> {
    pub fn new(out: W, how: Presentation) -> Self {
        let printer = Printer::new(out, how.format, how.labels.clone())
            .escape_controls(how.escape)
            .paint(how.paint);
        let keep = how.gather || how.sort || how.outdir.is_some();
        let live = how.format == OutputFormat::Json || !(how.gather || how.sort);
        Presenter {
            printer,
            spool: keep.then(|| Spool::new(how.labels.len())),
            live,
            broken: false,
            written: vec![false; how.labels.len()],
            how,
        }
    }

    /// Whether writing a file (the spool or `--output-dir`) failed.
    pub fn file_errors(&self) -> bool {
        self.broken
    }

    fn fail(&mut self, what: &str, err: &io::Error) {
        if !self.broken {
            eprintln!("rjob: {what}: {err}");
        }
        self.broken = true;
    }

    pub fn output(&mut self, host: usize, stream: Stream, seq: u64, data: &[u8]) -> io::Result<()> {
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.append(host, stream == Stream::Stderr, data) {
                self.fail("cannot keep output in a temporary file", &e);
            }
        }
        if self.live {
            self.printer.output(host, stream, seq, data)?;
        }
        Ok(())
    }

    pub fn done(&mut self, host: usize, outcome: &ChildOutcome) -> io::Result<()> {
        self.write_files(host, outcome);
        if !(self.how.gather || self.how.sort) {
            if let Some(spool) = &mut self.spool {
                spool.clear(host);
            }
        }
        if self.live {
            self.printer.done(host, outcome)?;
        }
        Ok(())
    }

    /// Writes a host's `--output-dir` files, once.
    fn write_files(&mut self, host: usize, outcome: &ChildOutcome) {
        if let (Some(dir), Some(spool), Some(false)) = (&self.how.outdir, &self.spool, self.written.get(host))
        {
            let label = &self.how.labels[host];
            let written = dir.write(label, spool, host, &output::result_record(label, outcome));
            self.written[host] = true;
            if let Err(e) = written {
                self.fail("cannot write to --output-dir", &e);
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.printer.flush()
    }

    /// Prints what was kept for the end: the gathered groups or the sorted hosts.
    /// Hosts that had no [`Presenter::done`] (`rjob receive`) get their `--output-dir` files
    /// here, with the outcome given.
    pub fn finish(&mut self, outcomes: &[Option<ChildOutcome>]) -> io::Result<()> {
        self.printer.finish()?;
        for (host, outcome) in outcomes.iter().enumerate() {
            if let Some(outcome) = outcome {
                self.write_files(host, outcome);
            }
        }
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let how = &self.how;
        match how.format {
            OutputFormat::Json if how.gather => {
                gather::print_json(
                    self.printer.writer(),
                    spool,
                    &how.hosts,
                    &how.labels,
                    outcomes,
                    how.show_port,
                )?;
            }
            OutputFormat::Json => {}
            OutputFormat::Text if how.gather => {
                let look = gather::Look {
                    paint: how.paint,
                    escape: how.escape,
                    show_port: how.show_port,
                };
                gather::print_text(self.printer.writer(), spool, &how.hosts, outcomes, &look)?;
            }
            OutputFormat::Text if how.sort => {
                for host in gather::host_order(&how.hosts) {
                    for (stream, is_err) in [(Stream::Stdout, false), (Stream::Stderr, true)] {
                        let printer = &mut self.printer;
                        spool.for_each(host, is_err, |chunk| printer.output(host, stream, 0, chunk))?;
                    }
                    self.printer.end_lines(host)?;
                }
            }
            OutputFormat::Text => {}
        }
        self.printer.flush()
    }
}
