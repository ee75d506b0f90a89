//! Containment without cgroups: the agent is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so
//! a process that leaves its run's tree (a `setsid` or double-forked grandchild whose parent
//! exits) becomes the agent's child instead of init's, and the agent can kill it.
//!
//! Which run an orphan came from is not recorded by the kernel. The rule: an orphan is killed,
//! with every process below it, once no run that was going when it started is still going,
//! that is when it started before the oldest run still going (start times in clock ticks
//! after boot, from `/proc/PID/stat`). With one run at a time that is the run's end; with
//! overlapping runs, an orphan may live until the runs that overlapped its start have ended,
//! never longer, and never dies while its own run goes on.
//!
//! Only children of the agent outside the agent's own process group are considered: what the
//! agent forks itself (a PAM helper) stays in its group. Orphans that exit on their own are
//! reaped here too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// The main processes of the runs going, with their start times: never orphans, and the
/// oldest start is the rule's boundary. Held around every spawn, so that a sweep never sees a
/// just-forked run as an orphan.
static LIVE: Mutex<BTreeMap<u32, u64>> = Mutex::new(BTreeMap::new());

/// Makes this process a child subreaper.
pub fn enable() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer and no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The table of runs going (lock it around a spawn, then [`register`] the new process).
pub fn live() -> MutexGuard<'static, BTreeMap<u32, u64>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records a run's main process (while the caller holds [`live`]).
pub fn register(live: &mut BTreeMap<u32, u64>, pid: u32, start_time: u64) {
    live.insert(pid, start_time);
}

/// The run whose main process was `pid` has ended.
pub fn unregister(pid: u32) {
    live().remove(&pid);
}

/// One line of `/proc/PID/stat`, the fields used here.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    pid: i32,
    ppid: i32,
    pgid: i32,
    zombie: bool,
    start: u64,
}

fn parse_stat(pid: i32, stat: &str) -> Option<ProcStat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        zombie: *fields.first()? == "Z",
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    use std::io::Read as _;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    parse_stat(pid, &String::from_utf8_lossy(&buf[..n]))
}

fn all_processes() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Which of the agent's children (`procs`, one snapshot) are orphans of ended runs to kill,
/// and which are dead orphans to reap.
fn judge(procs: &[ProcStat], me: i32, my_pgid: i32, live: &BTreeMap<u32, u64>) -> (Vec<i32>, Vec<i32>) {
    let oldest_live = live.values().min().copied().unwrap_or(u64::MAX);
    let mut doomed = Vec::new();
    let mut dead = Vec::new();
    for p in procs {
        let run_main = u32::try_from(p.pid).is_ok_and(|pid| live.contains_key(&pid));
        if p.ppid != me || p.pgid == my_pgid || run_main {
            continue;
        }
        if p.zombie {
            dead.push(p.pid);
        } else if p.start < oldest_live {
            doomed.push(p.pid);
        }
    }
    (doomed, dead)
}

/// `roots` and every process below them in `procs`.
fn with_descendants(procs: &[ProcStat], roots: &[i32]) -> Vec<ProcStat> {
    let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    let by_pid: HashMap<i32, &ProcStat> = procs.iter().map(|p| (p.pid, p)).collect();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<&ProcStat> = roots.iter().filter_map(|r| by_pid.get(r).copied()).collect();
    while let Some(p) = stack.pop() {
        if seen.insert(p.pid) {
            out.push(*p);
            stack.extend(children.get(&p.pid).into_iter().flatten().copied());
        }
    }
    out
}

/// The agent's children, from `/proc/self/task/*/children` (`None` where the kernel does not
/// offer those files).
fn own_children() -> Option<Vec<i32>> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("children")).ok()?;
        children.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    Some(children)
}

/// Kills the orphans of ended runs (each with its whole tree) and reaps dead orphans.
/// Returns how many processes it killed.
pub fn sweep() -> usize {
    let live = live();
    // Where the kernel lists the agent's children, a sweep with nothing but runs' main
    // processes among them is over at once, without reading every process's stat.
    if own_children().is_some_and(|children| {
        children
            .iter()
            .all(|c| u32::try_from(*c).is_ok_and(|pid| live.contains_key(&pid)))
    }) {
        return 0;
    }
    let me = nix::unistd::getpid().as_raw();
    let my_pgid = nix::unistd::getpgrp().as_raw();
    let mut killed = 0;
    // A tree being killed may fork once more before its stop lands: look again (bounded).
    for _ in 0..4 {
        let procs = all_processes();
        let (doomed, dead) = judge(&procs, me, my_pgid, &live);
        for pid in dead {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
        if doomed.is_empty() {
            break;
        }
        let tree = with_descendants(&procs, &doomed);
        // Stop first, so nothing forks on while the tree is being killed; each pid is checked
        // to be the same process still (its start time), as only the roots are the agent's
        // children and protected from reuse.
        for sig in [Signal::SIGSTOP, Signal::SIGKILL] {
            for p in &tree {
                if read_stat(p.pid).is_some_and(|now| now.start == p.start) {
                    let _ = kill(Pid::from_raw(p.pid), sig);
                }
            }
        }
        killed += tree.len();
        tracing::info!(
            processes = tree.len(),
            "killed processes a run left behind outside its process group"
        );
        for pid in doomed {
            // SIGKILL is quick; whatever is not gone yet is reaped by a later sweep.
            for _ in 0..20 {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    _ => break,
                }
            }
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, pgid: i32, start: u64) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            pgid,
            zombie: false,
            start,
        }
    }

    #[test]
    fn an_orphan_dies_once_no_run_that_overlapped_its_start_is_going() {
        let me = 100;
        let mut procs = vec![
            p(100, 1, 100, 10),   // the agent
            p(200, 100, 200, 20), // run A's main process
            p(300, 100, 300, 25), // an orphan started while A was going
            p(400, 100, 100, 26), // a helper the agent forked itself (its group)
            p(500, 300, 300, 27), // a child of the orphan
            p(600, 100, 600, 30), // run B's main process
            p(700, 100, 700, 35), // an orphan started during B only
        ];
        let mut live = BTreeMap::from([(200, 20), (600, 30)]);
        assert_eq!(judge(&procs, me, 100, &live).0, Vec::<i32>::new());
        // A ended (its main process reaped): 300 started before B, nothing that overlapped it
        // goes on; 700 is B's.
        live.remove(&200);
        procs.retain(|p| p.pid != 200);
        assert_eq!(judge(&procs, me, 100, &live).0, vec![300]);
        let mut tree: Vec<i32> = with_descendants(&procs, &[300]).iter().map(|p| p.pid).collect();
        tree.sort_unstable();
        assert_eq!(tree, vec![300, 500]);
        live.remove(&600);
        procs.retain(|p| p.pid != 600);
        assert_eq!(judge(&procs, me, 100, &live).0, vec![300, 700]);
    }

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(4242, line).expect("parsed");
        assert_eq!((s.ppid, s.pgid, s.start, s.zombie), (1, 4242, 987654, false));
    }
}
