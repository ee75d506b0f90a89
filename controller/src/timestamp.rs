//! Timestamps as people read them. A leaf, shared by the job commands and the daemon.

/// Milliseconds since the epoch as local-ish text (UTC, to the second).
pub fn time_text(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
