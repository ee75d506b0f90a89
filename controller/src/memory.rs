//! The allocator's tunables for the controller's process.

/// Keeps freed memory in the process instead of handing it back to the kernel after every
/// burst: a fan-out allocates and frees a few hundred KiB per connection, and glibc's default
/// (give back whatever exceeds 128 KiB at the top of the heap) turned that into a `brk` shrink
/// and grow, with fresh page faults, per host. Up to 8 MiB of free heap is now kept, and the
/// heap grows 1 MiB at a time.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tunables.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TOP_PAD, 1 << 20);
    }
}

/// Hands the free memory of every allocator arena back to the kernel: a long-lived process
/// (the daemon) calls it after a burst (a job's fan-out), so that its RSS falls back instead
/// of staying at the burst's peak.
pub fn give_back() {
    rjob_agent::give_back_freed_memory();
}
