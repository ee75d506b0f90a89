//! The values the command line chooses between, shared by the parser (`cli.rs`) and the
//! code that acts on them (output, progress, requests). A leaf: it depends on nothing in the
//! crate, so the modules below the command line need not depend on the parser.

use clap::ValueEnum;

/// Interpreters rjob knows by name; each agent offers those of them its config allows.
pub const KNOWN_INTERPRETERS: [&str; 7] = ["sh", "bash", "dash", "zsh", "ksh", "python3", "perl"];

/// How results are written on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `host: line`, stderr lines marked `host [stderr]: line`
    Text,
    /// One JSON object per line per record
    Json,
}
