//! The command line of `rjob-bench handshake-flood`, read by the flood and by its report.

use std::path::PathBuf;

use clap::Parser;

use crate::flood_worker::Payload;

/// rjob-bench handshake-flood: `rjob invoke` and the agent's RSS while N connections stall in
/// the TLS handshake.
#[derive(Debug, Parser, serde::Serialize)]
#[command(name = "rjob-bench handshake-flood")]
pub struct FloodOpts {
    /// Flood connections held open at once (at most 60000)
    #[arg(long, default_value_t = 20_000)]
    pub connections: usize,
    /// Distinct source addresses of the flood: 127.0.1.1, 127.0.1.2, … (at most 2540)
    #[arg(long, default_value_t = 254)]
    pub sources: usize,
    /// What each flood connection sends before it stalls: nothing, the start of a
    /// ClientHello, or half and half
    #[arg(long, value_enum, default_value_t = Payload::Mixed)]
    pub payload: Payload,
    /// Pause before a flood connection the agent closed is opened again, in ms (each pause
    /// jittered between half and 1.5 times this)
    #[arg(long, default_value_t = 5000)]
    pub reconnect_ms: u64,
    /// A flood connection the agent closed stays closed (the flood then decays)
    #[arg(long)]
    pub no_reconnect: bool,
    /// Timed `rjob invoke`s under the flood (and as many without, first); medians are reported
    #[arg(long, default_value_t = 7)]
    pub invokes: usize,
    /// How long the flood runs before the first timed invoke (past the kernel's 5 s
    /// TCP_DEFER_ACCEPT, so silent connections have reached the agent)
    #[arg(long, default_value_t = 8)]
    pub settle_s: u64,
    /// The flood stops by itself after this long, whatever happens
    #[arg(long, default_value_t = 180)]
    pub max_duration_s: u64,
    /// Port of the agent
    #[arg(long, default_value_t = 17543)]
    pub port: u16,
    /// Directory with the rjob and rjob-agent binaries [default: build them]
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where handshake-flood.md and .json go [default: bench/results]
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep the temporary directory (certificates, the agent's log)
    #[arg(long)]
    pub keep: bool,
}
