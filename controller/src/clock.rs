//! The controller's wall clock, as the store and the daemon record times (the one the agent
//! uses too, from the crate both share).

pub use rjob_proto::process::now_ms;
