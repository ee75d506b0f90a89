//! Every way the agent refuses or fails a request, and the one mapping of those to the wire:
//! the `tonic::Status` code, its message (the error's own text, which users see and act on),
//! and the retry pushback of a busy refusal.

use std::time::Duration;

use tonic::{Response, Status};

use super::validate::Invalid;
use crate::policy::Refusal;
use crate::runner::RunnerError;
use crate::runs::{NotFound, StartError};
use crate::spool::SpoolError;

/// The earliest retry a caller refused at a concurrency limit is told to make.
pub const BUSY_PUSHBACK: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request itself is wrong (sizes, names, environment, interpreter, timeout).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("the first message of StartAndAttachRun must be the start request")]
    FirstMessage,
    #[error(transparent)]
    NotFound(#[from] NotFound),
    #[error("run {id} belongs to another client")]
    OtherClient { id: String },
    /// A non-root agent asked to run as someone else.
    #[error(
        "this agent runs as {agent} and can only run scripts as {agent}; it was asked to run as {requested}"
    )]
    OwnUserOnly { agent: String, requested: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The client has as many runs going as one client may (back-pressure).
    #[error(
        "client {client:?} has {going} runs going on this agent, the most one client may have (max_runs_per_identity = {limit}); retry when one has ended"
    )]
    Quota {
        client: String,
        going: usize,
        limit: u32,
    },
    /// The task asking the user database did not come back.
    #[error("user lookup failed: {0}")]
    LookupTask(String),
    /// The user database did not answer: the request is refused (fail closed).
    #[error("{error} (on {host}); the run is refused: retry when the user database answers")]
    Lookup { error: RunnerError, host: String },
    #[error("the user database was not asked")]
    NotAsked,
    #[error("authentication failed for {user} on {host}")]
    Authentication { user: String, host: String },
    #[error("no user {user} on {host}: check the name, or create the user")]
    NoSuchUser { user: String, host: String },
    #[error("{}", start_message(.0))]
    Start(#[from] StartError),
    /// A run's output cannot be read from the start (its spool file cannot be opened).
    #[error(transparent)]
    Cursor(SpoolError),
    /// A run's output cannot be read on: its spool file is damaged.
    #[error(transparent)]
    Damaged(SpoolError),
    /// A status from the transport (the caller's request stream), passed on as it is.
    #[error("{}", .0.message())]
    Wire(Status),
}

/// A start error's text; a spawn refused for the size of its arguments says what to do.
fn start_message(e: &StartError) -> String {
    match e {
        StartError::Runner(RunnerError::Spawn { source, .. })
            if source.raw_os_error() == Some(libc::E2BIG) =>
        {
            format!(
                "{e}: the arguments and environment together are more than the system passes to a program; send fewer or smaller ones"
            )
        }
        _ => e.to_string(),
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        let message = e.to_string();
        match e {
            AgentError::Wire(status) => status,
            AgentError::Invalid(_) | AgentError::FirstMessage => Status::invalid_argument(message),
            AgentError::Refused(Refusal::PasswordRequired(_) | Refusal::NoDefault(_)) => {
                Status::invalid_argument(message)
            }
            AgentError::Refused(_) | AgentError::OtherClient { .. } | AgentError::OwnUserOnly { .. } => {
                Status::permission_denied(message)
            }
            AgentError::NotFound(_) => Status::not_found(message),
            // Back-pressure: the client may wait and try again.
            AgentError::Quota { .. } | AgentError::Start(StartError::Busy { .. }) => {
                rjob_proto::pushback::busy(message, BUSY_PUSHBACK)
            }
            AgentError::Start(StartError::SpoolFull { .. }) => Status::resource_exhausted(message),
            AgentError::Start(StartError::Runner(RunnerError::WorkingDir { .. })) => {
                Status::invalid_argument(message)
            }
            AgentError::Start(StartError::Runner(RunnerError::Spawn { ref source, .. }))
                if source.raw_os_error() == Some(libc::E2BIG) =>
            {
                Status::invalid_argument(message)
            }
            AgentError::Lookup { .. } => Status::unavailable(message),
            AgentError::Damaged(_) => Status::data_loss(message),
            AgentError::Authentication { .. } => Status::unauthenticated(message),
            AgentError::NoSuchUser { .. } => Status::failed_precondition(message),
            AgentError::LookupTask(_)
            | AgentError::NotAsked
            | AgentError::Start(_)
            | AgentError::Cursor(_) => Status::internal(message),
        }
    }
}

/// A handler's answer on the wire.
pub fn respond<T>(answer: Result<T, AgentError>) -> Result<Response<T>, Status> {
    answer.map(Response::new).map_err(Status::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_refusals_carry_the_pushback_and_others_do_not() {
        let quota = Status::from(AgentError::Quota {
            client: "c".into(),
            going: 2,
            limit: 2,
        });
        assert_eq!(rjob_proto::pushback::retry_after(&quota), Some(BUSY_PUSHBACK));
        let busy = Status::from(AgentError::Start(StartError::Busy { limit: 4 }));
        assert_eq!(rjob_proto::pushback::retry_after(&busy), Some(BUSY_PUSHBACK));
        assert_eq!(
            busy.message(),
            "the agent is at its limit of 4 concurrent runs; retry later or raise max_concurrent_runs"
        );
        let full = Status::from(AgentError::Start(StartError::SpoolFull { used: 2, limit: 1 }));
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        assert_eq!(rjob_proto::pushback::retry_after(&full), None);
    }

    #[test]
    fn codes_follow_the_kind_of_refusal() {
        let code = |e: AgentError| Status::from(e).code();
        assert_eq!(code(Invalid::ScriptNul.into()), tonic::Code::InvalidArgument);
        assert_eq!(
            code(Refusal::PasswordRequired("root".into()).into()),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(Refusal::UnknownIdentity("x".into()).into()),
            tonic::Code::PermissionDenied
        );
        assert_eq!(code(NotFound { id: "r".into() }.into()), tonic::Code::NotFound);
        let e2big = StartError::Runner(RunnerError::Spawn {
            interpreter: "/bin/sh".into(),
            source: std::io::Error::from_raw_os_error(libc::E2BIG),
        });
        let status = Status::from(AgentError::Start(e2big));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().ends_with("send fewer or smaller ones"));
        let wire = Status::data_loss("damaged");
        assert_eq!(code(AgentError::Wire(wire)), tonic::Code::DataLoss);
    }
}
