//! Runs in cgroups of their own (cgroup v2), where the agent has a delegated cgroup.
//!
//! The agent's own cgroup (`/proc/self/cgroup`, on the cgroup2 mount found in
//! `/proc/self/mountinfo`) must be writable by it. Runs then go to `<own>/rjob-runs/<run id>`:
//! the child moves itself there between fork and exec (it writes `0` to a `cgroup.procs` the
//! agent opened), so not even a fork at the script's first instruction can start outside.
//! A run's end, stop or timeout writes `1` to its `cgroup.kill`, which kills every process in
//! it, `setsid` and double-forked ones included; the empty cgroup is then removed.
//!
//! No controller is enabled on these cgroups (only membership and `cgroup.kill` are used), so
//! cgroup v2's "no internal processes" rule, which forbids processes beside child cgroups that
//! distribute resources, does not apply: the agent stays in the cgroup it was started in.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory under the agent's own cgroup that holds one cgroup per run.
const RUNS_DIR: &str = "rjob-runs";

/// Where this agent's runs' cgroups live.
#[derive(Debug, Clone)]
pub struct CgroupBase {
    dir: PathBuf,
}

impl CgroupBase {
    /// Finds the agent's own cgroup v2 and makes `<own>/rjob-runs` in it; the error says, in
    /// a few words, why runs cannot have cgroups here.
    pub fn detect() -> Result<CgroupBase, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let (root, mountpoint) =
            cgroup2_mount(&mountinfo).ok_or_else(|| "no cgroup2 file system is mounted".to_string())?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| "the agent is in no cgroup v2 (no 0:: line in /proc/self/cgroup)".to_string())?;
        let rel = own
            .strip_prefix(root.as_str())
            .ok_or_else(|| format!("the agent's cgroup {own} is outside the cgroup2 mount's root {root}"))?;
        let own_dir = mountpoint.join(rel.trim_start_matches('/'));
        for path in [own_dir.clone(), own_dir.join("cgroup.procs")] {
            nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK).map_err(|e| {
                format!(
                    "the agent's cgroup is not delegated to it ({}: {e})",
                    path.display()
                )
            })?;
        }
        let dir = own_dir.join(RUNS_DIR);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        if !dir.join("cgroup.kill").exists() {
            return Err(format!(
                "{} has no cgroup.kill (the kernel is older than 5.14)",
                dir.display()
            ));
        }
        Ok(CgroupBase { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cgroup of the run `id`, which must be a run id the agent made (a UUID): a name
    /// read from a file never reaches outside the agent's own runs.
    pub fn run_dir(&self, id: &str) -> Option<PathBuf> {
        let parsed = uuid::Uuid::parse_str(id).ok()?;
        (parsed.hyphenated().to_string() == id).then(|| self.dir.join(id))
    }

    /// Creates the cgroup of a new run.
    pub fn create(&self, id: &str) -> std::io::Result<RunCgroup> {
        let dir = self
            .run_dir(id)
            .ok_or_else(|| std::io::Error::other(format!("{id:?} is not a run id")))?;
        std::fs::create_dir(&dir)?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .inspect_err(|_| {
                let _ = std::fs::remove_dir(&dir);
            })?;
        Ok(RunCgroup {
            dir,
            procs: Some(procs),
        })
    }

    /// The cgroup a run of an earlier agent process had, if it is still there.
    pub fn existing(&self, id: &str) -> Option<RunCgroup> {
        let dir = self.run_dir(id)?;
        std::fs::symlink_metadata(&dir)
            .is_ok_and(|m| m.is_dir())
            .then_some(RunCgroup { dir, procs: None })
    }
}

/// One run's cgroup.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    /// Its `cgroup.procs`, open for the child to move itself in (close-on-exec).
    procs: Option<File>,
}

impl RunCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The descriptor the child writes `0` to, before exec.
    pub fn procs_fd(&self) -> Option<RawFd> {
        self.procs.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Kills every process in the cgroup (`cgroup.kill`).
    pub fn kill(&self) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))?
            .write_all(b"1")
    }

    /// Sends `signal` to each process in the cgroup outside the process group `signalled`
    /// (which the caller signals as a whole): a stop's SIGTERM reaches those that left the
    /// run's process group too, and nothing gets it twice.
    pub fn signal_others(&self, signal: nix::sys::signal::Signal, signalled: i32) {
        for pid in self.pids() {
            let pid = nix::unistd::Pid::from_raw(pid);
            if nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g.as_raw() != signalled) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether any process is left in the cgroup.
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|events| events.lines().any(|l| l.trim() == "populated 1"))
            .unwrap_or(false)
    }

    /// Kills what is left and removes the cgroup, waiting up to `patience` for its processes
    /// to be gone (the kill is asynchronous). Blocking: for a start-up path or a blocking pool.
    pub fn kill_and_remove(mut self, patience: Duration) -> std::io::Result<()> {
        self.procs = None;
        let deadline = std::time::Instant::now() + patience;
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    let _ = self.kill();
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

/// The root and mount point of the cgroup2 mount, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = fields.nth(3)?;
        let mountpoint = fields.next()?;
        Some((unescape(root), PathBuf::from(unescape(mountpoint))))
    })
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_among_v1_ones() {
        let info = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                    41 31 0:38 / /sys/fs/cgroup/un\\040ified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info),
            Some(("/".to_string(), PathBuf::from("/sys/fs/cgroup/un ified")))
        );
        assert_eq!(cgroup2_mount("31 23 0:28 / /x rw - tmpfs tmpfs rw\n"), None);
    }

    #[test]
    fn run_cgroups_are_named_only_by_run_ids() {
        let base = CgroupBase {
            dir: PathBuf::from("/sys/fs/cgroup/rjob-runs"),
        };
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(base.run_dir(&id), Some(base.dir.join(&id)));
        for bad in [
            "..",
            "../../system.slice",
            "",
            "x",
            &id.to_uppercase(),
            &format!("{id}/.."),
        ] {
            assert_eq!(base.run_dir(bad), None, "{bad}");
        }
    }
}
