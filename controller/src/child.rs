//! Driving one child job: one host's run, from connection to result. It survives broken
//! connections by attaching again from the last sequence number it handed on, applies
//! stop/suspend/resume requests, and can pick up a run started by an earlier process.
//! Starting (with the wait at a busy agent) is in [`start`], the reconnect policy in [`link`].

mod link;
mod start;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;
use tokio::sync::watch;
use tonic::codegen::http;

pub use crate::backoff::backoff;
use crate::connect::{connect, describe, describe_status, handshake, Agent, ConnectError, Tls};
use crate::hosts::Host;
pub use crate::outcome::{Cause, ChildOutcome};
use crate::pool::Connections;
use crate::state::State;
use crate::throttle::Slot;

/// Where a child runs.
#[derive(Clone)]
pub enum Target {
    Remote(Host),
    /// The daemon's own embedded agent, on a private Unix socket (local jobs).
    Local(PathBuf),
    /// A host of a session, over the session's live connection ([`crate::pool`]).
    Pooled(Host, Arc<dyn Connections>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Remote(h) => f.debug_tuple("Remote").field(h).finish(),
            Target::Local(p) => f.debug_tuple("Local").field(p).finish(),
            Target::Pooled(h, _) => f.debug_tuple("Pooled").field(h).finish(),
        }
    }
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Remote(h) | Target::Pooled(h, _) => h.label(),
            Target::Local(_) => "localhost".to_string(),
        }
    }

    /// The remote host, when it is one.
    pub fn host(&self) -> Option<&Host> {
        match self {
            Target::Remote(h) | Target::Pooled(h, _) => Some(h),
            Target::Local(_) => None,
        }
    }

    async fn connect(&self, tls: Option<&Tls>, timeout: Duration) -> Result<Agent, ConnectError> {
        match self {
            Target::Remote(host) => {
                let tls = tls.ok_or_else(|| {
                    ConnectError::Transport("no controller identity loaded: see `rjob pki init`".into())
                })?;
                connect(host, tls, timeout).await
            }
            Target::Pooled(host, conns) => conns.agent(host, timeout).await,
            Target::Local(socket) => {
                let dial = async {
                    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                        ConnectError::Transport(format!("{}: {}", socket.display(), describe(&e)))
                    })?;
                    handshake(stream, http::Uri::from_static("http://localhost")).await
                };
                tokio::time::timeout(timeout, dial)
                    .await
                    .map_err(|_| ConnectError::Timeout(timeout))?
            }
        }
    }
}

/// What the job wants of its children; level-triggered, re-applied after every reconnect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desired {
    pub stop: bool,
    pub suspend: bool,
}

/// Where a child's progress goes: the terminal for `rjob invoke`, the job store for the daemon.
pub trait ChildSink: Send + Sync {
    /// The start request is about to be sent (after this, the run may exist on the agent).
    fn starting(&self) -> impl Future<Output = ()> + Send;
    /// The run was started (or found again) on the agent.
    fn started(&self, run_id: &str) -> impl Future<Output = ()> + Send;
    /// Running, Suspended, Disconnected, Stopping.
    fn state(&self, state: State, reason: Option<String>) -> impl Future<Output = ()> + Send;
    /// One output chunk, in order, exactly once. An error means nobody will take more.
    fn chunk(
        &self,
        seq: u64,
        stream: pb::Stream,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<(), ()>> + Send;
    /// Whether everything handed over so far is safely kept (before the agent may drop its copy).
    fn flush(&self) -> impl Future<Output = bool> + Send;
    /// The child gives up on `run` (its agent stayed out of reach past the reconnect window),
    /// which may still be going there. Answers what becomes of it, for the child's reason.
    /// The child's throttle slot, given back while it waits at a busy agent.
    fn slot(&self) -> Option<&Slot> {
        None
    }
    fn abandoned(&self, target: &Target, run: &LeftRun) -> impl Future<Output = Option<String>> + Send {
        let _ = (target, run);
        async { None }
    }
}

/// A run a child gave up on, as its agent knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftRun {
    Id(String),
    /// The start may have reached the agent, its answer unrecorded: the run, if any, has
    /// this label.
    Label(String),
}

/// Settings shared by every child of one job.
#[derive(Clone)]
pub struct ChildSettings {
    pub tls: Option<Tls>,
    pub connect_timeout: Duration,
    /// How long to keep trying to attach again after a connection broke mid-run.
    pub reconnect_window: Duration,
}

/// A run that already exists on the agent, to follow from where the store left off.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Known run id.
    pub run_id: Option<String>,
    /// The start request may have been sent without its answer being recorded: look the run
    /// up by its label before starting it.
    pub maybe_started: bool,
    pub last_seq: u64,
    /// Whether the run is already suspended on the agent.
    pub suspended: bool,
}

/// How long to wait for the agent to take an acknowledgement (the output is safe by then;
/// without it the agent keeps its copy until its retention ends).
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Runs `request` on `target` (or follows the run in `resume`) until it has ended.
pub async fn drive(
    target: &Target,
    request: pb::StartRunRequest,
    settings: &ChildSettings,
    sink: &impl ChildSink,
    mut desired: watch::Receiver<Desired>,
    resume: Resume,
) -> ChildOutcome {
    let started = Instant::now();
    let mut at = Position {
        last_seq: resume.last_seq,
        applied: Desired {
            stop: false,
            suspend: resume.suspended,
        },
        progressed: false,
    };
    let mut link = link::Link::new(target, settings);

    // A run that never started fails at once when its agent can't be reached; one that exists
    // (or may, after a controller restart) is worth waiting for.
    let may_exist = resume.run_id.is_some() || resume.maybe_started;
    // What may be left going on the agent if the child gives up before it follows a run.
    let left = match &resume.run_id {
        Some(id) => Some(LeftRun::Id(id.clone())),
        // Without a label no run can be told apart as this child's.
        None if resume.maybe_started && !request.label.is_empty() => {
            Some(LeftRun::Label(request.label.clone()))
        }
        None => None,
    };
    let mut client = match link.connect(sink, may_exist).await {
        Ok(c) => c,
        Err(lost) => return given_up(target, sink, lost, left, started).await,
    };

    // A fresh start comes with its event stream (StartAndAttachRun), which also carries the
    // acknowledgement: two calls less per host. After a reconnect, AttachRun and AckRun.
    let mut events = None;
    let mut acks: Option<tokio::sync::mpsc::Sender<pb::RunStreamRequest>> = None;
    let run_id = match resume.run_id {
        Some(id) => id,
        None => {
            // The start may have reached the agent before a controller restart: look the run
            // up by its label, and never start it again on a failed look-up.
            let mut existing = None;
            while resume.maybe_started && !request.label.is_empty() {
                match client.list_runs(pb::ListRunsRequest {}).await {
                    Ok(r) => {
                        existing = r
                            .into_inner()
                            .runs
                            .into_iter()
                            .find(|run| run.label == request.label)
                            .map(|run| run.run_id);
                        break;
                    }
                    Err(status) => match link.broken(sink, describe_status(&status)).await {
                        Ok(c) => client = c,
                        Err(lost) => return given_up(target, sink, lost, left, started).await,
                    },
                }
            }
            match existing {
                Some(id) => id,
                None => match start::start(&mut client, &mut link, request, sink, &mut desired).await {
                    Ok(run) => {
                        events = Some(run.events);
                        acks = Some(run.acks);
                        run.run_id
                    }
                    Err(not) => return ChildOutcome::new(not.state, not.cause, not.reason, started),
                },
            }
        }
    };
    sink.started(&run_id).await;
    let state = if at.applied.suspend {
        State::Suspended
    } else {
        State::Running
    };
    sink.state(state, None).await;

    loop {
        at.progressed = false;
        let followed = follow(&mut client, &mut events, &run_id, &mut at, sink, &mut desired).await;
        if at.progressed {
            link.healthy();
        }
        let reason = match followed {
            Ok(result) if at.last_seq >= result.last_seq => {
                if !sink.flush().await {
                    return ChildOutcome::new(
                        State::Failed,
                        Cause::StoreFailed,
                        format!("its output could not be stored; the agent keeps it (run {run_id})"),
                        started,
                    );
                }
                // Everything is kept: the agent may drop its copy.
                match (acks.take(), events.take()) {
                    (Some(acks), Some(mut stream)) => {
                        let ack = pb::RunStreamRequest {
                            request: Some(pb::run_stream_request::Request::AckSeq(at.last_seq)),
                        };
                        if acks.send(ack).await.is_ok() {
                            drop(acks);
                            // The agent ends the stream once it has the acknowledgement.
                            let _ = tokio::time::timeout(ACK_WAIT, stream.message()).await;
                        }
                    }
                    _ => {
                        let ack = pb::AckRunRequest {
                            run_id: run_id.clone(),
                            seq: at.last_seq,
                        };
                        let _ = tokio::time::timeout(ACK_WAIT, client.ack_run(ack)).await;
                    }
                }
                return ChildOutcome::from_result(&result, started);
            }
            Ok(result) => format!(
                "the result came before output {}..{}: attaching again",
                at.last_seq + 1,
                result.last_seq
            ),
            Err(Follow::Gone(cause, reason)) => {
                return ChildOutcome::new(State::Failed, cause, reason, started)
            }
            Err(Follow::Broken(reason)) => reason,
        };
        // That stream is over: attach again, and acknowledge with AckRun.
        (events, acks) = (None, None);
        match link.broken(sink, reason).await {
            Ok(c) => {
                client = c;
                let state = if at.applied.suspend {
                    State::Suspended
                } else {
                    State::Running
                };
                sink.state(state, None).await;
            }
            Err(lost) => return given_up(target, sink, lost, Some(LeftRun::Id(run_id)), started).await,
        }
    }
}

/// The child fails; when it gives up on a run that may still be going on its agent, the sink
/// may see to that run.
async fn given_up(
    target: &Target,
    sink: &impl ChildSink,
    lost: link::GaveUp,
    run: Option<LeftRun>,
    started: Instant,
) -> ChildOutcome {
    let link::GaveUp { cause, reason } = lost;
    let note = match &run {
        Some(run) => sink.abandoned(target, run).await,
        None => None,
    };
    let reason = match note {
        Some(note) => format!("{reason}; {note}"),
        None => reason,
    };
    ChildOutcome::new(State::Failed, cause, reason, started)
}

enum Follow {
    /// The connection broke: worth attaching again.
    Broken(String),
    /// The run can't be followed any more (unknown to the agent, spool damaged, refused).
    Gone(Cause, String),
}

/// How far a child has got: what it has handed on, and what it has asked the agent for.
struct Position {
    last_seq: u64,
    applied: Desired,
    /// The agent answered during the last follow.
    progressed: bool,
}

/// Follows the run's events on `events` (attaching when there is no stream) up to its result;
/// the stream is left in `events`.
async fn follow(
    client: &mut Agent,
    events: &mut Option<tonic::Streaming<pb::RunEvent>>,
    run_id: &str,
    at: &mut Position,
    sink: &impl ChildSink,
    desired: &mut watch::Receiver<Desired>,
) -> Result<pb::RunResult, Follow> {
    let stream = match events {
        Some(stream) => stream,
        None => {
            let request = pb::AttachRunRequest {
                run_id: run_id.to_string(),
                after_seq: at.last_seq,
            };
            events.insert(client.attach_run(request).await.map_err(classify)?.into_inner())
        }
    };
    let want = *desired.borrow_and_update();
    apply(client, run_id, sink, want, &mut at.applied).await?;
    // Once nobody can change what is wanted, stop watching for changes.
    let mut control_open = true;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            changed = desired.changed(), if control_open => {
                match changed {
                    Ok(()) => {
                        let want = *desired.borrow_and_update();
                        apply(client, run_id, sink, want, &mut at.applied).await?;
                    }
                    Err(_) => control_open = false,
                }
                continue;
            }
        };
        let message = message.map_err(classify)?;
        at.progressed = true;
        match message.and_then(|e| e.event) {
            Some(pb::run_event::Event::Chunk(chunk)) => {
                if chunk.seq <= at.last_seq {
                    continue; // already handed on
                }
                let stream = pb::Stream::try_from(chunk.stream).unwrap_or(pb::Stream::Stdout);
                if sink.chunk(chunk.seq, stream, chunk.data).await.is_err() {
                    return Err(Follow::Gone(
                        Cause::StoreFailed,
                        "the controller stopped reading".to_string(),
                    ));
                }
                at.last_seq = chunk.seq;
            }
            Some(pb::run_event::Event::Result(result)) => return Ok(result),
            Some(pb::run_event::Event::Started(_)) => {
                return Err(Follow::Broken(
                    "the agent sent a second start event: attaching again".to_string(),
                ))
            }
            None => {
                return Err(Follow::Broken(
                    "the agent closed the stream before the run ended".to_string(),
                ))
            }
        }
    }
}

/// Brings the run on the agent to what the job wants.
async fn apply(
    client: &mut Agent,
    run_id: &str,
    sink: &impl ChildSink,
    want: Desired,
    applied: &mut Desired,
) -> Result<(), Follow> {
    let control = pb::RunControlRequest {
        run_id: run_id.to_string(),
    };
    if want.stop && !applied.stop {
        sink.state(State::Stopping, None).await;
        client.stop_run(control).await.map_err(classify)?;
        applied.stop = true;
        return Ok(());
    }
    if want.stop {
        return Ok(());
    }
    if want.suspend && !applied.suspend {
        sink.state(State::Suspending, None).await;
        client.suspend_run(control).await.map_err(classify)?;
        applied.suspend = true;
        sink.state(State::Suspended, None).await;
    } else if !want.suspend && applied.suspend {
        client.resume_run(control).await.map_err(classify)?;
        applied.suspend = false;
        sink.state(State::Running, None).await;
    }
    Ok(())
}

fn classify(status: tonic::Status) -> Follow {
    use tonic::Code;
    match status.code() {
        // The agent no longer has the run, or cannot read it back.
        Code::NotFound | Code::DataLoss => Follow::Gone(Cause::RunLost, describe_status(&status)),
        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated => {
            Follow::Gone(Cause::Refused, describe_status(&status))
        }
        _ => Follow::Broken(describe_status(&status)),
    }
}
