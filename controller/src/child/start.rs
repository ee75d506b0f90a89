//! Starting a child's run. An agent at its concurrency limit is back-pressure, not a
//! failure: the child stays NotStarted with the reason and tries again with jittered backoff
//! (250ms doubling to 5s, never sooner than the agent asks), on a fresh connection, until a
//! slot frees or the job is stopped. While it waits it gives its throttle slot back, and takes
//! one again before the next try. A suspended job's waiting child waits for the resume.

use std::time::Duration;

use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use super::link::Link;
use super::{Cause, ChildSink, Desired};
use crate::backoff::{jittered, random_unit};
use crate::connect::{describe_status, Agent};
use crate::state::State;
use crate::throttle::Slot;

/// Longest wait between two tries at a busy agent.
const BUSY_CAP: Duration = Duration::from_secs(5);

/// A run the agent started, with the stream of its events and the way to acknowledge them.
pub(super) struct Started {
    pub run_id: String,
    pub events: tonic::Streaming<pb::RunEvent>,
    pub acks: mpsc::Sender<pb::RunStreamRequest>,
}

/// Why a child did not start: Stopped or Failed, its cause, and the reason.
pub(super) struct NotStarted {
    pub state: State,
    pub cause: Cause,
    pub reason: String,
}

/// Starts `request` (StartAndAttachRun), waiting out a busy agent.
pub(super) async fn start(
    client: &mut Agent,
    link: &mut Link<'_>,
    request: pb::StartRunRequest,
    sink: &impl ChildSink,
    desired: &mut watch::Receiver<Desired>,
) -> Result<Started, NotStarted> {
    let stopped = || NotStarted {
        state: State::Stopped,
        cause: Cause::StoppedBeforeStart,
        reason: "stopped before it started".to_string(),
    };
    let mut attempt = 0u32;
    let mut shown: Option<String> = None;
    loop {
        if desired.borrow().stop {
            return Err(stopped());
        }
        sink.starting().await;
        let status = match start_once(client, request.clone()).await {
            Ok(started) => return Ok(started),
            Err(status) => status,
        };
        let Some(earliest) = rjob_proto::pushback::retry_after(&status) else {
            return Err(NotStarted {
                state: State::Failed,
                cause: start_cause(&status),
                reason: format!("refused: {}", describe_status(&status)),
            });
        };
        let reason = busy_reason(status.message());
        if shown.as_ref() != Some(&reason) {
            tracing::debug!(reason, "the agent is busy; the child waits");
            sink.state(State::NotStarted, Some(reason.clone())).await;
            shown = Some(reason);
        }
        let delay = jittered(attempt, BUSY_CAP, random_unit()).max(earliest);
        attempt = attempt.saturating_add(1);
        // A child that waits holds no throttle slot: the hosts behind it may start.
        if let Some(slot) = sink.slot() {
            slot.release();
        }
        if !pause(delay, desired).await {
            return Err(stopped());
        }
        if let Some(slot) = sink.slot() {
            if !reclaim(slot, desired).await {
                return Err(stopped());
            }
        }
        // A wait may be long: the next try goes on a connection of its own.
        *client = link.connect(sink, false).await.map_err(|gave_up| NotStarted {
            state: State::Failed,
            cause: gave_up.cause,
            reason: gave_up.reason,
        })?;
    }
}

/// One StartAndAttachRun: the start request goes first; the acknowledgement follows on the
/// same stream once the output is safe.
async fn start_once(client: &mut Agent, mut request: pb::StartRunRequest) -> Result<Started, tonic::Status> {
    // Small chunks when many hosts stream at once (crate::flow): each one's in flight stays small.
    request.max_chunk_bytes = crate::flow::chunk_bytes();
    let (tx, rx) = mpsc::channel(2);
    let start = pb::RunStreamRequest {
        request: Some(pb::run_stream_request::Request::Start(request)),
    };
    // The channel is new and empty: there is room.
    let _ = tx.try_send(start);
    let mut stream = client
        .start_and_attach_run(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match stream.message().await? {
        Some(pb::RunEvent {
            event: Some(pb::run_event::Event::Started(info)),
        }) => Ok(Started {
            run_id: info.run_id,
            events: stream,
            acks: tx,
        }),
        _ => Err(tonic::Status::internal(
            "the agent did not say it started the run",
        )),
    }
}

/// Why a start the agent answered with `status` (and no retry pushback) did not happen: the
/// agent's own failure to start it, or a refusal of the request.
fn start_cause(status: &tonic::Status) -> Cause {
    use tonic::Code;
    if status.message().contains("refused this controller's certificate") {
        // The TLS handshake failed on the agent's side (TLS 1.3 reports it at the first
        // request): the host could not be reached, as with a refused TLS handshake here.
        return Cause::Unreachable;
    }
    match status.code() {
        Code::Internal | Code::ResourceExhausted | Code::DataLoss => Cause::StartFailed,
        _ => Cause::Refused,
    }
}

/// The NotStarted reason from the agent's refusal ("the agent is at its limit of 4
/// concurrent runs; retry later or raise max_concurrent_runs").
fn busy_reason(message: &str) -> String {
    let what = message.split("; retry").next().unwrap_or(message).trim();
    let what = what.strip_prefix("the agent is ").unwrap_or(what);
    if what.is_empty() {
        "agent busy; retrying".to_string()
    } else {
        format!("agent busy: {what}; retrying")
    }
}

/// Waits `delay`, and while the job is suspended; false when the job is stopped meanwhile.
async fn pause(delay: Duration, desired: &mut watch::Receiver<Desired>) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    let mut watching = true;
    let mut slept = false;
    loop {
        let want = *desired.borrow_and_update();
        if want.stop {
            return false;
        }
        if slept && !want.suspend {
            return true;
        }
        tokio::select! {
            () = &mut sleep, if !slept => slept = true,
            changed = desired.changed(), if watching => watching = changed.is_ok(),
            // Nobody can change what is wanted any more, and the wait is over.
            () = std::future::ready(()), if !watching && slept => return true,
        }
    }
}

/// Takes the throttle slot again; false when the job is stopped meanwhile.
async fn reclaim(slot: &Slot, desired: &mut watch::Receiver<Desired>) -> bool {
    loop {
        if desired.borrow_and_update().stop {
            return false;
        }
        tokio::select! {
            () = slot.reclaim() => return true,
            changed = desired.changed() => if changed.is_err() {
                slot.reclaim().await;
                return true;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_reason_names_the_limit() {
        assert_eq!(
            busy_reason(
                "the agent is at its limit of 4 concurrent runs; retry later or raise max_concurrent_runs"
            ),
            "agent busy: at its limit of 4 concurrent runs; retrying"
        );
        assert_eq!(
            busy_reason("quota reached"),
            "agent busy: quota reached; retrying"
        );
        assert_eq!(busy_reason(""), "agent busy; retrying");
    }

    #[test]
    fn a_start_the_agent_could_not_make_is_not_a_refusal() {
        use tonic::Status;
        assert_eq!(
            start_cause(&Status::internal("cannot start /nope: not found")),
            Cause::StartFailed
        );
        assert_eq!(
            start_cause(&Status::resource_exhausted("spool full")),
            Cause::StartFailed
        );
        assert_eq!(
            start_cause(&Status::permission_denied("not in the policy")),
            Cause::Refused
        );
        assert_eq!(
            start_cause(&Status::unauthenticated("authentication failed")),
            Cause::Refused
        );
        assert_eq!(
            start_cause(&Status::invalid_argument("timeout too long")),
            Cause::Refused
        );
    }

    #[tokio::test]
    async fn a_pause_ends_on_stop_and_waits_out_a_suspend() {
        let (tx, mut rx) = watch::channel(Desired::default());
        assert!(pause(Duration::from_millis(1), &mut rx).await);

        tx.send_replace(Desired {
            stop: false,
            suspend: true,
        });
        {
            let waiting = pause(Duration::from_millis(1), &mut rx);
            tokio::pin!(waiting);
            let early = tokio::time::timeout(Duration::from_millis(200), &mut waiting).await;
            assert!(early.is_err(), "a suspended job's child waits");
            tx.send_replace(Desired::default());
            assert!(waiting.await, "the resume ends the wait");
        }

        let stopping = pause(Duration::from_secs(3600), &mut rx);
        tx.send_replace(Desired {
            stop: true,
            suspend: false,
        });
        assert!(!stopping.await, "a stop ends the wait at once");
    }
}
