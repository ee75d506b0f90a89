//! rjob-agent: runs script blocks in new, clean processes and keeps their output on disk
//! until the controller has it.
//!
//! - [`runner`] starts a script's process (shared with the controller's local jobs);
//! - [`spool`] is a run's output log on disk;
//! - [`run`] supervises one run, [`runs`] owns them all;
//! - [`service`] is the gRPC edge, [`server`] puts it behind mutual TLS.

pub mod auth;
pub mod config;
pub mod policy;
pub mod run;
pub mod runner;
pub mod runs;
pub mod server;
pub mod service;
pub mod spool;
