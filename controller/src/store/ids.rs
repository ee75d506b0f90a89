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
pub enum IdsError {
    #[error("job Id mark {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    File(#[from] statedir::StateDirError),
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
        let err = |source| IdsError::Io {
            path: path.to_owned(),
            source,
        };
        statedir::check_file(path)?;
        let mut found = Found::default();
        let mut read = None;
        if let Some(text) = read_limited(path)? {
            match parse(&text) {
                Some(mark) => read = Some(mark),
                None => {
                    // Never overwrite what could not be read: move it aside and say so.
                    let aside = path.with_extension(format!("ids.damaged-{}", crate::clock::now_ms()));
                    std::fs::rename(path, &aside).map_err(err)?;
                    found.damaged = Some(aside);
                }
            }
        }
        let (high, live) = read.clone().unwrap_or_default();
        let stored: BTreeSet<i64> = in_store.iter().copied().collect();
        found.lost = live.difference(&stored).copied().collect();
        let ids = Ids {
            path: path.to_owned(),
            high: high.max(stored.last().copied().unwrap_or(0)),
            live: stored,
        };
        // Written only when it changed: a daemon must start on a full disk too (the next Id
        // taken writes it; lost Ids not yet written off are reported again next time).
        if read.as_ref() != Some(&(ids.high, ids.live.clone())) {
            if let Err(e) = ids.save() {
                tracing::warn!(error = %err(e), "cannot update the job Id mark yet");
            }
        }
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
            return Err(IdsError::Io {
                path: self.path.clone(),
                source,
            });
        }
        Ok(id)
    }

    /// An Id no longer in use (its job was removed, or never stored); it is not handed out again.
    pub fn forget(&mut self, id: i64) -> Result<(), IdsError> {
        if self.live.remove(&id) {
            self.save().map_err(|source| IdsError::Io {
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

/// The mark's text; `None` when there is none (or it is empty).
fn read_limited(path: &Path) -> Result<Option<String>, IdsError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| IdsError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    // Not UTF-8: damaged, like any other text that does not parse.
    Ok((!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()))
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
