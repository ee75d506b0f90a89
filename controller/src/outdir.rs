//! `--output-dir DIR`: each host's output in `DIR/HOST.out`, `DIR/HOST.err` and its result
//! record in `DIR/HOST.json` (pssh `-o`/`-e`, clush `--outdir`).
//!
//! File names are made from host labels so that any label is safe: bytes other than ASCII
//! letters, digits, `.`, `_` and `-` are written `%XX` (so `/` and control characters never
//! reach the file system), as are `%` itself and a leading `.` (no `..`, no hidden files).
//! The mapping is one-to-one: two hosts never share a file. Existing files are refused before
//! any host is contacted unless `--force`; files are created with `O_EXCL` all the same.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::spool::Spool;
use crate::UsageError;

/// The three suffixes written per host.
pub const SUFFIXES: [&str; 3] = ["out", "err", "json"];

/// A host label as a file name stem.
pub fn file_stem(label: &str) -> String {
    let mut stem = String::with_capacity(label.len());
    for (i, b) in label.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            stem.push(char::from(b));
        } else {
            stem.push_str(&format!("%{b:02X}"));
        }
    }
    if stem.is_empty() {
        stem.push_str("%00");
    }
    stem
}

/// The output directory, checked.
#[derive(Debug)]
pub struct OutDir {
    dir: PathBuf,
    force: bool,
}

impl OutDir {
    /// Creates `dir` when missing; without `force`, refuses when a file it would write is
    /// already there.
    pub fn prepare(dir: &Path, force: bool, labels: &[String]) -> Result<OutDir, UsageError> {
        let shown = crate::escape::text(&dir.display().to_string()).into_owned();
        std::fs::create_dir_all(dir)
            .map_err(|e| UsageError(format!("cannot create the output directory {shown}: {e}")))?;
        if !dir.is_dir() {
            return Err(UsageError(format!("--output-dir {shown} is not a directory")));
        }
        let out = OutDir {
            dir: dir.to_path_buf(),
            force,
        };
        if !force {
            let existing: Vec<PathBuf> = labels
                .iter()
                .flat_map(|l| SUFFIXES.map(|s| out.path(l, s)))
                .filter(|p| p.symlink_metadata().is_ok())
                .collect();
            if let Some(first) = existing.first() {
                return Err(UsageError(format!(
                    "{} and {} other file(s) of this run are already in {shown}: remove them, choose another --output-dir, or add --force to overwrite",
                    crate::escape::text(&first.display().to_string()),
                    existing.len() - 1
                )));
            }
        }
        Ok(out)
    }

    pub fn path(&self, label: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", file_stem(label)))
    }

    /// Writes a host's stdout, stderr (from the spool) and result record.
    pub fn write(
        &self,
        label: &str,
        spool: &Spool,
        host: usize,
        record: &serde_json::Value,
    ) -> io::Result<()> {
        for (suffix, is_err) in [("out", false), ("err", true)] {
            let mut file = self.create(&self.path(label, suffix))?;
            spool.for_each(host, is_err, |chunk| file.write_all(chunk))?;
            file.flush()?;
        }
        let mut file = self.create(&self.path(label, "json"))?;
        writeln!(file, "{record}")?;
        file.flush()
    }

    fn create(&self, path: &Path) -> io::Result<io::BufWriter<std::fs::File>> {
        let mut options = OpenOptions::new();
        options.write(true);
        if self.force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let file = options
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(io::BufWriter::new(file))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn any_label_makes_a_safe_and_distinct_file_name() {
        assert_eq!(file_stem("web01"), "web01");
        assert_eq!(file_stem("10.0.0.1"), "10.0.0.1");
        assert_eq!(file_stem("[::1]:9000"), "%5B%3A%3A1%5D%3A9000");
        assert_eq!(file_stem(".."), "%2E.");
        assert_eq!(file_stem("a/../b"), "a%2F..%2Fb");
        assert_eq!(file_stem("a\nb"), "a%0Ab");
        assert_eq!(file_stem("a%2Fb"), "a%252Fb");
        assert_eq!(file_stem(""), "%00");
        for stem in [file_stem(".."), file_stem("a/../b"), file_stem("/etc/passwd")] {
            assert!(!stem.contains('/') && !stem.starts_with('.'), "{stem}");
        }
    }

    #[test]
    fn existing_files_are_refused_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let labels = vec!["web1".to_string()];
        let dir = OutDir::prepare(tmp.path(), false, &labels).unwrap();
        let mut spool = Spool::new(1);
        spool.append(0, false, b"hi\n").unwrap();
        dir.write("web1", &spool, 0, &serde_json::json!({"state": "Completed"}))
            .unwrap();
        assert_eq!(std::fs::read(tmp.path().join("web1.out")).unwrap(), b"hi\n");
        assert!(dir.write("web1", &spool, 0, &serde_json::json!({})).is_err());
        let err = OutDir::prepare(tmp.path(), false, &labels).unwrap_err();
        assert!(err.0.contains("--force"), "{}", err.0);
        let forced = OutDir::prepare(tmp.path(), true, &labels).unwrap();
        forced.write("web1", &spool, 0, &serde_json::json!({})).unwrap();
    }
}
