//! Back-pressure on the wire: how an agent says "busy, try again later" so that a client can
//! tell it from every other RESOURCE_EXHAUSTED (gRPC itself uses that code for over-size
//! messages, which no retry would cure).
//!
//! The agent sets gRPC's own retry pushback trailer (`grpc-retry-pushback-ms`, from the gRPC
//! retry design) on the RESOURCE_EXHAUSTED it answers at its concurrency limit; a client that
//! sees it may wait and try again, at the earliest after the given delay.

use std::time::Duration;

use tonic::{Code, Status};

/// The trailer that marks a refusal as worth retrying, with the earliest delay in milliseconds.
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// A RESOURCE_EXHAUSTED that says "retry after `after`".
pub fn busy(message: impl Into<String>, after: Duration) -> Status {
    let mut status = Status::resource_exhausted(message);
    let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    if let Ok(value) = ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_PUSHBACK, value);
    }
    status
}

/// When `status` is a busy refusal: the earliest delay before a retry.
pub fn retry_after(status: &Status) -> Option<Duration> {
    if status.code() != Code::ResourceExhausted {
        return None;
    }
    let value = status.metadata().get(RETRY_PUSHBACK)?.to_str().ok()?;
    // gRPC: a negative or malformed pushback means "do not retry".
    value.trim().parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_marked_resource_exhausted_is_busy() {
        let marked = busy("at its limit", Duration::from_millis(250));
        assert_eq!(retry_after(&marked), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(&Status::resource_exhausted("message too large")),
            None
        );
        let mut other = Status::invalid_argument("bad");
        other
            .metadata_mut()
            .insert(RETRY_PUSHBACK, "5".parse().expect("ascii"));
        assert_eq!(retry_after(&other), None);
        let mut negative = Status::resource_exhausted("no");
        negative
            .metadata_mut()
            .insert(RETRY_PUSHBACK, "-1".parse().expect("ascii"));
        assert_eq!(retry_after(&negative), None);
    }
}
