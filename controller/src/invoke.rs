//! `rjob invoke`: one script block on many hosts, at most N at a time, output live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::budget::ErrorBudget;
use crate::child::{self, ChildOutcome, ChildSettings, ChildSink, Desired, Resume, Target};
use crate::choices::OutputFormat;
use crate::cli::InvokeArgs;
use crate::colour::{self, Paint};
use crate::connect::Tls;
use crate::fanout::{FanOut, Runner};
use crate::hosts::{self, Host};
use crate::output;
use crate::present::{Presentation, Presenter};
use crate::request::{host_list, run_request};
use crate::state::State;
use crate::throttle::Slot;
use crate::UsageError;

/// What to run, checked and ready to send.
pub struct Invocation {
    pub hosts: Vec<Host>,
    /// Each host's run-as user, in the order of `hosts` (`None`: the request's).
    pub users: Vec<Option<String>>,
    pub request: pb::StartRunRequest,
    pub throttle_limit: usize,
    pub connect_timeout: Duration,
    /// The error budget (`--max-errors`) as a count of hosts.
    pub max_errors: Option<u32>,
}

impl Invocation {
    /// Checks the command line and reads the files it names; every problem is a usage error.
    pub fn from_args(args: &InvokeArgs) -> Result<Invocation, UsageError> {
        let (hosts, users) = host_list(args)?;
        Ok(Invocation {
            throttle_limit: throttle_of(args, hosts.len()),
            max_errors: args.max_errors.map(|m| m.of(hosts.len())),
            hosts,
            request: run_request(&args.script, &users)?,
            users,
            connect_timeout: args.connect_timeout,
        })
    }
}

/// `--throttle-limit` over `hosts` hosts: N% is at least 1.
pub fn throttle_of(args: &InvokeArgs, hosts: usize) -> usize {
    args.throttle_limit.of(hosts).max(1) as usize
}

/// What `rjob invoke` shows while children run.
#[derive(Debug)]
pub enum ChildEvent {
    Output {
        host: usize,
        stream: pb::Stream,
        seq: u64,
        data: Vec<u8>,
    },
    Done {
        host: usize,
        outcome: ChildOutcome,
    },
    /// The host's run started.
    Started {
        host: usize,
    },
    /// A word about a host for stderr (it waits at a busy agent).
    Note {
        host: usize,
        text: String,
    },
}

/// Hands a child's output to the printer thread (or, in the daemon, to the CLI's stream).
struct PrinterSink {
    host: usize,
    events: mpsc::Sender<ChildEvent>,
    slot: Arc<Slot>,
}

impl ChildSink for PrinterSink {
    async fn starting(&self) {}

    async fn started(&self, _run_id: &str) {
        let _ = self.events.send(ChildEvent::Started { host: self.host }).await;
    }

    async fn state(&self, state: State, reason: Option<String>) {
        // Waiting at a busy agent is worth a word: the fan-out is not stuck.
        if let (State::NotStarted, Some(text)) = (state, reason) {
            let _ = self
                .events
                .send(ChildEvent::Note {
                    host: self.host,
                    text,
                })
                .await;
        }
    }

    async fn chunk(&self, seq: u64, stream: pb::Stream, data: Vec<u8>) -> Result<(), ()> {
        let event = ChildEvent::Output {
            host: self.host,
            stream,
            seq,
            data,
        };
        self.events.send(event).await.map_err(|_| ())
    }

    async fn flush(&self) -> bool {
        true
    }

    fn slot(&self) -> Option<&Slot> {
        Some(self.slot.as_ref())
    }
}

/// Runs one host's child for `rjob invoke`, its events to the printer thread.
struct PrinterRunner {
    request: pb::StartRunRequest,
    settings: ChildSettings,
    events: mpsc::Sender<ChildEvent>,
}

impl Runner for PrinterRunner {
    /// The host's index, where it runs, and its own run-as user.
    type Child = (usize, Target, Option<String>);

    async fn run(
        &self,
        child: &Self::Child,
        slot: Arc<Slot>,
        desired: watch::Receiver<Desired>,
    ) -> ChildOutcome {
        let sink = PrinterSink {
            host: child.0,
            events: self.events.clone(),
            slot,
        };
        let mut request = self.request.clone();
        if let Some(user) = &child.2 {
            request.run_as.clone_from(user);
        }
        child::drive(
            &child.1,
            request,
            &self.settings,
            &sink,
            desired,
            Resume::default(),
        )
        .await
    }

    async fn ended(&self, child: &Self::Child, outcome: ChildOutcome) {
        let _ = self
            .events
            .send(ChildEvent::Done {
                host: child.0,
                outcome,
            })
            .await;
    }
}

/// Runs every child, at most `throttle_limit` at once, and sends their events to `events`.
/// Once `desired` asks to stop, running children are stopped and queued ones never start.
pub async fn fan_out(
    invocation: Invocation,
    settings: ChildSettings,
    events: mpsc::Sender<ChildEvent>,
    desired: watch::Receiver<Desired>,
) {
    let targets = invocation.hosts.iter().cloned().map(Target::Remote).collect();
    fan_out_to(targets, &invocation, settings, events, desired).await;
}

/// [`fan_out`] to these targets (the invocation's hosts, one each, in order): the daemon
/// runs `rjob invoke --session` with this over the session's connections.
pub async fn fan_out_to(
    targets: Vec<Target>,
    invocation: &Invocation,
    settings: ChildSettings,
    events: mpsc::Sender<ChildEvent>,
    desired: watch::Receiver<Desired>,
) {
    let mut users = invocation.users.iter().cloned();
    let children: Vec<_> = targets
        .into_iter()
        .enumerate()
        .map(|(index, target)| (index, target, users.next().flatten()))
        .collect();
    let runner = Arc::new(PrinterRunner {
        request: invocation.request.clone(),
        settings,
        events,
    });
    let mut fanout = FanOut::new(invocation.throttle_limit);
    if let Some(allowed) = invocation.max_errors {
        fanout = fanout.with_policy(Arc::new(ErrorBudget::new(allowed)));
    }
    fanout.run(runner, children, desired).await;
}

/// Where the fan-out of `rjob invoke` runs.
pub enum Via {
    /// Here: this process dials every host.
    Direct(Tls),
    /// In the daemon, over one of its sessions; the output streams back here.
    Daemon {
        client: crate::daemon::client::DaemonClient,
        session: String,
    },
}

/// How long a child of `rjob invoke` may stay Disconnected before it fails.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(60);

/// Exit status after Ctrl-C.
pub use crate::status::EXIT_INTERRUPTED;

/// `rjob invoke` on `hosts` (each with its own run-as user, if any), its fan-out here or in
/// the daemon ([`Via`]; [`crate::cmd::route`] decides): the same printing, summary, exit
/// status and Ctrl-C either way. Returns the process exit status. Ctrl-C stops every run
/// (their process groups are killed on the agents) and still prints what came and the
/// summary; a second Ctrl-C quits at once.
pub async fn run_via(
    args: &InvokeArgs,
    hosts: Vec<Host>,
    users: Vec<Option<String>>,
    via: Via,
) -> Result<u8, UsageError> {
    // Labels leave the port out when two or more hosts share one (so `dshbak -c` works).
    let labels = hosts::fold::labels(&hosts);
    let show_port = !hosts::fold::same_port(&hosts);
    let outdir = match &args.output_dir {
        Some(dir) => Some(crate::outdir::OutDir::prepare(dir, args.force, &labels)?),
        None => None,
    };
    // The output directory is checked before a password is asked or a host dialled.
    let invocation = Invocation {
        hosts: hosts.clone(),
        request: run_request(&args.script, &users)?,
        users,
        throttle_limit: throttle_of(args, hosts.len()),
        connect_timeout: args.connect_timeout,
        max_errors: args.max_errors.map(|m| m.of(hosts.len())),
    };
    let started = Instant::now();
    // Up to 16 chunks (1 MiB at most) wait for the printer: bounded whatever the fleet size
    // and the output.
    let (tx, rx) = mpsc::channel(16);
    let stdout_tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let how = Presentation {
        format: args.output,
        hosts: hosts.clone(),
        labels: labels.clone(),
        escape: crate::escape::for_stdout(args.raw),
        // JSON is for programs: never coloured.
        paint: Paint::new(args.output == OutputFormat::Text && colour::enabled(args.color, stdout_tty)),
        gather: args.gather,
        sort: args.sort,
        outdir,
        show_port,
    };
    // Writing to stdout may block (a slow reader): do it on a thread of its own, so the
    // runtime goes on and backpressure reaches the agents through the bounded channel.
    let printer = std::thread::spawn(move || print_events(rx, how));
    let (desired_tx, desired) = watch::channel(Desired::default());
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            crate::progress::eprintln("rjob: stopping the runs (Ctrl-C again to quit at once)");
            desired_tx.send_replace(Desired {
                stop: true,
                suspend: false,
            });
            if tokio::signal::ctrl_c().await.is_ok() {
                crate::progress::end();
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });
    crate::progress::begin(
        labels.len(),
        crate::progress::wanted_beside_output(args.quiet, args.output),
    );
    let relayed = match via {
        Via::Direct(tls) => {
            let settings = ChildSettings {
                tls: Some(tls),
                connect_timeout: invocation.connect_timeout,
                reconnect_window: RECONNECT_WINDOW,
                dialin: None,
            };
            fan_out(invocation, settings, tx, desired).await;
            Ok(())
        }
        Via::Daemon { client, session } => {
            crate::cmd::session::relay(client, &session, invocation, tx, desired).await
        }
    };
    let (outcomes, file_errors) = printer
        .join()
        .unwrap_or_else(|_| (vec![None; labels.len()], true));
    crate::progress::end();
    if let Err(e) = &relayed {
        // The daemon went away mid-way: what came is shown, the rest has no result.
        crate::progress::eprintln(&format!(
            "rjob: error: {}",
            crate::escape::text(&format!("{e:#}"))
        ));
    }
    let look = output::SummaryLook {
        paint: Paint::new(colour::enabled(
            args.color,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )),
        show_port,
        slowest: args.slowest,
    };
    eprint!(
        "{}",
        output::summary(&hosts, &labels, &outcomes, started.elapsed(), &look)
    );
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(crate::status::of_fanout(&outcomes, file_errors))
}

/// The printer thread: hands each event to the [`Presenter`]; returns every host's outcome
/// and whether a file (spool, `--output-dir`) could not be written.
fn print_events(mut rx: mpsc::Receiver<ChildEvent>, how: Presentation) -> (Vec<Option<ChildOutcome>>, bool) {
    let mut outcomes = vec![None; how.labels.len()];
    let how_labels = how.labels.clone();
    let stdout = std::io::stdout();
    let mut presenter = Presenter::new(
        std::io::BufWriter::with_capacity(64 * 1024, crate::progress::Guarded::new(stdout.lock())),
        how,
    );
    let mut write_ok = true;
    loop {
        let event = match rx.try_recv() {
            Ok(e) => e,
            Err(_) => {
                // Nothing waiting: show what we have before blocking.
                write_ok = write_ok && presenter.flush().is_ok();
                match rx.blocking_recv() {
                    Some(e) => e,
                    None => break,
                }
            }
        };
        match event {
            ChildEvent::Output {
                host,
                stream,
                seq,
                data,
            } => {
                write_ok = write_ok && presenter.output(host, stream, seq, &data).is_ok();
            }
            ChildEvent::Started { host } => crate::progress::started(host),
            ChildEvent::Note { host, text } => {
                let label = how_labels.get(host).map_or("?", String::as_str);
                crate::progress::eprintln(&format!("rjob: {label}: {text}"));
            }
            ChildEvent::Done { host, outcome } => {
                crate::progress::done(host, outcome.state == State::Completed);
                write_ok = write_ok && presenter.done(host, &outcome).is_ok();
                if let Some(slot) = outcomes.get_mut(host) {
                    *slot = Some(outcome);
                }
            }
        }
    }
    if write_ok && presenter.finish(&outcomes).is_err() {
        // stdout went away (a closed pipe): nothing more to show.
    }
    let file_errors = presenter.file_errors();
    (outcomes, file_errors)
}
