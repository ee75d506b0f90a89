//! The rjob wire protocol, `rjob.v1`.
//!
//! The generated code in `src/gen/` is committed, so that building needs no `protoc`;
//! `tests/regenerate.rs` regenerates it from `proto/` (with `protox`, pure Rust) and fails
//! on any difference. After editing a `.proto` file run
//! `RJOB_REGENERATE=1 cargo test -p rjob-proto` to rewrite `src/gen/`.

/// Version 1 of the agent API.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)] // generated code
    include!("gen/rjob.v1.rs");
}

pub mod coalesce;
pub mod tls;

/// The default TCP port of `rjob-agent`.
pub const DEFAULT_PORT: u16 = 7443;
