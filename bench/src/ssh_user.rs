//! The user the ssh peers log in as. Not the benchmark's own user: that user's rc files
//! (here root's `~/.bashrc`, which runs `pyenv init`, whose rehash takes a lock in the home
//! directory) run at every ssh login, and the N "hosts" of this rig share one home, so the
//! logins queued on that lock: pdsh's 256-host fan-out took 90 s instead of about 15.
//! A user of its own with a stock home (`/etc/skel`) is what each real host would have.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::procs;

/// Makes `name` when it does not exist: home `/var/tmp/NAME-home` from /etc/skel, shell
/// bash, no password (`*`: not locked, which sshd without PAM would refuse).
pub fn ensure_user(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("--ssh-user {name:?}: letters, digits, '-' and '_' only");
    }
    let exists = Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    eprintln!("==> making the user {name} for the ssh peers (home /var/tmp/{name}-home)");
    procs::run_ok(
        Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", "-c", "rjob-bench ssh peers", "-d"])
            .arg(format!("/var/tmp/{name}-home"))
            .arg(name),
    )
    .context("useradd (the benchmark needs root for the ssh peers)")?;
    procs::run_ok(Command::new("usermod").args(["-p", "*", name]))?;
    Ok(())
}

/// Lets other users through `dir` and every directory above it that is ours (the temporary
/// directory is 0700).
pub fn open_to_others(dir: &Path) -> Result<()> {
    for d in dir.ancestors() {
        if d.as_os_str().is_empty() || d == Path::new("/") || d == Path::new("/tmp") {
            break;
        }
        let meta = std::fs::metadata(d)?;
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o011))?;
        }
    }
    Ok(())
}

pub fn readable_by_others(file: &Path) -> Result<()> {
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}
