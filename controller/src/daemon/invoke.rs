//! `rjob invoke --session` (synchronous), and `rjob invoke -H ...` routed through the daemon
//! (some hosts dialled in to it), the daemon's side: the fan-out runs here, with the same
//! [`FanOut`](crate::fanout::FanOut) and runner as a direct `rjob invoke`
//! ([`crate::invoke::fan_out_to`]), over the session's connections or to the hosts named
//! (dialled in, or dialled from here); each host's output and
//! end stream back to the CLI, which prints them as it prints its own. A stop from the CLI
//! (Ctrl-C), or the CLI going away, stops the runs.

use std::sync::Arc;
use std::time::Duration;

use rjob_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::child::{ChildSettings, Desired, Target};
use crate::daemon::manager::Manager;
use crate::daemon::sessions;
use crate::hosts::Host;
use crate::invoke::{ChildEvent, Invocation};
use crate::outcome::{Cause, ChildOutcome};
use crate::state::State;

pub type Events = ReceiverStream<Result<pb::InvokeEvent, Status>>;

/// Starts the fan-out of the stream's request; its events are the answer.
pub async fn invoke(
    manager: &Arc<Manager>,
    mut inbound: Streaming<pb::InvokeMessage>,
) -> Result<Events, Status> {
    let req = match inbound.message().await? {
        Some(pb::InvokeMessage {
            message: Some(pb::invoke_message::Message::Request(req)),
        }) => req,
        _ => return Err(Status::invalid_argument("an invoke starts with its request")),
    };
    let run = req
        .run
        .clone()
        .ok_or_else(|| Status::invalid_argument("the invoke has nothing to run"))?;
    let (hosts, users, targets, over) = if req.session.is_empty() {
        routed(&req)?
    } else {
        over_session(manager, &req)?
    };
    let invocation = Invocation {
        hosts,
        request: run,
        users,
        throttle_limit: (req.throttle_limit as usize).max(1),
        connect_timeout: Duration::from_millis(req.connect_timeout_ms.max(1)),
        max_errors: req.max_errors,
    };
    let settings = ChildSettings {
        tls: manager.tls(),
        connect_timeout: invocation.connect_timeout,
        reconnect_window: crate::invoke::RECONNECT_WINDOW,
        dialin: Some(manager.dialin().clone()),
    };
    tracing::info!(over = %over, hosts = invocation.hosts.len(), "invoke through the daemon");

    let (desired_tx, desired) = watch::channel(Desired::default());
    let desired_tx = Arc::new(desired_tx);
    let stop = |tx: &watch::Sender<Desired>| {
        tx.send_replace(Desired {
            stop: true,
            suspend: false,
        })
    };
    // The CLI's stop, or its going away (its stream ends or breaks), stops the runs.
    let control = desired_tx.clone();
    let listening = tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(pb::InvokeMessage {
                    message: Some(pb::invoke_message::Message::Stop(_)),
                })) => {
                    tracing::info!("invoke over a session: stopping the runs (the CLI asked)");
                    stop(&control);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    stop(&control);
                    return;
                }
            }
        }
    });
    let (events_tx, mut events) = mpsc::channel::<ChildEvent>(16);
    let (out_tx, out) = mpsc::channel(16);
    let running = desired_tx.clone();
    tokio::spawn(async move {
        crate::invoke::fan_out_to(targets, &invocation, settings, events_tx, desired).await;
        // Holds the sender until the end: a dropped one would stop the queue.
        drop(running);
    });
    tokio::spawn(async move {
        let mut open = true;
        while let Some(event) = events.recv().await {
            // Once the CLI has gone, the runs are stopped and their events drained unsent.
            if open && out_tx.send(Ok(to_pb(event))).await.is_err() {
                open = false;
                stop(&desired_tx);
            }
        }
        listening.abort();
    });
    Ok(ReceiverStream::new(out))
}

/// What one invoke runs on: its hosts, their run-as users, their targets, and what it goes
/// over (for the log).
type Plan = (Vec<Host>, Vec<Option<String>>, Vec<Target>, String);

/// `rjob invoke --session NAME`: the session's hosts, over its connections.
fn over_session(manager: &Manager, req: &pb::InvokeRequest) -> Result<Plan, Status> {
    let session = manager.pool().get(&req.session).map_err(sessions::status)?;
    let hosts: Vec<Host> = session.conns.hosts().into_iter().map(|l| l.host).collect();
    if req.hosts as usize != hosts.len() {
        return Err(Status::invalid_argument(format!(
            "session {} has {} hosts, not {}",
            session.name,
            hosts.len(),
            req.hosts
        )));
    }
    let targets = hosts
        .iter()
        .cloned()
        .map(|h| Target::Pooled(h, session.conns.clone()))
        .collect();
    Ok((hosts, Vec::new(), targets, format!("session {}", session.name)))
}

/// `rjob invoke -H ...` routed here (some of its hosts dialled in): each host over its
/// dialled-in connection, or dialled from here, with its own run-as user.
fn routed(req: &pb::InvokeRequest) -> Result<Plan, Status> {
    if req.targets.is_empty() {
        return Err(Status::invalid_argument("an invoke names a session or its hosts"));
    }
    if req.targets.len() > crate::hosts::MAX_HOSTS {
        return Err(Status::invalid_argument(format!(
            "an invoke names at most {} hosts, not {}",
            crate::hosts::MAX_HOSTS,
            req.targets.len()
        )));
    }
    if req.hosts as usize != req.targets.len() {
        return Err(Status::invalid_argument(format!(
            "the invoke names {} hosts, not {}",
            req.targets.len(),
            req.hosts
        )));
    }
    let hosts = sessions::hosts_of(&req.targets)?;
    let users = req
        .targets
        .iter()
        .map(|t| (!t.user.is_empty()).then(|| t.user.clone()))
        .collect();
    let targets = hosts.iter().cloned().map(Target::Remote).collect();
    Ok((hosts, users, targets, "its hosts".to_string()))
}

/// A fan-out event on the wire.
pub fn to_pb(event: ChildEvent) -> pb::InvokeEvent {
    use pb::invoke_event::Event;
    let index = |host: usize| u32::try_from(host).unwrap_or(u32::MAX);
    let event = match event {
        ChildEvent::Output {
            host,
            stream,
            seq,
            data,
        } => Event::Output(pb::InvokeOutput {
            host: index(host),
            stream: stream as i32,
            seq,
            data,
        }),
        ChildEvent::Started { host } => Event::Started(index(host)),
        ChildEvent::Note { host, text } => Event::Note(pb::InvokeNote {
            host: index(host),
            text,
        }),
        ChildEvent::Done { host, outcome } => Event::Done(pb::InvokeDone {
            host: index(host),
            state: outcome.state.to_pb() as i32,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            reason: outcome.reason,
            cause: outcome.cause.name().to_string(),
            duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        }),
    };
    pb::InvokeEvent { event: Some(event) }
}

/// A fan-out event from the wire (`None`: one this CLI does not know).
pub fn from_pb(event: pb::InvokeEvent) -> Option<ChildEvent> {
    use pb::invoke_event::Event;
    Some(match event.event? {
        Event::Output(o) => ChildEvent::Output {
            host: o.host as usize,
            stream: pb::Stream::try_from(o.stream).unwrap_or(pb::Stream::Stdout),
            seq: o.seq,
            data: o.data,
        },
        Event::Started(host) => ChildEvent::Started { host: host as usize },
        Event::Note(n) => ChildEvent::Note {
            host: n.host as usize,
            text: n.text,
        },
        Event::Done(d) => ChildEvent::Done {
            host: d.host as usize,
            outcome: ChildOutcome {
                state: State::from_pb(d.state),
                exit_code: d.exit_code,
                signal: d.signal,
                reason: d.reason,
                cause: Cause::parse(&d.cause).unwrap_or(Cause::Unknown),
                duration: Duration::from_millis(d.duration_ms),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_the_wire_unchanged() {
        let outcome = ChildOutcome {
            state: State::Failed,
            exit_code: Some(3),
            signal: None,
            reason: Some("exit status 3".into()),
            cause: Cause::Exited,
            duration: Duration::from_millis(1234),
        };
        let back = from_pb(to_pb(ChildEvent::Done { host: 7, outcome })).expect("known");
        let ChildEvent::Done { host, outcome } = back else {
            panic!("{back:?}")
        };
        assert_eq!(host, 7);
        assert_eq!(
            (outcome.state, outcome.exit_code, outcome.cause),
            (State::Failed, Some(3), Cause::Exited)
        );
        assert_eq!(outcome.reason.as_deref(), Some("exit status 3"));
        assert_eq!(outcome.duration, Duration::from_millis(1234));
        let output = ChildEvent::Output {
            host: 2,
            stream: pb::Stream::Stderr,
            seq: 9,
            data: b"x\n".to_vec(),
        };
        let back = from_pb(to_pb(output)).expect("known");
        assert!(
            matches!(back, ChildEvent::Output { host: 2, stream: pb::Stream::Stderr, seq: 9, ref data } if data == b"x\n")
        );
    }
}
