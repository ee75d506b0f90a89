//! Between the store's rows and the daemon's other types: a job as the CLI shows it
//! ([`job_info`]), a child's outcome as the store keeps it, a job's request as stored bytes,
//! and output streams.

use rjob_proto::v1 as pb;

use crate::child::ChildOutcome;
use crate::state::{parent_state, State};
use crate::store::{ChildEnd, ChildRow, JobRow, StoreError, Stream};

/// A job with its children, as the CLI shows it.
pub fn job_info(job: &JobRow, children: &[ChildRow]) -> pb::JobInfo {
    let states: Vec<State> = children.iter().map(|c| c.state).collect();
    let state = parent_state(&states, job.suspended);
    pb::JobInfo {
        id: u32::try_from(job.id).unwrap_or(u32::MAX),
        instance_id: job.instance_id.clone(),
        name: job.name.clone(),
        state: state.to_pb() as i32,
        has_more_data: children.iter().any(ChildRow::has_more_data),
        command: job.command.clone(),
        location: job.location.clone(),
        throttle_limit: job.throttle_limit,
        max_errors: job.max_errors,
        run_as: Vec::new(),
        created_at_ms: job.created_at_ms,
        ended_at_ms: job.ended_at_ms.unwrap_or(0),
        children: children
            .iter()
            .map(|c| pb::ChildInfo {
                index: c.idx,
                host: c.label(&job.location),
                state: c.state.to_pb() as i32,
                exit_code: c.exit_code,
                signal: c.signal,
                reason: c.reason.clone().unwrap_or_default(),
                has_more_data: c.has_more_data(),
                last_seq: c.last_seq,
                received_seq: c.received_seq,
                started_at_ms: c.started_at_ms.unwrap_or(0),
                ended_at_ms: c.ended_at_ms.unwrap_or(0),
                cause: c.cause.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// How a child ended, as the store keeps it.
pub fn child_end(outcome: &ChildOutcome, ended_at_ms: i64) -> ChildEnd {
    ChildEnd {
        state: outcome.state,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        reason: outcome.reason.clone(),
        cause: Some(outcome.cause.name().to_string()),
        ended_at_ms,
    }
}

/// A job's request as stored: never with its password.
pub fn encode_request(request: &pb::StartRunRequest) -> Vec<u8> {
    let mut request = request.clone();
    request.password.clear();
    prost::Message::encode_to_vec(&request)
}

/// A job's request read back; one that does not decode is [`StoreError::Corrupt`].
pub fn decode_request(id: i64, bytes: &[u8]) -> Result<pb::StartRunRequest, StoreError> {
    prost::Message::decode(bytes).map_err(|e: prost::DecodeError| StoreError::Corrupt {
        id,
        detail: e.to_string(),
    })
}

impl From<pb::Stream> for Stream {
    fn from(stream: pb::Stream) -> Stream {
        match stream {
            pb::Stream::Stderr => Stream::Stderr,
            _ => Stream::Stdout,
        }
    }
}

impl From<Stream> for pb::Stream {
    fn from(stream: Stream) -> pb::Stream {
        match stream {
            Stream::Stdout => pb::Stream::Stdout,
            Stream::Stderr => pb::Stream::Stderr,
        }
    }
}
