//! The scenarios the benchmark measures, one file each.

pub mod fanout;
pub mod throughput;
