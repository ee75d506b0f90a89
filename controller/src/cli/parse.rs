//! Parsers of option values shared by several commands (throttle limits, durations, job
//! stores, NAME=VALUE pairs).

/// The throttle limit without `--throttle-limit`, or with `--throttle-limit 0` (PowerShell's).
pub const DEFAULT_THROTTLE_LIMIT: u32 = 32;

/// Most hosts in flight at once that `--throttle-limit` takes.
const MAX_THROTTLE_LIMIT: u32 = 100_000;

pub fn parse_throttle_limit(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Ok(DEFAULT_THROTTLE_LIMIT),
        Ok(n) if n <= MAX_THROTTLE_LIMIT => Ok(n),
        _ => Err(format!(
            "expected a whole number from 0 to {MAX_THROTTLE_LIMIT} (0 means the default, {DEFAULT_THROTTLE_LIMIT})"
        )),
    }
}

/// `--throttle-limit` of `rjob invoke`: a count as [`parse_throttle_limit`] takes, or N% of
/// the hosts.
pub fn parse_throttle_amount(s: &str) -> Result<crate::budget::Amount, String> {
    match crate::budget::Amount::parse(s, MAX_THROTTLE_LIMIT)? {
        crate::budget::Amount::Count(n) => {
            parse_throttle_limit(&n.to_string()).map(crate::budget::Amount::Count)
        }
        percent => Ok(percent),
    }
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: write a duration like 500ms, 30s, 10m or 2h"))
}

/// A job store: a PostgreSQL URL, or a SQLite file (no other scheme).
pub fn parse_store(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty: give a postgres:// URL or a SQLite file".to_string());
    }
    if crate::store::postgres::is_postgres_url(s) || !s.contains("://") {
        return Ok(s.to_string());
    }
    Err("not a job store: give a postgres:// URL (postgres://user@host/db, postgres:///db?host=/socket/dir) or a SQLite file".to_string())
}

pub(super) fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE".to_string()),
    }
}
