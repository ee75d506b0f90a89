//! How the daemon is asked to stop: SIGTERM or SIGINT (shared with the agent).

pub use rjob_proto::process::shutdown_signal;
