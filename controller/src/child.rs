//! Driving one child job: one host's run, from connection to result. It survives broken
//! connections by attaching again from the last sequence number it handed on, applies
//! stop/suspend/resume requests, and can pick up a run started by an earlier process.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_client::AgentClient;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::connect::{connect, describe, describe_status, ConnectError, Tls};
use crate::hosts::Host;
use crate::state::State;

/// Where a child runs.
#[derive(Debug, Clone)]
pub enum Target {
    Remote(Host),
    /// The daemon's own embedded agent, on a private Unix socket (local jobs).
    Local(PathBuf),
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Remote(h) => h.label(),
            Target::Local(_) => "localhost".to_string(),
        }
    }

    async fn connect(
        &self,
        tls: Option<&Tls>,
        timeout: Duration,
    ) -> Result<AgentClient<Channel>, ConnectError> {
        match self {
            Target::Remote(host) => {
                let tls = tls.ok_or_else(|| {
                    ConnectError::Transport("no controller identity loaded: see `rjob pki init`".into())
                })?;
                connect(host, tls, timeout).await
            }
            Target::Local(socket) => {
                let endpoint = Endpoint::try_from(format!("unix://{}", socket.display()))
                    .map_err(|e| ConnectError::Address(e.to_string()))?;
                let channel = tokio::time::timeout(timeout, endpoint.connect())
                    .await
                    .map_err(|_| ConnectError::Timeout(timeout))?
                    .map_err(|e| ConnectError::Transport(describe(&e)))?;
                Ok(AgentClient::new(channel).max_decoding_message_size(16 << 20))
            }
        }
    }
}

/// How a child job ended.
#[derive(Debug, Clone)]
pub struct ChildOutcome {
    /// Completed, Failed or Stopped.
    pub state: State,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it did not complete, in one line.
    pub reason: Option<String>,
    pub duration: Duration,
}

impl ChildOutcome {
    pub fn new(state: State, reason: impl Into<String>, started: Instant) -> ChildOutcome {
        ChildOutcome {
            state,
            exit_code: None,
            signal: None,
            reason: Some(reason.into()),
            duration: started.elapsed(),
        }
    }

    fn from_result(r: &pb::RunResult, started: Instant) -> ChildOutcome {
        let state = match pb::RunState::try_from(r.state) {
            Ok(pb::RunState::Completed) => State::Completed,
            Ok(pb::RunState::Stopped) => State::Stopped,
            _ => State::Failed,
        };
        ChildOutcome {
            state,
            exit_code: r.exit_code,
            signal: r.signal,
            reason: (!r.reason.is_empty()).then(|| r.reason.clone()),
            duration: started.elapsed(),
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
    /// Known run id; `None` with a label: look the run up by label before starting it.
    pub run_id: Option<String>,
    pub last_seq: u64,
    /// Whether the run is already suspended on the agent.
    pub suspended: bool,
}

/// Capped exponential backoff: 250ms, 500ms, 1s, 2s, 4s, 5s, 5s, ...
pub fn backoff(attempt: u32) -> Duration {
    const BASE_MS: u64 = 250;
    const CAP_MS: u64 = 5_000;
    let ms = BASE_MS.saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms.min(CAP_MS))
}

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
    let tls = settings.tls.as_ref();
    let mut last_seq = resume.last_seq;
    let mut applied = Desired {
        stop: false,
        suspend: resume.suspended,
    };

    // Connect (retrying only when picking up an existing run: a new one fails fast).
    let mut broken_since: Option<(Instant, String)> = None;
    let mut attempt = 0u32;
    let mut client = loop {
        match target.connect(tls, settings.connect_timeout).await {
            Ok(c) => break c,
            // A run that never started fails at once; one that exists is worth waiting for.
            Err(e) if resume.run_id.is_none() => {
                return ChildOutcome::new(State::Failed, format!("cannot connect: {e}"), started)
            }
            Err(e) => {
                let (since, _) = broken_since.get_or_insert_with(|| (Instant::now(), e.to_string()));
                if since.elapsed() > settings.reconnect_window {
                    return ChildOutcome::new(
                        State::Failed,
                        format!("cannot reach the agent again: {e}"),
                        started,
                    );
                }
                sink.state(State::Disconnected, Some(e.to_string())).await;
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        }
    };

    let run_id = match resume.run_id {
        Some(id) => id,
        None => {
            // A label identifies the run across controller restarts: find it before starting twice.
            let existing = if request.label.is_empty() {
                None
            } else {
                client.list_runs(pb::ListRunsRequest {}).await.ok().and_then(|r| {
                    r.into_inner()
                        .runs
                        .into_iter()
                        .find(|run| run.label == request.label)
                        .map(|run| run.run_id)
                })
            };
            match existing {
                Some(id) => id,
                None => {
                    let stop = desired.borrow().stop;
                    if stop {
                        return ChildOutcome::new(State::Stopped, "stopped before it started", started);
                    }
                    match client.start_run(request).await {
                        Ok(r) => r.into_inner().run_id,
                        Err(status) => {
                            return ChildOutcome::new(
                                State::Failed,
                                format!("refused: {}", describe_status(&status)),
                                started,
                            )
                        }
                    }
                }
            }
        }
    };
    sink.started(&run_id).await;
    if applied.suspend {
        sink.state(State::Suspended, None).await;
    } else {
        sink.state(State::Running, None).await;
    }

    let mut broken_since: Option<(Instant, String)> = None;
    let mut attempt = 0u32;
    loop {
        let followed = follow(
            &mut client,
            &run_id,
            &mut last_seq,
            sink,
            &mut desired,
            &mut applied,
        )
        .await;
        match followed {
            Ok(result) => {
                if sink.flush().await {
                    // Everything is kept: the agent may drop its copy.
                    let _ = client
                        .ack_run(pb::AckRunRequest {
                            run_id: run_id.clone(),
                            seq: result.last_seq,
                        })
                        .await;
                }
                return ChildOutcome::from_result(&result, started);
            }
            Err(Follow::Gone(reason)) => return ChildOutcome::new(State::Failed, reason, started),
            Err(Follow::Broken(reason)) => {
                if broken_since.is_none() {
                    sink.state(State::Disconnected, Some(reason.clone())).await;
                }
                let (since, first_reason) = broken_since.get_or_insert_with(|| (Instant::now(), reason));
                if since.elapsed() > settings.reconnect_window {
                    return ChildOutcome::new(
                        State::Failed,
                        format!(
                            "connection lost ({first_reason}) and not back within {}",
                            humantime::format_duration(settings.reconnect_window)
                        ),
                        started,
                    );
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                match target.connect(tls, settings.connect_timeout).await {
                    Ok(c) => {
                        client = c;
                        broken_since = None;
                        attempt = 0;
                        let state = if applied.suspend {
                            State::Suspended
                        } else {
                            State::Running
                        };
                        sink.state(state, None).await;
                    }
                    Err(_) => continue,
                }
            }
        }
    }
}

enum Follow {
    /// The connection broke: worth attaching again.
    Broken(String),
    /// The run can't be followed any more (unknown to the agent, spool damaged).
    Gone(String),
}

async fn follow(
    client: &mut AgentClient<Channel>,
    run_id: &str,
    last_seq: &mut u64,
    sink: &impl ChildSink,
    desired: &mut watch::Receiver<Desired>,
    applied: &mut Desired,
) -> Result<pb::RunResult, Follow> {
    let request = pb::AttachRunRequest {
        run_id: run_id.to_string(),
        after_seq: *last_seq,
    };
    let mut stream = client.attach_run(request).await.map_err(classify)?.into_inner();
    let want = *desired.borrow_and_update();
    apply(client, run_id, sink, want, applied).await?;
    // Once nobody can change what is wanted, stop watching for changes.
    let mut control_open = true;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            changed = desired.changed(), if control_open => {
                match changed {
                    Ok(()) => {
                        let want = *desired.borrow_and_update();
                        apply(client, run_id, sink, want, applied).await?;
                    }
                    Err(_) => control_open = false,
                }
                continue;
            }
        };
        match message.map_err(classify)?.and_then(|e| e.event) {
            Some(pb::run_event::Event::Chunk(chunk)) => {
                if chunk.seq <= *last_seq {
                    continue; // already handed on
                }
                let stream = pb::Stream::try_from(chunk.stream).unwrap_or(pb::Stream::Stdout);
                if sink.chunk(chunk.seq, stream, chunk.data).await.is_err() {
                    return Err(Follow::Gone("the controller stopped reading".to_string()));
                }
                *last_seq = chunk.seq;
            }
            Some(pb::run_event::Event::Result(result)) => return Ok(result),
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
    client: &mut AgentClient<Channel>,
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
        Code::NotFound | Code::DataLoss | Code::InvalidArgument | Code::PermissionDenied => {
            Follow::Gone(describe_status(&status))
        }
        _ => Follow::Broken(describe_status(&status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_stays_capped() {
        let ms: Vec<u128> = (0..8).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }
}
