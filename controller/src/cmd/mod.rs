//! The job commands, CLI side: each talks to the daemon over its Unix socket.

pub mod cells;
pub mod completions;
pub mod config;
pub mod config_retention;
pub mod control;
pub mod daemon;
pub mod delivered;
pub mod hosts;
pub mod jobs;
pub mod pki;
pub mod poller;
pub mod receive;
mod receive_end;
pub mod receive_events;
pub mod receive_jobs;
pub mod rerun;
pub mod route;
pub mod schema;
pub mod select;
pub mod session;
pub mod start;
pub mod stdout;
pub mod wait;
pub mod watch;

use std::path::PathBuf;

use crate::UsageError;

/// Where the daemon is, and the identity a daemon started on demand should use.
pub struct DaemonAddr {
    pub state_dir: PathBuf,
    pub identity: Option<PathBuf>,
}

impl DaemonAddr {
    pub async fn connect(&self) -> anyhow::Result<crate::daemon::client::DaemonClient> {
        crate::daemon::client::connect(&self.state_dir, self.identity.as_deref()).await
    }
}

/// Errors the daemon reports about what the user asked (unknown job, ambiguous name, a running
/// job to remove) are usage errors: one line, exit status 2.
pub fn from_status(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            UsageError(status.message().to_string()).into()
        }
        _ => anyhow::anyhow!(
            "the daemon answered: {}",
            crate::connect::describe_status(&status)
        ),
    }
}
