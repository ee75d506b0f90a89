//! What an earlier agent process left of a run, and the facts about a process (boot, start
//! time, session) that tell whether a recorded pid is still that run's.

use nix::sys::signal::Signal;

use crate::contain::Containment;
use crate::run::RunRecord;
use crate::runner;

/// Kills what an earlier agent process left of a run, where it is provably that run's:
/// - a run contained by a cgroup: whatever is in its cgroup (named by the run id, which must
///   be a run id), and nothing else;
/// - otherwise its recorded process group, only if the recorded process is still the same
///   one (same boot, same start time), still leads its process group, and still leads the
///   session the run got (every run as another user has its own), or, for an agent that is
///   not root, is in the recorded session and runs as the agent's own user (who could kill
///   it anyway).
pub fn kill_leftovers(record: &RunRecord, containment: &Containment) {
    if containment.kill_leftovers(&record.id) || record.containment == "cgroup" {
        return;
    }
    let Ok(pid) = i32::try_from(record.pid) else {
        return;
    };
    if pid <= 1
        || record.boot_id.is_empty()
        || record.boot_id != boot_id()
        || record.pid_start_time == 0
        || record.pid_start_time != process_start_time(record.pid)
    {
        return;
    }
    let Ok(stat) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))) else {
        return;
    };
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).map(|s| s.as_raw());
    let own_session = sid == Ok(pid);
    let agents_own = {
        use std::os::unix::fs::MetadataExt as _;
        let me = nix::unistd::geteuid();
        !me.is_root()
            && sid == Ok(i32::try_from(record.sid).unwrap_or(-1))
            && std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == me.as_raw())
    };
    if stat.as_raw() == pid && (own_session || agents_own) {
        tracing::info!(run = %record.id, pid, "killing what is left of the run's process group");
        let _ = runner::signal_group(record.pid, Signal::SIGKILL);
    } else {
        tracing::info!(run = %record.id, pid, "the run's recorded process is not provably the run's; left alone");
    }
}

/// This boot's id (empty where the kernel does not say).
pub fn boot_id() -> String {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// When a process started, in clock ticks after boot (0: no such process).
pub fn process_start_time(pid: u32) -> u64 {
    process_start_and_session(pid).0
}

/// When a process started (clock ticks after boot) and its session id; zeros when there is no
/// such process.
pub fn process_start_and_session(pid: u32) -> (u64, u32) {
    // One read of a buffer that holds any stat line (procfs reports size 0, so reading "to the
    // end" would probe with a series of small reads).
    let read = || -> std::io::Result<String> {
        use std::io::Read as _;
        let mut buf = vec![0u8; 1024];
        let n = std::fs::File::open(format!("/proc/{pid}/stat"))?.read(&mut buf)?;
        buf.truncate(n);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read()
        .ok()
        .and_then(|stat| {
            // Fields 6 (session) and 22 (start time); fields after the command name (which
            // may hold spaces) start at 3.
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((fields.get(19)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
        .unwrap_or((0, 0))
}
