//! The daemon's side of `ReceiveJob`: one session per receiving client.
//!
//! Output is marked received only when the client confirms it (a [`pb::ReceiveAck`] on the
//! same stream, sent once the output is written out), and the mark is committed to the store
//! before the session relies on it. The session keeps at most [`WINDOW`] bytes sent and not
//! yet confirmed, so a daemon crash repeats at most that much on the next receive; a client
//! that dies or a reader that goes away loses nothing. A consuming receive (without `keep`)
//! is exclusive per job ([`Consumers`] here, and the store's claim across the daemons sharing
//! it); `keep` receives never take part.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use rjob_proto::v1 as pb;
use rjob_proto::v1::receive_job_message::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{JobError, Manager};
use crate::daemon::service::status;
use crate::store::{Mark, Output, ReceiveClaim, StoreError};

/// The most output bytes one receive has sent and the client has not yet confirmed (a single
/// chunk larger than that still goes, alone).
pub const WINDOW: u64 = 256 * 1024;

/// Chunks read from the store at a time.
const BATCH: usize = 64;

/// The jobs that have a consuming receive going.
#[derive(Default, Clone)]
pub struct Consumers(Arc<Mutex<HashSet<i64>>>);

/// A job's consuming receive; the job is free again when it is dropped (the session ended,
/// however it ended).
pub struct Claim {
    consumers: Consumers,
    job_id: i64,
}

impl Consumers {
    /// Claims the job for one consuming receive; `None` while another one has it.
    pub fn claim(&self, job_id: i64) -> Option<Claim> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(job_id).then(|| Claim {
            consumers: self.clone(),
            job_id,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.consumers.0.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.job_id);
    }
}

/// What a receive asked for, once resolved.
struct Plan {
    job_id: i64,
    /// The selected children: index and label.
    children: Vec<(u32, String)>,
    keep: bool,
    /// With `keep`: start after this sequence number (what `rjob watch` shows is the end).
    after_seq: u64,
    follow: bool,
}

/// Bytes `done..end` of chunk `seq` were sent and are not confirmed yet.
struct Flight {
    seq: u64,
    done: u32,
    end: u32,
}

/// One child of the receive. Everything per stream is indexed stdout, stderr.
struct Slot {
    idx: u32,
    label: String,
    /// The child's output is read from the store up to here (its seq).
    cursor: u64,
    /// The marks the receive started from: what they cover is not sent again.
    start: [Mark; 2],
    /// Whether the stream's first chunk after its start mark was sent (from the mark's offset).
    started: [bool; 2],
    /// Per stream: the last chunk sent (as a mark), and what the client confirmed.
    sent: [Mark; 2],
    confirmed: [Mark; 2],
    flights: [VecDeque<Flight>; 2],
}

fn stream_index(stream: pb::Stream) -> usize {
    usize::from(stream == pb::Stream::Stderr)
}

enum Failure {
    /// The client went away or closed its side: not an error.
    Gone,
    Status(Status),
}

impl From<JobError> for Failure {
    fn from(e: JobError) -> Self {
        Failure::Status(status(e))
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Status(status(e.into()))
    }
}

type Tx = mpsc::Sender<Result<pb::JobOutput, Status>>;

struct Session<'a> {
    manager: &'a Manager,
    plan: Plan,
    slots: Vec<Slot>,
    tx: Tx,
    inbound: Streaming<pb::ReceiveJobMessage>,
    /// Sent and not confirmed, over every slot.
    inflight: u64,
    /// The store's claim of a consuming receive shared with other daemons.
    claim: Option<&'a mut ReceiveClaim>,
}

impl Manager {
    /// Starts a receive of `req` (the first message of the stream); the session then goes on
    /// on its own, over `inbound` and the stream returned.
    pub async fn receive(
        self: &Arc<Self>,
        req: pb::ReceiveJobRequest,
        inbound: Streaming<pb::ReceiveJobMessage>,
    ) -> Result<ReceiverStream<Result<pb::JobOutput, Status>>, JobError> {
        let job = self.resolve(&req.job).await?;
        let children = self.store.children(job.id).await?;
        let selected: Vec<(u32, String)> = children
            .iter()
            .map(|c| (c.idx, c.label(&job.location)))
            .filter(|(_, label)| req.host.is_empty() || *label == req.host)
            .collect();
        if selected.is_empty() {
            let labels: Vec<String> = children.iter().map(|c| c.label(&job.location)).collect();
            return Err(JobError::Invalid(format!(
                "job {} has no host {:?}; its hosts: {}",
                job.name,
                req.host,
                labels.join(", ")
            )));
        }
        let claim = if req.keep {
            None
        } else {
            let busy = || JobError::Receiving {
                id: job.id,
                name: job.name.clone(),
            };
            // Here first, then across the daemons sharing the store.
            let here = self.consumers.claim(job.id).ok_or_else(busy)?;
            let shared = self.store.claim_receive(job.id).await?.ok_or_else(busy)?;
            Some((here, shared))
        };
        let plan = Plan {
            job_id: job.id,
            children: selected,
            keep: req.keep,
            after_seq: if req.keep { req.after_seq } else { 0 },
            follow: req.follow,
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(run(self.clone(), plan, inbound, tx, claim));
        Ok(ReceiverStream::new(rx))
    }
}

/// Runs one receive to its end; the claim (if any) is held until then.
async fn run(
    manager: Arc<Manager>,
    plan: Plan,
    inbound: Streaming<pb::ReceiveJobMessage>,
    tx: Tx,
    claim: Option<(Claim, ReceiveClaim)>,
) {
    let (here, mut shared) = match claim {
        Some((here, shared)) => (Some(here), Some(shared)),
        None => (None, None),
    };
    let result = start(&manager, plan, inbound, tx.clone(), shared.as_mut()).await;
    // Let go as soon as the session ended (a receive that comes meanwhile on another
    // daemon waits a moment for the store's claim).
    drop(here);
    if let Some(shared) = shared {
        shared.release().await;
    }
    if let Err(Failure::Status(e)) = result {
        tracing::warn!(error = %e, "a receive ended with an error");
        let _ = tx.send(Err(e)).await;
    }
}

async fn start(
    manager: &Manager,
    plan: Plan,
    inbound: Streaming<pb::ReceiveJobMessage>,
    tx: Tx,
    claim: Option<&mut ReceiveClaim>,
) -> Result<(), Failure> {
    let store = &*manager.store;
    let mut slots = Vec::with_capacity(plan.children.len());
    for (idx, label) in &plan.children {
        let mut marks = store.received_marks(plan.job_id, *idx).await?;
        if plan.keep {
            for mark in &mut marks {
                if mark.seq < plan.after_seq {
                    *mark = Mark {
                        seq: plan.after_seq,
                        off: 0,
                    };
                }
            }
        }
        slots.push(Slot {
            idx: *idx,
            label: label.clone(),
            cursor: marks[0].seq.min(marks[1].seq),
            start: marks,
            started: [false; 2],
            sent: marks,
            confirmed: marks,
            flights: [VecDeque::new(), VecDeque::new()],
        });
    }
    let mut session = Session {
        manager,
        plan,
        slots,
        tx,
        inbound,
        inflight: 0,
        claim,
    };
    session.stream().await
}

impl Session<'_> {
    /// Sends output not yet received, child by child and in order; with `follow`, goes on with
    /// live output until the job has ended and everything was sent. Then the end message, and
    /// (consuming) the client's last confirmations until it closes its side.
    async fn stream(&mut self) -> Result<(), Failure> {
        let store = &*self.manager.store;
        let job_id = self.plan.job_id;
        let mut changes = self.manager.changes.subscribe(job_id);
        loop {
            changes.borrow_and_update();
            let children = store.children(job_id).await?;
            if children.is_empty() {
                return Err(JobError::NotFound(job_id.to_string()).into()); // removed meanwhile
            }
            for slot in 0..self.slots.len() {
                let idx = self.slots[slot].idx;
                let Some(child) = children.iter().find(|c| c.idx == idx) else {
                    continue;
                };
                self.send_child(slot, child.last_seq).await?;
            }
            let all_sent_and_done = self.slots.iter().all(|s| {
                children
                    .iter()
                    .find(|c| c.idx == s.idx)
                    .is_none_or(|c| c.state.is_finished() && s.cursor >= c.last_seq)
            });
            if !self.plan.follow || all_sent_and_done {
                break;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return Err(Failure::Gone) },
                msg = self.inbound.message() => self.handle(msg).await?,
                () = self.tx.closed() => return Err(Failure::Gone),
            }
        }
        self.send(pb::JobOutput {
            end: true,
            ..Default::default()
        })
        .await?;
        if self.plan.keep {
            return Ok(());
        }
        loop {
            let msg = self.inbound.message().await;
            match self.handle(msg).await {
                Err(Failure::Gone) => return Ok(()),
                other => other?,
            }
        }
    }

    /// Sends one child's output after its cursor, through `upto`, leaving out what the start
    /// marks cover.
    async fn send_child(&mut self, slot: usize, upto: u64) -> Result<(), Failure> {
        let store = &*self.manager.store;
        loop {
            let (idx, cursor) = (self.slots[slot].idx, self.slots[slot].cursor);
            let rows = store.output(self.plan.job_id, idx, cursor, upto, BATCH).await?;
            if rows.is_empty() {
                return Ok(());
            }
            for Output { seq, stream, data } in rows {
                let stream = pb::Stream::from(stream);
                let si = stream_index(stream);
                let s = &mut self.slots[slot];
                s.cursor = seq;
                if seq <= s.start[si].seq {
                    continue; // delivered before
                }
                let end = u32::try_from(data.len()).unwrap_or(u32::MAX);
                let from = if s.started[si] {
                    0
                } else {
                    s.started[si] = true;
                    s.start[si].off.min(end)
                };
                let len = u64::from(end - from);
                let label = s.label.clone();
                self.wait_room(len).await?;
                let out = pb::JobOutput {
                    child: idx,
                    host: label,
                    stream: stream as i32,
                    seq,
                    data: data[from as usize..].to_vec(),
                    offset: from,
                    end: false,
                };
                self.send(out).await?;
                let s = &mut self.slots[slot];
                s.sent[si] = Mark { seq, off: 0 };
                if !self.plan.keep {
                    s.flights[si].push_back(Flight { seq, done: from, end });
                    self.inflight += len;
                }
            }
        }
    }

    /// Waits (handling confirmations) until `len` more bytes fit in the window.
    async fn wait_room(&mut self, len: u64) -> Result<(), Failure> {
        while !self.plan.keep && self.inflight > 0 && self.inflight + len > WINDOW {
            let msg = self.inbound.message().await;
            self.handle(msg).await?;
        }
        Ok(())
    }

    /// Sends one message, handling confirmations while the channel is full.
    async fn send(&mut self, out: pb::JobOutput) -> Result<(), Failure> {
        loop {
            tokio::select! {
                permit = self.tx.clone().reserve_owned() => {
                    let permit = permit.map_err(|_| Failure::Gone)?;
                    permit.send(Ok(out));
                    return Ok(());
                }
                msg = self.inbound.message() => self.handle(msg).await?,
            }
        }
    }

    async fn handle(&mut self, msg: Result<Option<pb::ReceiveJobMessage>, Status>) -> Result<(), Failure> {
        match msg {
            Ok(Some(pb::ReceiveJobMessage {
                message: Some(Message::Ack(ack)),
            })) => self.confirm(&ack).await,
            Ok(Some(_)) => Err(Failure::Status(Status::invalid_argument(
                "a receive takes one request, then only acks",
            ))),
            Ok(None) | Err(_) => Err(Failure::Gone),
        }
    }

    /// The client has written out one stream of a child up to the ack: commit the mark, then
    /// free the window it held.
    async fn confirm(&mut self, ack: &pb::ReceiveAck) -> Result<(), Failure> {
        if self.plan.keep {
            return Ok(()); // a kept receive marks nothing
        }
        let Some(slot) = self.slots.iter().position(|s| s.idx == ack.child) else {
            return Err(Failure::Status(Status::invalid_argument(format!(
                "an ack names child {} that this receive does not send",
                ack.child
            ))));
        };
        let stream = pb::Stream::try_from(ack.stream).unwrap_or(pb::Stream::Stdout);
        let si = stream_index(stream);
        let s = &self.slots[slot];
        let mut mark = Mark {
            seq: ack.seq,
            off: ack.offset,
        };
        if mark <= s.confirmed[si] {
            return Ok(());
        }
        if mark > s.sent[si] {
            return Err(Failure::Status(Status::invalid_argument(format!(
                "an ack of child {} goes past the output sent",
                ack.child
            ))));
        }
        // An ack of a whole chunk by its length is the same as one through it.
        if let Some(f) = s.flights[si].iter().find(|f| f.seq > mark.seq) {
            if mark.off >= f.end {
                mark = Mark { seq: f.seq, off: 0 };
            }
        }
        // Marks only under the claim: after the store came back, the claim is taken again
        // first; a receive that lost it to another ends here, marking nothing more.
        if let Some(claim) = self.claim.as_deref_mut() {
            if !claim.keep().await {
                return Err(Failure::Status(Status::aborted(
                    "this receive lost its claim on the job while the store was away, and another receive has it now; nothing more was marked received",
                )));
            }
        }
        // Retried until it goes through, as every store write is (a full disk): the client
        // waits meanwhile, and nothing past the mark is taken.
        let (store, job_id, child) = (&*self.manager.store, self.plan.job_id, ack.child);
        self.manager
            .health
            .retry("a received mark", || {
                store.mark_received(job_id, child, stream.into(), mark)
            })
            .await;
        let s = &mut self.slots[slot];
        let flights = &mut s.flights[si];
        while let Some(f) = flights.front_mut() {
            if f.seq <= mark.seq {
                self.inflight = self.inflight.saturating_sub(u64::from(f.end - f.done));
                flights.pop_front();
            } else {
                if mark.off > f.done {
                    self.inflight = self.inflight.saturating_sub(u64::from(mark.off - f.done));
                    f.done = mark.off;
                }
                break;
            }
        }
        s.confirmed[si] = mark;
        Ok(())
    }
}
