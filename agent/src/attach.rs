//! Streaming a run's events to its caller: its output from a sequence number on, live until
//! its result, and (on a StartAndAttachRun stream) the caller's acknowledgements.
//!
//! `after_seq` is a position: only chunks with a greater sequence number are sent. Sequence
//! numbers start at 1, so `after_seq = 0` sends everything and `after_seq = 2^64-1` sends no
//! chunk at all (none can come after it), only the result once the run has one; it never
//! wraps around to the start.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rjob_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::run::{Phase, Run};
use crate::runs::Runs;
use crate::service::AgentError;

/// The caller's side of a StartAndAttachRun stream: acknowledgements of the run it started.
pub struct Acks {
    pub requests: tonic::Streaming<pb::RunStreamRequest>,
    pub runs: Arc<Runs>,
}

impl Acks {
    /// Applies the caller's next acknowledgement; `None` once the caller has closed its side
    /// (or sent something else, which ends the conversation too).
    async fn next(&mut self, run: &Run) -> Option<u64> {
        match self.requests.message().await {
            Ok(Some(pb::RunStreamRequest {
                request: Some(pb::run_stream_request::Request::AckSeq(seq)),
            })) => {
                // The run is ours and known: it can't be missing.
                let _ = self.runs.ack(run.id(), seq);
                Some(seq)
            }
            _ => None,
        }
    }
}

/// A run's events from `after_seq` on, live until its result, after `first` if given. With
/// `acks` (a StartAndAttachRun stream), the caller's acknowledgements are applied as they
/// come, and the stream stays open after the result until everything is acknowledged.
pub fn attach(
    run: Arc<Run>,
    after_seq: u64,
    first: Option<pb::RunEvent>,
    mut acks: Option<Acks>,
) -> Result<ReceiverStream<Result<pb::RunEvent, Status>>, AgentError> {
    let mut status = run.subscribe();
    // The cursor's own arithmetic needs after_seq + 1 to exist; what it reads at or below
    // after_seq is skipped below.
    let mut cursor = run
        .spool
        .cursor(after_seq.min(u64::MAX - 1))
        .map_err(AgentError::Cursor)?;
    let (tx, rx) = mpsc::channel(16);
    if let Some(first) = first {
        // The channel is new and empty: there is room.
        let _ = tx.try_send(Ok(first));
    }
    let streaming = Streaming::begin();
    tokio::spawn(async move {
        let _streaming = streaming;
        loop {
            let now = status.borrow_and_update().clone();
            loop {
                match cursor.next_chunk(now.extent) {
                    Ok(Some(chunk)) if chunk.seq <= after_seq => {}
                    Ok(Some(chunk)) => {
                        let event = pb::RunEvent {
                            event: Some(pb::run_event::Event::Chunk(pb::OutputChunk {
                                seq: chunk.seq,
                                stream: chunk.stream as i32,
                                data: chunk.data,
                            })),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return; // the reader went away
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(AgentError::Damaged(e).into())).await;
                        return;
                    }
                }
            }
            if let Phase::Ended { outcome, .. } = &now.phase {
                let last_seq = now.extent.last_seq;
                let result = outcome.to_result(last_seq);
                let sent = tx.send(Ok(pb::RunEvent {
                    event: Some(pb::run_event::Event::Result(result)),
                }));
                if sent.await.is_err() {
                    return;
                }
                // Until the caller has everything: its acknowledgement, or its side closed.
                if let Some(acks) = acks.as_mut() {
                    loop {
                        tokio::select! {
                            acked = acks.next(&run) => match acked {
                                Some(seq) if seq >= last_seq => return,
                                Some(_) => {}
                                None => return,
                            },
                            () = tx.closed() => return,
                        }
                    }
                }
                return;
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                acked = async { acks.as_mut()?.next(&run).await }, if acks.is_some() => {
                    if acked.is_none() {
                        acks = None; // the caller closed its side: nothing more to acknowledge
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// Output streams going on in this process, and how many have begun in all.
static STREAMING: AtomicUsize = AtomicUsize::new(0);
static BEGUN: AtomicUsize = AtomicUsize::new(0);

/// How long the agent stays without an output stream before the memory the streams used
/// goes back to the kernel: not after every run of a fan-out (the next would fault its pages
/// in again), once a burst is over.
const IDLE_BEFORE_TRIM: std::time::Duration = std::time::Duration::from_secs(1);

/// One output stream, counted in [`STREAMING`].
struct Streaming(());

impl Streaming {
    fn begin() -> Streaming {
        STREAMING.fetch_add(1, Ordering::AcqRel);
        BEGUN.fetch_add(1, Ordering::AcqRel);
        Streaming(())
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if STREAMING.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let begun = BEGUN.load(Ordering::Acquire);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(IDLE_BEFORE_TRIM).await;
                // Still idle, and no stream came and went meanwhile.
                if STREAMING.load(Ordering::Acquire) == 0 && BEGUN.load(Ordering::Acquire) == begun {
                    crate::give_back_freed_memory();
                }
            });
        }
    }
}
