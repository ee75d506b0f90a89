//! `rjob receive` (Receive-Job): output labelled by host, the same formats as `rjob invoke`.
//!
//! Without `--keep` the daemon marks output received only as far as this client confirms it,
//! and this client confirms only what it has delivered (see [`super::delivered`]): whole
//! lines written out and, into a pipe, read by the reader. A reader that goes away or a
//! killed client loses nothing; the next receive resumes after the last confirmed line.

use std::io::{BufWriter, Write};
use std::time::Duration;

use rjob_proto::v1 as pb;
use rjob_proto::v1::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::delivered::{Counting, Sink, Tracker};
use super::receive_end::at_the_end;
use super::receive_events::Events;
use super::receive_jobs::{auto_remove, job_tag, list_one};
use super::stdout::EXIT_PIPE_CLOSED;
use super::{from_status, DaemonAddr};
use crate::cli::ReceiveArgs;
use crate::daemon::receive::WINDOW;
use crate::output::Printer;
use crate::present::Presentation;
use crate::store::Mark;

/// Output printed between two flushes (and confirmations) at most.
const FLUSH_EVERY: u64 = 64 * 1024;

/// How often a client waiting for its reader looks at the pipe again.
const TICK: Duration = Duration::from_millis(10);

/// How long the client waits, after closing its side, for the daemon to end the call.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub async fn run(args: &ReceiveArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let mut client = daemon.connect().await?;
    let mut jobs: Vec<pb::JobInfo> = Vec::new();
    for reference in &args.jobs {
        let job = list_one(&mut client, reference)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no job {reference:?}"))?;
        if !jobs.iter().any(|j| j.instance_id == job.instance_id) {
            jobs.push(job);
        }
    }
    let several = jobs.len() > 1;
    if several && args.output_dir.is_some() {
        return Err(crate::UsageError(
            "--output-dir takes one job; receive each job into its own directory".into(),
        )
        .into());
    }
    // Several jobs: one after the other, each line labelled JOB/HOST.
    let mut code = 0;
    for job in jobs {
        let tag = several.then(|| job_tag(&job));
        code = code.max(receive_one(args, &mut client, job, tag).await?);
        if code == EXIT_PIPE_CLOSED {
            break;
        }
    }
    Ok(code)
}

async fn receive_one(
    args: &ReceiveArgs,
    client: &mut crate::daemon::client::DaemonClient,
    job: pb::JobInfo,
    tag: Option<String>,
) -> anyhow::Result<u8> {
    let mut how = crate::receive_view::presentation(args, &job)?;
    // -b and --output-dir show the output at the end, so they take nothing from the job: they
    // read it as --keep does (a receive that died before the end would otherwise lose it).
    let at_end = args.gather || args.output_dir.is_some();
    if let Some(tag) = &tag {
        // Text lines are JOB/HOST; JSON records keep the host and gain a "job" field.
        if at_end || args.output == crate::cli::OutputFormat::Text {
            how.labels = how.labels.iter().map(|l| format!("{tag}/{l}")).collect();
        }
    }
    let request = pb::ReceiveJobRequest {
        job: job.instance_id.clone(),
        keep: args.keep || at_end,
        host: args.host.clone().unwrap_or_default(),
        follow: args.follow,
        after_seq: 0,
    };
    let (to_daemon, outbound) = mpsc::unbounded_channel();
    let _ = to_daemon.send(pb::ReceiveJobMessage {
        message: Some(pb::receive_job_message::Message::Request(request)),
    });
    let mut stream = client
        .receive_job(UnboundedReceiverStream::new(outbound))
        .await
        .map_err(from_status)?
        .into_inner();
    if at_end {
        return at_the_end(client, &mut stream, job, how, to_daemon).await;
    }
    let finished = job
        .children
        .iter()
        .map(|c| crate::state::State::from_pb(c.state).is_finished())
        .collect();
    let events = (args.output == crate::cli::OutputFormat::Json).then(|| {
        let name = tag.clone().unwrap_or_else(|| job_tag(&job));
        Events::new(client, &job, name, args.host.as_deref(), args.follow)
    });
    // The progress line (a terminal, --follow): whole lines around it. Never into a pipe, so
    // what the reader took out of it stays what was written.
    let progress = args.follow && crate::progress::wanted_beside_output(args.quiet, args.output);
    let _poller =
        super::poller::ProgressPoller::start(client, std::slice::from_ref(&job.instance_id), progress);
    let json_job = tag.filter(|_| args.output == crate::cli::OutputFormat::Json);
    let mut rx = Receiver::new(how, args, to_daemon, finished, progress, events, json_job);
    let result = rx.receive(&mut stream).await;
    match result {
        Ok(()) => {
            rx.close(&mut stream).await;
            drop(rx);
            if args.auto_remove {
                return auto_remove(client, &job).await;
            }
            Ok(0)
        }
        Err(Stop::PipeClosed) => {
            // Confirm what the reader did read before it went; nothing written after it.
            let _ = rx.confirm();
            rx.close(&mut stream).await;
            if args.auto_remove {
                eprintln!(
                    "rjob: job {} kept: the reader went away before all its output was delivered",
                    job.id
                );
            }
            Ok(EXIT_PIPE_CLOSED)
        }
        Err(Stop::Io(e)) => Err(anyhow::Error::new(e).context("writing the output")),
        Err(Stop::Daemon(status)) => Err(from_status(status)),
    }
}

enum Stop {
    PipeClosed,
    Io(std::io::Error),
    Daemon(tonic::Status),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Stop::PipeClosed
        } else {
            Stop::Io(e)
        }
    }
}

type Out = Counting<BufWriter<Counting<Box<dyn Write>>>>;

/// The printer, and what of each child's output it has delivered.
struct Receiver {
    printer: Printer<Out>,
    labels: usize,
    sink: Sink,
    tracker: Tracker,
    /// Per child and stream (stdout, stderr): where the line held back starts.
    held_from: Vec<[Option<Mark>; 2]>,
    /// Per child and stream: the end of its output given to the printer.
    fed: Vec<[Option<Mark>; 2]>,
    /// Where confirmations go (the request's stream); `None` once closed.
    to_daemon: Option<mpsc::UnboundedSender<pb::ReceiveJobMessage>>,
    keep: bool,
    follow: bool,
    /// Per child: whether it had ended when the receive began (all its output is stored). A
    /// child still going may finish its last line later: that line is not printed in part.
    finished: Vec<bool>,
    last_child: Option<usize>,
    flushed_at: u64,
    /// JSON: result and state records.
    events: Option<Events>,
}

impl Receiver {
    fn new(
        how: Presentation,
        args: &ReceiveArgs,
        to_daemon: mpsc::UnboundedSender<pb::ReceiveJobMessage>,
        finished: Vec<bool>,
        progress: bool,
        events: Option<Events>,
        json_job: Option<String>,
    ) -> Self {
        let sink = Sink::stdout();
        let stdout: Box<dyn Write> = if progress {
            Box::new(crate::progress::Guarded::new(std::io::stdout().lock()))
        } else {
            Box::new(std::io::stdout().lock())
        };
        let out = Counting::new(
            BufWriter::new(Counting::new(stdout, sink.written.clone())),
            sink.printed.clone(),
        );
        let n = how.labels.len();
        Receiver {
            printer: Printer::new(out, how.format, how.labels)
                .escape_controls(how.escape)
                .paint(how.paint)
                .job_field(json_job),
            labels: n,
            sink,
            tracker: Tracker::new(2 * n),
            held_from: vec![[None, None]; n],
            fed: vec![[None, None]; n],
            to_daemon: Some(to_daemon),
            keep: args.keep,
            follow: args.follow,
            finished,
            last_child: None,
            flushed_at: 0,
            events,
        }
    }

    async fn receive(&mut self, stream: &mut tonic::Streaming<pb::JobOutput>) -> Result<(), Stop> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshots = self.events.as_mut().and_then(Events::take_snapshots);
        loop {
            let waiting = self.tracker.has_pending();
            let msg = tokio::select! {
                biased;
                msg = stream.message() => msg.map_err(Stop::Daemon)?,
                _ = tick.tick(), if waiting => {
                    if self.sink.reader_gone() {
                        return Err(Stop::PipeClosed);
                    }
                    self.deliver()?;
                    continue;
                }
                snapshot = next_snapshot(&mut snapshots) => {
                    match snapshot {
                        Some(job) => self.state_records(&job)?,
                        None => snapshots = None,
                    }
                    continue;
                }
            };
            let Some(out) = msg else {
                // The call ended without its end message: print what is held, confirm nothing more.
                self.printer.finish()?;
                return Ok(());
            };
            if out.end {
                return self.end().await;
            }
            self.feed(&out)?;
            if self.follow || self.sink.printed.get() - self.flushed_at >= FLUSH_EVERY {
                self.deliver()?;
            }
        }
    }

    /// Prints one chunk line by line, noting after each line how far the child's output is
    /// printed (short of any line held back).
    fn feed(&mut self, out: &pb::JobOutput) -> Result<(), Stop> {
        let child = out.child as usize;
        if child >= self.labels || out.seq == 0 {
            return Err(Stop::Daemon(tonic::Status::internal(format!(
                "the daemon sent output of child {} seq {}",
                out.child, out.seq
            ))));
        }
        // Without --follow the daemon sends child by child: a new child means the last one's
        // unfinished lines are all there is for now.
        if !self.follow {
            if let Some(prev) = self.last_child.filter(|p| *p != child) {
                self.end_child(prev)?;
                self.result_record(prev)?;
            }
        }
        self.last_child = Some(child);
        let stream = Stream::try_from(out.stream).unwrap_or(Stream::Stdout);
        let si = usize::from(stream == Stream::Stderr);
        let len = u32::try_from(out.data.len()).unwrap_or(u32::MAX);
        let chunk_end = out.offset.saturating_add(len);
        let mut at = out.offset;
        let mut rest = out.data.as_slice();
        while !rest.is_empty() {
            let cut = memchr::memchr(b'\n', rest).map_or(rest.len(), |p| p + 1);
            let (piece, tail) = rest.split_at(cut);
            self.printer.output(child, stream, out.seq, piece)?;
            let start = Mark {
                seq: out.seq - 1,
                off: at,
            };
            at = at.saturating_add(u32::try_from(piece.len()).unwrap_or(u32::MAX));
            self.held_from[child][si] = if self.printer.held(child, stream) == 0 {
                None
            } else {
                self.held_from[child][si].or(Some(start))
            };
            self.fed[child][si] = Some(if at >= chunk_end {
                Mark { seq: out.seq, off: 0 }
            } else {
                Mark {
                    seq: out.seq - 1,
                    off: at,
                }
            });
            self.note(child, si);
            rest = tail;
        }
        // Held lines keep their output unconfirmed: never let them fill the daemon's window
        // (it would wait for a confirmation that waits for more output). Past half the
        // window, held lines are printed as they are, as over-long lines are.
        let held: usize = (0..self.labels)
            .map(|c| self.printer.held(c, Stream::Stdout) + self.printer.held(c, Stream::Stderr))
            .sum();
        if held as u64 >= WINDOW / 2 {
            for c in 0..self.labels {
                self.release(c)?;
            }
        }
        Ok(())
    }

    /// Notes how far one stream of `child` is printed now.
    fn note(&mut self, child: usize, si: usize) {
        let Some(mark) = self.held_from[child][si].or(self.fed[child][si]) else {
            return;
        };
        self.tracker
            .printed(self.sink.printed.get(), 2 * child + si, mark);
    }

    /// Prints `child`'s held lines as they are.
    fn release(&mut self, child: usize) -> Result<(), Stop> {
        if self.held_from[child].iter().all(Option::is_none) {
            return Ok(());
        }
        self.printer.release(child)?;
        self.held_from[child] = [None, None];
        self.note(child, 0);
        self.note(child, 1);
        Ok(())
    }

    /// The daemon sent all it has of `child`. An unfinished line of a child that had ended
    /// is all there is: printed as it is (and so with --keep, which takes nothing). One of a
    /// child still going waits for its newline: it is not printed and not confirmed, so the
    /// next receive starts with it, whole.
    fn end_child(&mut self, child: usize) -> Result<(), Stop> {
        if self.follow || self.keep || self.finished.get(child).copied().unwrap_or(true) {
            return self.release(child);
        }
        self.printer.discard(child);
        Ok(())
    }

    /// Everything was sent: print what is held, then wait until the reader has it all.
    async fn end(&mut self) -> Result<(), Stop> {
        for child in 0..self.labels {
            self.end_child(child)?;
        }
        if let Some(events) = &mut self.events {
            for record in events.at_end().await {
                self.printer.record(record)?;
            }
        }
        self.printer.finish()?;
        loop {
            self.deliver()?;
            if self.keep || !self.tracker.has_pending() {
                return Ok(());
            }
            if self.sink.reader_gone() {
                return Err(Stop::PipeClosed);
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// State records for what moved in `job` (`--follow -o json`).
    fn state_records(&mut self, job: &pb::JobInfo) -> Result<(), Stop> {
        let Some(events) = &mut self.events else {
            return Ok(());
        };
        let records = events.changes(job);
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            self.printer.record(record)?;
        }
        self.deliver()
    }

    /// Child `child`'s result record, when it is due (JSON).
    fn result_record(&mut self, child: usize) -> Result<(), Stop> {
        if let Some(record) = self.events.as_mut().and_then(|e| e.result(child)) {
            self.printer.record(record)?;
        }
        Ok(())
    }

    /// Flushes, then confirms what the reader has.
    fn deliver(&mut self) -> Result<(), Stop> {
        self.printer.flush()?;
        self.flushed_at = self.sink.printed.get();
        self.confirm()?;
        Ok(())
    }

    /// Sends an ack for each child whose delivered output moved on.
    fn confirm(&mut self) -> std::io::Result<()> {
        self.tracker.taken(self.sink.taken()?);
        let acks = self.tracker.to_ack();
        if self.keep {
            return Ok(());
        }
        if let Some(to_daemon) = &self.to_daemon {
            for (slot, mark) in acks {
                let stream = if slot % 2 == 1 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                let ack = pb::ReceiveAck {
                    child: u32::try_from(slot / 2).unwrap_or(u32::MAX),
                    seq: mark.seq,
                    offset: mark.off,
                    stream: stream as i32,
                };
                let _ = to_daemon.send(pb::ReceiveJobMessage {
                    message: Some(pb::receive_job_message::Message::Ack(ack)),
                });
            }
        }
        Ok(())
    }

    /// Closes our side, then waits for the daemon to end the call: it has then committed
    /// every confirmation sent.
    async fn close(&mut self, stream: &mut tonic::Streaming<pb::JobOutput>) {
        self.to_daemon = None;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Ok(Some(_)) = stream.message().await {}
        })
        .await;
    }
}

/// The next job snapshot of the state poller; never, without one.
async fn next_snapshot(snapshots: &mut Option<mpsc::Receiver<pb::JobInfo>>) -> Option<pb::JobInfo> {
    match snapshots {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
