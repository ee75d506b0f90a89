//! Driving one child job: one host's run, from connection to result, surviving broken
//! connections by attaching again from the last sequence number received.

use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_client::AgentClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::connect::{connect, describe_status, Tls};
use crate::hosts::Host;

/// How a child job ended, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ChildState {
    Completed,
    Failed,
    Stopped,
}

impl std::fmt::Display for ChildState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone)]
pub struct ChildOutcome {
    pub state: ChildState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it did not complete, in one line.
    pub reason: Option<String>,
    pub duration: Duration,
}

impl ChildOutcome {
    fn failed(reason: String, started: Instant) -> ChildOutcome {
        ChildOutcome {
            state: ChildState::Failed,
            exit_code: None,
            signal: None,
            reason: Some(reason),
            duration: started.elapsed(),
        }
    }

    fn from_result(r: &pb::RunResult, started: Instant) -> ChildOutcome {
        let state = match pb::RunState::try_from(r.state) {
            Ok(pb::RunState::Completed) => ChildState::Completed,
            Ok(pb::RunState::Stopped) => ChildState::Stopped,
            _ => ChildState::Failed,
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

/// What a child job reports while it goes.
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
}

/// Settings shared by every child of one invocation.
#[derive(Clone)]
pub struct ChildSettings {
    pub tls: Tls,
    pub connect_timeout: Duration,
    /// How long to keep trying to attach again after a connection broke mid-run.
    pub reconnect_window: Duration,
}

/// Capped exponential backoff: 250ms, 500ms, 1s, 2s, 4s, 5s, 5s, ...
pub fn backoff(attempt: u32) -> Duration {
    const BASE_MS: u64 = 250;
    const CAP_MS: u64 = 5_000;
    let ms = BASE_MS.saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms.min(CAP_MS))
}

/// Runs `request` on `host` and forwards its output; returns when the run has ended (or
/// can't be followed any more). Output is forwarded exactly once, in order.
pub async fn drive(
    index: usize,
    host: &Host,
    request: pb::StartRunRequest,
    settings: &ChildSettings,
    events: &mpsc::Sender<ChildEvent>,
) -> ChildOutcome {
    let started = Instant::now();
    let mut client = match connect(host, &settings.tls, settings.connect_timeout).await {
        Ok(c) => c,
        Err(e) => return ChildOutcome::failed(format!("cannot connect: {e}"), started),
    };
    let run_id = match client.start_run(request).await {
        Ok(r) => r.into_inner().run_id,
        Err(status) => {
            return ChildOutcome::failed(format!("refused: {}", describe_status(&status)), started)
        }
    };
    let mut last_seq = 0u64;
    let mut broken_since: Option<(Instant, String)> = None;
    let mut attempt = 0u32;
    loop {
        match follow(index, &mut client, &run_id, &mut last_seq, events).await {
            Ok(result) => {
                // Everything is in hand: the agent may drop its copy.
                let _ = client
                    .ack_run(pb::AckRunRequest {
                        run_id: run_id.clone(),
                        seq: result.last_seq,
                    })
                    .await;
                return ChildOutcome::from_result(&result, started);
            }
            Err(Follow::Gone(reason)) => return ChildOutcome::failed(reason, started),
            Err(Follow::Broken(reason)) => {
                let (since, first_reason) = broken_since.get_or_insert_with(|| (Instant::now(), reason));
                if since.elapsed() > settings.reconnect_window {
                    return ChildOutcome::failed(
                        format!(
                            "connection lost ({first_reason}) and not back within {}",
                            humantime::format_duration(settings.reconnect_window)
                        ),
                        started,
                    );
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                if let Ok(c) = connect(host, &settings.tls, settings.connect_timeout).await {
                    client = c;
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
    index: usize,
    client: &mut AgentClient<Channel>,
    run_id: &str,
    last_seq: &mut u64,
    events: &mpsc::Sender<ChildEvent>,
) -> Result<pb::RunResult, Follow> {
    let request = pb::AttachRunRequest {
        run_id: run_id.to_string(),
        after_seq: *last_seq,
    };
    let mut stream = client.attach_run(request).await.map_err(classify)?.into_inner();
    loop {
        let event = stream.message().await.map_err(classify)?;
        match event.and_then(|e| e.event) {
            Some(pb::run_event::Event::Chunk(chunk)) => {
                if chunk.seq <= *last_seq {
                    continue; // already forwarded
                }
                *last_seq = chunk.seq;
                let stream = pb::Stream::try_from(chunk.stream).unwrap_or(pb::Stream::Stdout);
                let event = ChildEvent::Output {
                    host: index,
                    stream,
                    seq: chunk.seq,
                    data: chunk.data,
                };
                if events.send(event).await.is_err() {
                    return Err(Follow::Gone("the controller stopped reading".to_string()));
                }
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
