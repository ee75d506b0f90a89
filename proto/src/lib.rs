//! The rjob wire protocol, `rjob.v1`.
//!
//! The generated code in `src/gen/` is committed, so that building needs no `protoc`;
//! `tests/regenerate.rs` regenerates it from `proto/` (with `protox`, pure Rust) and fails
//! on any difference. After editing a `.proto` file run
//! `RJOB_REGENERATE=1 cargo test -p rjob-proto` to rewrite `src/gen/`.

/// Version 1 of the agent API and of the controller daemon's API (one protobuf package).
///
/// Read the `.proto` files in `proto/rjob/v1/` for the API: they are split by responsibility
/// and commented. The generated file follows them in order:
/// - the messages of `agent.proto` (runs, their events and results), then `agent_client`
///   (used by the controller) and `agent_server` (implemented by `rjob-agent`);
/// - the messages of `controller.proto` (jobs, children, output), then `controller_client`
///   (the `rjob` commands) and `controller_server` (implemented by `rjob serve`).
///
/// It stays one file because prost writes one file per protobuf package; splitting it would
/// mean a second package, and new gRPC paths for the daemon, for no gain to a reader of the
/// `.proto` files.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)] // generated code
    include!("gen/rjob.v1.rs");
}

pub mod client_verify;
pub mod coalesce;
pub mod codec;
pub mod dial;
pub mod process;
pub mod pushback;
pub mod tls;

/// The default TCP port of `rjob-agent`.
pub const DEFAULT_PORT: u16 = 7443;
