//! The gRPC codec of rjob.v1: prost's, with one check before a start request is decoded.
//!
//! Decoding a message builds every string of it; a start request with hundreds of thousands
//! of environment entries kept the agent's thread busy for seconds, for every client. So the
//! raw bytes of a `StartRunRequest` (alone, or first in a `StartAndAttachRun` stream) are
//! scanned first, without allocating, and a request over the agent's environment limits
//! ([`limit_environment`]) is refused as INVALID_ARGUMENT before it is decoded.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::v1::{RunStreamRequest, StartRunRequest};

/// The environment limits checked before decoding (none until an agent sets them).
static MAX_ENV_ENTRIES: AtomicU64 = AtomicU64::new(u64::MAX);
static MAX_ENV_BYTES: AtomicU64 = AtomicU64::new(u64::MAX);

/// Sets the environment limits that start requests are scanned for in this process (the
/// agent's `max_env_entries` and `max_env_bytes`; `NAME=value` and a NUL per entry).
pub fn limit_environment(max_entries: u64, max_bytes: u64) {
    MAX_ENV_ENTRIES.store(max_entries, Ordering::Relaxed);
    MAX_ENV_BYTES.store(max_bytes, Ordering::Relaxed);
}

/// `StartRunRequest.env` and `RunStreamRequest.start`, as numbered in agent.proto.
const ENV_FIELD: u64 = 5;
const START_FIELD: u64 = 1;

/// prost's codec with [`GuardDecoder`] (the generated code names it as its codec).
#[derive(Debug, Clone)]
pub struct GuardCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for GuardCodec<T, U> {
    fn default() -> Self {
        GuardCodec { _types: PhantomData }
    }
}

impl<T, U> Codec for GuardCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = GuardDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        GuardDecoder {
            inner: ProstDecoder::new(BufferSettings::default()),
        }
    }
}

/// prost's decoder, after a scan of start requests.
#[derive(Debug)]
pub struct GuardDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default + 'static> Decoder for GuardDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let whole = buf.remaining() == buf.chunk().len();
        if whole {
            let bytes = buf.chunk();
            if TypeId::of::<U>() == TypeId::of::<StartRunRequest>() {
                check_start(bytes)?;
            } else if TypeId::of::<U>() == TypeId::of::<RunStreamRequest>() {
                for start in fields(bytes, START_FIELD) {
                    check_start(start)?;
                }
            }
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// Refuses a start request whose environment is over the limits.
fn check_start(bytes: &[u8]) -> Result<(), Status> {
    let (max_entries, max_bytes) = (
        MAX_ENV_ENTRIES.load(Ordering::Relaxed),
        MAX_ENV_BYTES.load(Ordering::Relaxed),
    );
    let (mut entries, mut size) = (0u64, 0u64);
    for entry in fields(bytes, ENV_FIELD) {
        entries += 1;
        // An entry is its key and value with their tags and lengths: at least as long as
        // NAME=value, at most a few bytes longer.
        size += entry.len() as u64;
        if entries > max_entries {
            return Err(Status::invalid_argument(format!(
                "more than {max_entries} environment variables; this agent accepts at most {max_entries} (max_env_entries)"
            )));
        }
    }
    if size > max_bytes.saturating_add(8 * entries) {
        return Err(Status::invalid_argument(format!(
            "the environment variables take more than {max_bytes} bytes; this agent accepts at most {max_bytes} (max_env_bytes)"
        )));
    }
    Ok(())
}

/// The length-delimited fields numbered `number` at the top level of a message; stops
/// quietly at anything malformed (prost's decode then says what is wrong).
fn fields(mut bytes: &[u8], number: u64) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || loop {
        let key = prost::encoding::decode_varint(&mut bytes).ok()?;
        let skip = match key & 7 {
            0 => {
                prost::encoding::decode_varint(&mut bytes).ok()?;
                0
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(prost::encoding::decode_varint(&mut bytes).ok()?).ok()?,
            _ => return None,
        };
        if skip > bytes.len() {
            return None;
        }
        let (field, rest) = bytes.split_at(skip);
        bytes = rest;
        if key & 7 == 2 && key >> 3 == number {
            return Some(field);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_are_counted_without_decoding() {
        let req = StartRunRequest {
            script: "true".into(),
            args: vec!["a".into(); 3],
            env: (0..10).map(|i| (format!("V{i}"), "x".repeat(10))).collect(),
            timeout_ms: 5,
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        assert_eq!(fields(&bytes, ENV_FIELD).count(), 10);
        let stream = RunStreamRequest {
            request: Some(crate::v1::run_stream_request::Request::Start(req)),
        }
        .encode_to_vec();
        let start: Vec<_> = fields(&stream, START_FIELD).collect();
        assert_eq!(start.len(), 1);
        assert_eq!(fields(start[0], ENV_FIELD).count(), 10);
        assert_eq!(fields(&[0xff], ENV_FIELD).count(), 0);
    }
}
