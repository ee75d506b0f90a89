//! rjob-agent: runs script blocks in new, clean processes and keeps their output on disk
//! until the controller has it.
//!
//! - [`runner`] starts a script's process (shared with the controller's local jobs);
//! - [`spool`] is a run's output log on disk;
//! - [`run`] supervises one run, [`runs`] owns them all;
//! - [`service`] is the gRPC edge, [`server`] puts it behind mutual TLS, [`embedded`] on a
//!   private Unix socket inside another process (the controller daemon's local jobs);
//! - [`listener`] accepts connections and their TLS handshakes, within the caps of
//!   [`handshake`], and logs failures as counts ([`handshake_log`]); [`dialout`] opens them
//!   to controllers instead, for agents behind NAT (`--connect`);
//! - [`service`] also starts a run (checks, quota, [`policy`], user lookup, password) and maps
//!   every refusal to the wire in one place; [`attach`] streams a run;
//! - [`contain`] keeps each run's processes together ([`cgroup`] or [`subreaper`]), so that
//!   nothing of a run outlives it; [`leftovers`] kills what an earlier agent left, where
//!   [`procfs`] proves it the run's.

pub mod attach;
pub mod cgroup;
pub mod config;
pub mod contain;
pub mod dialout;
pub mod embedded;
pub mod handshake;
pub mod handshake_log;
pub mod leftovers;
pub mod listener;
pub mod policy;
pub mod private_dir;
pub mod procfs;
pub mod run;
pub mod runner;
pub mod runs;
pub mod server;
pub mod service;
pub mod spool;
pub mod subreaper;

/// Keeps freed memory in the process instead of handing it back to the kernel after every
/// burst: a fan-out allocates and frees a few hundred KiB per connection, and glibc's default
/// (give back whatever exceeds 128 KiB at the top of the heap) turned that into a `brk` shrink
/// and grow, with fresh page faults, per run. Up to 8 MiB of free heap is now kept, and the
/// heap grows 1 MiB at a time.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tunables.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

/// Hands the allocator's free memory back to the kernel: called when the agent goes idle
/// (its last output stream ended), so that what a burst of runs kept (up to 8 MiB, above)
/// does not stay in its RSS while it waits for the next.
pub fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
