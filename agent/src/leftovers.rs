//! What an earlier agent process left of a run: killed where the facts about a process
//! ([`crate::procfs`]: boot, start time, session) tell that a recorded pid is still that run's.

use nix::sys::signal::Signal;

use crate::contain::Containment;
use crate::procfs::{boot_id, process_start_time};
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
