//! Full disks on demand: a tmpfs of a given size on a directory, and filling it up. Needs
//! root (`mount`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ran;

/// A tmpfs mounted on a directory, unmounted (lazily) when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = ran(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(dir));
        assert_eq!(
            out.code,
            0,
            "mounting a tmpfs on {} needs root (the disk-full tests mount one): {out}",
            dir.display()
        );
        Tmpfs { dir: dir.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon that has not quite exited must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes zeros to `path` until its file system is full.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(
                e.raw_os_error(),
                Some(nix::libc::ENOSPC),
                "filling {}: {e}",
                path.display()
            );
            break;
        }
    }
    // The last partial block too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    let _ = file.sync_all();
}
