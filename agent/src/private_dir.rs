//! A directory only its owner may touch: the agent's spool. Planted symlinks or a directory
//! others can write to would let them read runs' output, or make the agent write (as root)
//! where they choose, or plant run records.

use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateDirError {
    #[error("{what} {path} is a symbolic link; it must be a real directory (remove the link)")]
    Symlink { what: &'static str, path: PathBuf },
    #[error("{what} {path} is not a directory")]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("{what} {path} is owned by uid {owner}, not by the agent's user (uid {me}): chown it or pick another directory")]
    Owner {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        me: u32,
    },
    #[error("{what} {path} has mode {mode:04o}; it must be 0700 (chmod 700 {path})")]
    Mode {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("cannot create {what} {path}: {source}")]
    Create {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot inspect {what} {path}: {source}")]
    Inspect {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates `dir` (mode 0700, and missing parents 0700) when missing; then it must be a real
/// directory (not a symlink), owned by this process's effective user, with mode 0700.
/// `what` names it in errors ("spool directory").
pub fn ensure_private_dir(dir: &Path, what: &'static str) -> Result<(), PrivateDirError> {
    let path = dir.to_owned();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| PrivateDirError::Create {
                    what,
                    path: path.clone(),
                    source,
                })?;
            // The umask may have taken bits away, never added any; set exactly 0700.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
                PrivateDirError::Create {
                    what,
                    path: path.clone(),
                    source,
                }
            })?;
            std::fs::symlink_metadata(dir).map_err(|source| PrivateDirError::Inspect {
                what,
                path: path.clone(),
                source,
            })?
        }
        Err(source) => return Err(PrivateDirError::Inspect { what, path, source }),
    };
    if meta.file_type().is_symlink() {
        return Err(PrivateDirError::Symlink { what, path });
    }
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory { what, path });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateDirError::Owner {
            what,
            path,
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode != 0o700 {
        return Err(PrivateDirError::Mode { what, path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn creates_a_missing_dir_0700_and_refuses_what_others_could_touch() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/spool");
        ensure_private_dir(&dir, "spool directory").unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir, "spool directory").unwrap();

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure_private_dir(&dir, "spool directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0755") && e.contains("chmod 700"), "{e}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = ensure_private_dir(&link, "spool directory")
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            ensure_private_dir(&file, "spool directory"),
            Err(PrivateDirError::NotADirectory { .. })
        ));
    }
}
