//! The facts `/proc` tells about a process (this boot, a process's start time and session),
//! which tell whether a recorded pid is still the process it was. A leaf: it depends on
//! nothing in the crate.

/// This boot's id (empty where the kernel does not say).
pub fn boot_id() -> String {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// When a process started, in clock ticks after boot (0: no such process).
pub fn process_start_time(pid: u32) -> u64 {
    process_start_and_session(pid).0
}

/// When a process started (clock ticks after boot) and its session id; zeros when there is no
/// such process.
pub fn process_start_and_session(pid: u32) -> (u64, u32) {
    // One read of a buffer that holds any stat line (procfs reports size 0, so reading "to the
    // end" would probe with a series of small reads).
    let read = || -> std::io::Result<String> {
        use std::io::Read as _;
        let mut buf = vec![0u8; 1024];
        let n = std::fs::File::open(format!("/proc/{pid}/stat"))?.read(&mut buf)?;
        buf.truncate(n);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read()
        .ok()
        .and_then(|stat| {
            // Fields 6 (session) and 22 (start time); fields after the command name (which
            // may hold spaces) start at 3.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((fields.get(19)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
        .unwrap_or((0, 0))
}
