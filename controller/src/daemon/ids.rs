//! The high-water mark of job Ids, kept beside the store (`STATE_DIR/jobs.ids`, fsynced on
//! every change) so that an Id is never handed out twice, even when the store loses jobs (a
//! truncated or deleted WAL, a replaced `jobs.db`). It also lists the Ids still in use, so a
//! daemon can tell at start which jobs the store lost (Ids in use that are not in the store).
//!
//! Format (text, versioned):
//! ```text
//! rjob-ids 1
//! high 42
//! live 1-3,7,9-41
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::daemon::statedir;

/// Largest mark file read (its `live` line holds ranges).
const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
#[error("job Id mark {path}: {source}")]
pub struct IdsError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// What [`Ids::open`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Ids in use by the mark that the store does not have.
    pub lost: Vec<i64>,
    /// The mark file was damaged and moved there (Ids are taken from the store alone).
    pub damaged: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Ids {
    path: PathBuf,
    high: i64,
    live: BTreeSet<i64>,
}

impl Ids {
    /// Reads the mark beside the store and reconciles it with the Ids the store holds.
    pub fn open(path: &Path, in_store: &[i64]) -> Result<(Ids, Found), IdsError> {
        let err = |source| IdsError {
            path: path.to_owned(),
            source,
        };
        statedir::check_file(path).map_err(|e| err(std::io::Error::other(e.to_string())))?;
        let mut found = Found::default();
        let (mut high, mut live) = (0, BTreeSet::new());
        match read_limited(path) {
            Ok(Some(text)) => match parse(&text) {
                Some((h, l)) => (high, live) = (h, l),
                None => {
                    // Never overwrite what could not be read: move it aside and say so.
                    let aside = path.with_extension(format!("ids.damaged-{}", rjob_agent::run::now_ms()));
                    std::fs::rename(path, &aside).map_err(err)?;
                    found.damaged = Some(aside);
                }
            },
            Ok(None) => {}
            Err(e) => return Err(err(e)),
        }
        let stored: BTreeSet<i64> = in_store.iter().copied().collect();
        found.lost = live.difference(&stored).copied().collect();
        high = high.max(stored.last().copied().unwrap_or(0));
        live = stored;
        let ids = Ids {
            path: path.to_owned(),
            high,
            live,
        };
        ids.save().map_err(err)?;
        Ok((ids, found))
    }

    /// The next Id, recorded (fsynced) before it is used.
    pub fn take_next(&mut self) -> Result<i64, IdsError> {
        let id = self.high + 1;
        self.high = id;
        self.live.insert(id);
        if let Err(source) = self.save() {
            self.live.remove(&id);
            self.high = id - 1;
            return Err(IdsError {
                path: self.path.clone(),
                source,
            });
        }
        Ok(id)
    }

    /// An Id no longer in use (its job was removed, or never stored); it is not handed out again.
    pub fn forget(&mut self, id: i64) -> Result<(), IdsError> {
        if self.live.remove(&id) {
            self.save().map_err(|source| IdsError {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Back in use (a removal that did not go through).
    pub fn keep(&mut self, id: i64) {
        if self.live.insert(id) {
            let _ = self.save();
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let text = format!(
            "rjob-ids 1\nhigh {}\nlive {}\n",
            self.high,
            ranges(&self.live.iter().copied().collect::<Vec<_>>())
        );
        statedir::write_atomic(&self.path, text.as_bytes())
    }
}

fn read_limited(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read as _;
    let file = match statedir::open_private(path, false) {
        Ok(f) => f,
        Err(statedir::StateDirError::File { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None)
        }
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let mut text = String::new();
    file.take(MAX_BYTES + 1).read_to_string(&mut text)?;
    if text.is_empty() {
        let _ = std::fs::remove_file(path); // open_private created it: nothing was there
        return Ok(None);
    }
    Ok(Some(text))
}

fn parse(text: &str) -> Option<(i64, BTreeSet<i64>)> {
    if text.len() as u64 > MAX_BYTES {
        return None;
    }
    let mut lines = text.lines();
    if lines.next()? != "rjob-ids 1" {
        return None;
    }
    let high: i64 = lines.next()?.strip_prefix("high ")?.parse().ok()?;
    let live_text = lines.next()?.strip_prefix("live")?.trim();
    let mut live = BTreeSet::new();
    for part in live_text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?),
            None => {
                let a = part.parse::<i64>().ok()?;
                (a, a)
            }
        };
        if a < 1 || b < a || b > high {
            return None;
        }
        live.extend(a..=b);
    }
    Some((high, live))
}

/// Sorted Ids as ranges: `1-3,7,9-41`.
pub fn ranges(ids: &[i64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The one line said at start, in the log and by `rjob jobs`, when the store lost jobs.
pub fn lost_notice(found: &Found, store: &Path) -> Option<String> {
    let mut parts = Vec::new();
    if !found.lost.is_empty() {
        let (noun, ids) = if found.lost.len() == 1 {
            ("job", found.lost[0].to_string())
        } else {
            ("jobs", ranges(&found.lost))
        };
        parts.push(format!(
            "{noun} {ids} missing from the job store {} (it was damaged or replaced): their state and output are lost; their Ids are not used again",
            store.display()
        ));
    }
    if let Some(aside) = &found.damaged {
        parts.push(format!(
            "the job Id mark was damaged and moved to {}: Ids go on from the store's highest",
            aside.display()
        ));
    }
    (!parts.is_empty()).then(|| format!("job store: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_runs() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3,7,9-10");
        assert_eq!(
            parse("rjob-ids 1\nhigh 10\nlive 1-3,7,9-10\n").map(|(h, l)| (h, l.len())),
            Some((10, 6))
        );
        assert_eq!(
            parse("rjob-ids 1\nhigh 10\nlive \n").map(|(h, l)| (h, l.len())),
            Some((10, 0))
        );
        assert_eq!(parse("rjob-ids 1\nhigh 3\nlive 1-5\n"), None, "live above high");
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn ids_are_never_handed_out_twice_and_lost_ones_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jobs.ids");
        let (mut ids, found) = Ids::open(&path, &[]).expect("open");
        assert_eq!(found, Found::default());
        for want in 1..=5 {
            assert_eq!(ids.take_next().expect("next"), want);
        }
        ids.forget(2).expect("forget");
        // The store kept only 1 (2 was removed): 3, 4 and 5 are lost, and 6 comes next.
        let (mut ids, found) = Ids::open(&path, &[1]).expect("reopen");
        assert_eq!(found.lost, [3, 4, 5]);
        assert_eq!(ids.take_next().expect("next"), 6);
        // A store with nothing at all, and no mark: Ids start at 1.
        let (_, found) = Ids::open(&dir.path().join("other.ids"), &[]).expect("fresh");
        assert!(found.lost.is_empty());
        // A damaged mark is moved aside, never overwritten.
        std::fs::write(&path, "rjob-ids 1\nhigh x\n").expect("damage");
        let (mut ids, found) = Ids::open(&path, &[1, 6]).expect("damaged");
        assert!(found.damaged.as_ref().is_some_and(|p| p.exists()));
        assert_eq!(ids.take_next().expect("next"), 7);
    }
}
