//! The state directory and the files in it, safe from other users: the directory must be the
//! running user's, mode 0700, and not a symbolic link (created so when missing); files in it
//! are opened with `O_NOFOLLOW` and created with mode 0600, and a file that is not a regular
//! file of the running user is refused.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {path} is a symbolic link: refusing to use it; point --state-dir at the real directory")]
    DirSymlink { path: PathBuf },
    #[error("state directory {path} is not a directory")]
    NotDir { path: PathBuf },
    #[error("state directory {path} belongs to uid {owner}, not to you (uid {me}): refusing to use it")]
    DirOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("state directory {path} has mode {mode:04o}: other users could read or plant files in it; `chmod 700 {path}` and start again")]
    DirMode { path: PathBuf, mode: u32 },
    #[error("state directory {path} is inside {parent}, which {why}: that user could replace it; move the state directory")]
    Parent {
        path: PathBuf,
        parent: PathBuf,
        why: String,
    },
    #[error("{path} is a symbolic link: refusing to follow it; remove it and start again")]
    FileSymlink { path: PathBuf },
    #[error(
        "{path} is not a regular file of yours (uid {owner}): refusing to use it; remove it and start again"
    )]
    FileForeign { path: PathBuf, owner: u32 },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks the state directory, creating it (mode 0700, parents too) when it is missing.
pub fn ensure_dir(dir: &Path) -> Result<(), StateDirError> {
    let io = |source| StateDirError::Io {
        path: dir.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        Err(e) => return Err(io(e)),
        Ok(_) => {}
    }
    check_dir(dir)
}

/// Refuses a state directory that is a symlink, not the running user's, or open to others.
pub fn check_dir(dir: &Path) -> Result<(), StateDirError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| StateDirError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.to_owned();
    if meta.file_type().is_symlink() {
        return Err(StateDirError::DirSymlink { path });
    }
    if !meta.is_dir() {
        return Err(StateDirError::NotDir { path });
    }
    if meta.uid() != me() {
        return Err(StateDirError::DirOwner {
            path,
            owner: meta.uid(),
            me: me(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateDirError::DirMode { path, mode });
    }
    check_parents(dir)
}

/// Refuses a state directory inside one that another user could change: owned by a user
/// other than root and the running user, or writable by everyone without the sticky bit.
fn check_parents(dir: &Path) -> Result<(), StateDirError> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parent = std::fs::canonicalize(parent).map_err(|source| StateDirError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for ancestor in parent.ancestors() {
        let meta = std::fs::metadata(ancestor).map_err(|source| StateDirError::Io {
            path: ancestor.to_owned(),
            source,
        })?;
        let why = if meta.uid() != 0 && meta.uid() != me() {
            format!("belongs to uid {}", meta.uid())
        } else if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
            "anyone may write (and it is not sticky)".to_string()
        } else {
            continue;
        };
        return Err(StateDirError::Parent {
            path: dir.to_owned(),
            parent: ancestor.to_owned(),
            why,
        });
    }
    Ok(())
}

/// Refuses `path` when it exists and is a symlink or not a regular file of the running user;
/// narrows its mode to 0600 when it is wider.
pub fn check_file(path: &Path) -> Result<(), StateDirError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StateDirError::File {
                path: path.to_owned(),
                source,
            })
        }
    };
    if meta.file_type().is_symlink() {
        return Err(StateDirError::FileSymlink {
            path: path.to_owned(),
        });
    }
    if !meta.is_file() || meta.uid() != me() {
        return Err(StateDirError::FileForeign {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
            StateDirError::File {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Opens (creating with mode 0600) a file of the state directory, never through a symlink.
pub fn open_private(path: &Path, append: bool) -> Result<File, StateDirError> {
    let file_err = |source: std::io::Error| {
        if source.raw_os_error() == Some(nix::libc::ELOOP) {
            StateDirError::FileSymlink {
                path: path.to_owned(),
            }
        } else {
            StateDirError::File {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC);
    if append {
        options.append(true);
    } else {
        options.read(true).write(true);
    }
    let file = options.open(path).map_err(file_err)?;
    let meta = file.metadata().map_err(file_err)?;
    if !meta.is_file() || meta.uid() != me() {
        return Err(StateDirError::FileForeign {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(file_err)?;
    }
    Ok(file)
}

/// Replaces `path` with `bytes` atomically and durably: a temp file (0600, `O_NOFOLLOW`),
/// fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}
