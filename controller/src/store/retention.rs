//! Retention: which jobs `rjob serve --retention AGE --max-store-size SIZE` removes, as pure
//! functions of the store's [`RetentionRow`]s (the daemon's sweep, `daemon::retention`,
//! applies them).
//!
//! # The rules
//! - **By age** first: a finished job whose last child ended more than `AGE` ago.
//! - **Then by size**, while the store holds more than `SIZE`: finished jobs, the one that
//!   ended first first (then by Id).
//! - Never a job that is **not finished**, nor one with output that no consuming `rjob
//!   receive` has taken (**unreceived**).
//! - `--force-retention` lifts the second rule in two steps, and no further:
//!   - finished jobs with unreceived output go too, by age and by size, like the others;
//!   - jobs not finished go only by size, and only once every finished job is gone and the
//!     store is still over `SIZE` (the oldest created first). They are stopped first, as
//!     `rjob remove --force` does. Never by age: a job that runs long is not old, and a
//!     size over the limit is what threatens every other job (a full disk).

use std::time::Duration;

use super::RetentionRow;

/// What `rjob serve` was told to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--retention`: finished jobs that ended longer ago than this go.
    pub max_age: Option<Duration>,
    /// `--max-store-size`, in bytes.
    pub max_size: Option<u64>,
    /// `--force-retention`.
    pub force: bool,
}

impl Policy {
    /// Whether there is anything to do (no sweep runs without a limit).
    pub fn is_set(&self) -> bool {
        self.max_age.is_some() || self.max_size.is_some()
    }
}

/// Why a job is never removed under `force` (`None`: it may be).
pub fn kept_because(row: &RetentionRow, force: bool) -> Option<&'static str> {
    if force {
        return None;
    }
    if !row.finished {
        Some("it is not finished")
    } else if row.unreceived {
        Some("it has output no `rjob receive` has taken")
    } else {
        None
    }
}

fn ended_order(a: &RetentionRow, b: &RetentionRow) -> std::cmp::Ordering {
    (a.ended_at_ms, a.id).cmp(&(b.ended_at_ms, b.id))
}

/// The finished jobs that ended more than `max_age` before `now_ms`, whichever retention
/// may remove, the one that ended first first.
pub fn expired(rows: &[RetentionRow], now_ms: i64, max_age: Duration, force: bool) -> Vec<RetentionRow> {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let mut out: Vec<RetentionRow> = rows
        .iter()
        .filter(|r| r.finished && kept_because(r, force).is_none())
        .filter(|r| {
            r.ended_at_ms
                .is_some_and(|end| now_ms.saturating_sub(end) > max_age_ms)
        })
        .cloned()
        .collect();
    out.sort_by(ended_order);
    out
}

/// The jobs retention may remove while the store is over its size, in the order it removes
/// them: finished ones by end (with `force`, unreceived ones among them), then, with
/// `force`, the unfinished ones, the oldest created first.
pub fn size_order(rows: &[RetentionRow], force: bool) -> Vec<RetentionRow> {
    let mut finished: Vec<RetentionRow> = rows
        .iter()
        .filter(|r| r.finished && kept_because(r, force).is_none())
        .cloned()
        .collect();
    finished.sort_by(ended_order);
    if force {
        let mut going: Vec<RetentionRow> = rows.iter().filter(|r| !r.finished).cloned().collect();
        going.sort_by_key(|r| (r.created_at_ms, r.id));
        finished.extend(going);
    }
    finished
}

/// `--retention`: a duration (humantime: `30d`, `12h`, `2s`), more than zero.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}: write a duration like 30d, 12h or 90m"))?;
    if age.is_zero() {
        return Err("0 would remove every finished job at once: write a duration like 30d".into());
    }
    Ok(age)
}

/// `--max-store-size`: bytes, with a unit (bytesize: `10GiB`, `500MB`, `1.5TiB`), more than
/// zero.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = s
        .trim()
        .parse()
        .map_err(|e: String| format!("{e}: write a size like 10GiB, 500MiB or 2TB"))?;
    if size.as_u64() == 0 {
        return Err("0 would remove every finished job at once: write a size like 10GiB".into());
    }
    Ok(size.as_u64())
}

/// A size as people read it (`1.5 GiB`).
pub fn show_size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, ended: Option<i64>, unreceived: bool) -> RetentionRow {
        RetentionRow {
            id,
            created_at_ms: 100 - id,
            ended_at_ms: ended,
            finished: ended.is_some(),
            unreceived,
        }
    }

    fn ids(rows: &[RetentionRow]) -> Vec<i64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn by_age_only_finished_received_jobs_past_the_age_go_the_oldest_first() {
        let rows = [
            row(1, Some(5_000), false), // ended 5 s before now: too young
            row(2, Some(1_000), false), // 9 s ago
            row(3, Some(500), true),    // unreceived
            row(4, None, false),        // running
            row(5, Some(2_000), false), // 8 s ago
            row(6, Some(3_000), false), // exactly 7 s ago: not more than the age
        ];
        let age = Duration::from_secs(7);
        assert_eq!(ids(&expired(&rows, 10_000, age, false)), [2, 5]);
        assert_eq!(
            ids(&expired(&rows, 10_000, age, true)),
            [3, 2, 5],
            "force takes the unreceived one too, never the running one"
        );
    }

    #[test]
    fn by_size_finished_by_end_then_with_force_the_running_by_creation() {
        let rows = [
            row(1, Some(300), false),
            row(2, None, false),
            row(3, Some(100), true),
            row(4, Some(200), false),
            row(5, None, true),
        ];
        assert_eq!(ids(&size_order(&rows, false)), [4, 1]);
        // created_at_ms is 100 - id: job 5 was created before job 2.
        assert_eq!(ids(&size_order(&rows, true)), [3, 4, 1, 5, 2]);
    }

    #[test]
    fn kept_jobs_say_why() {
        assert_eq!(
            kept_because(&row(1, None, false), false),
            Some("it is not finished")
        );
        assert!(kept_because(&row(1, Some(1), true), false)
            .is_some_and(|w| w.contains("no `rjob receive` has taken")));
        assert_eq!(kept_because(&row(1, Some(1), true), true), None);
        assert_eq!(kept_because(&row(1, Some(1), false), false), None);
    }

    #[test]
    fn durations_and_sizes_parse_with_units_and_refuse_nonsense_in_one_line() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("2s"), Ok(Duration::from_secs(2)));
        for bad in ["", "thirty days", "30 parsecs", "0s", "-1d"] {
            let e = parse_age(bad).expect_err(bad);
            assert!(!e.contains('\n') && e.contains("30d"), "{bad}: {e}");
        }
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "lots", "10 GiBs", "0", "0B", "-1GiB"] {
            let e = parse_size(bad).expect_err(bad);
            assert!(!e.contains('\n') && e.contains("10GiB"), "{bad}: {e}");
        }
        assert_eq!(show_size(10 << 30), "10.0 GiB");
    }
}
