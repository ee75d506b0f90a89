//! Processes: measuring one child (wall, user+sys, peak RSS from wait4), a registry of
//! everything the benchmark started so a signal can take it all down, and /proc readings.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// Everything still running that the benchmark started: `(pid, whole process group)`.
static LIVE: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());
/// Hooks run on a signal before exiting (closing ssh control masters, removing temp dirs).
static ON_SIGNAL: Mutex<Vec<Box<dyn Fn() + Send>>> = Mutex::new(Vec::new());
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn register(pid: i32, group: bool) {
    if let Ok(mut live) = LIVE.lock() {
        live.push((pid, group));
    }
}

pub fn unregister(pid: i32) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|(p, _)| *p != pid);
    }
}

pub fn on_signal(hook: impl Fn() + Send + 'static) {
    if let Ok(mut hooks) = ON_SIGNAL.lock() {
        hooks.push(Box::new(hook));
    }
}

pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Blocks SIGINT, SIGTERM and SIGHUP in every thread (call first, before any thread is
/// started) and handles them on a thread of its own: kill every registered process, run the
/// hooks, exit 130. Children get an empty signal mask from `std::process` again.
pub fn install_signal_thread() -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block().context("blocking signals")?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            STOPPING.store(true, Ordering::SeqCst);
            eprintln!("\nrjob-bench: {sig:?}: stopping every process the benchmark started");
            kill_all();
            if let Ok(hooks) = ON_SIGNAL.lock() {
                for hook in hooks.iter() {
                    hook();
                }
            }
            std::process::exit(130);
        }
    });
    Ok(())
}

pub fn kill_all() {
    let live = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    // Descendants first found, then killed: some leave the process group (ansible's workers
    // start sessions of their own) and would outlive a kill of the group.
    let roots: Vec<i32> = live.iter().map(|(pid, _)| *pid).collect();
    let descendants = descendants_of(&roots);
    for (pid, group) in live {
        // SAFETY: kill(2) with a pid we started; no memory is involved.
        unsafe {
            libc::kill(if group { -pid } else { pid }, libc::SIGKILL);
        }
    }
    for pid in descendants {
        // SAFETY: kill(2) on a process that descends from one we started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Every process below `roots` in the process tree (from /proc/PID/stat's parent field).
fn descendants_of(roots: &[i32]) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The parent is the second field after the command name, which may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found: Vec<i32> = Vec::new();
    let mut frontier: Vec<i32> = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for (pid, _) in parent_of.iter().filter(|(_, ppid)| *ppid == parent) {
            if !found.contains(pid) {
                found.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Raises RLIMIT_NOFILE to its hard limit (children inherit it); returns (before, after).
pub fn raise_nofile() -> (u64, u64) {
    raise_nofile_to(0)
}

/// Raises the open-file limit to at least `want` (the hard limit too, as root), else as far
/// as the hard limit goes: (soft limit before, soft limit now).
pub fn raise_nofile_to(want: u64) -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to / read from a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        let before = lim.rlim_cur;
        if lim.rlim_max < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return (before, want);
            }
        }
        lim.rlim_cur = lim.rlim_max.max(lim.rlim_cur);
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        (before, lim.rlim_cur)
    }
}

/// Child processes die with the benchmark even when it is SIGKILLed. Must be spawned from the
/// main thread (the signal follows the thread that forked).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
}

/// One measured run of a child process.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub wall_s: f64,
    /// user + sys of the child and the descendants it waited for (wait4's rusage).
    pub cpu_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    /// ru_maxrss of the child (and its waited-for descendants), KiB.
    pub maxrss_kib: u64,
    pub ok: bool,
    pub status: String,
    /// CPU used meanwhile by the target side (agents or sshds, and what they reaped), seconds.
    pub target_cpu_s: Option<f64>,
}

/// Runs `cmd` to its end in a process group of its own, stdout to /dev/null (or `stdout`),
/// stderr to `stderr_file`, and measures it with wait4.
pub fn measure(
    cmd: &mut Command,
    stderr_file: &Path,
    stdout: Option<&Path>,
    timeout: Duration,
) -> Result<Sample> {
    cmd.stdin(Stdio::null())
        .stdout(match stdout {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        })
        .stderr(std::fs::File::create(stderr_file)?)
        .process_group(0);
    let started = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id() as i32;
    register(pid, true);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
            // SAFETY: kill(2) on the process group of a child not yet reaped.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            return true;
        }
        false
    });
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with valid out-pointers.
    let r = loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall = started.elapsed();
    let _ = done_tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    // Whatever the child left in its group (e.g. pdsh's ssh processes) goes too.
    // SAFETY: kill(2) on the group we created; ESRCH when it is empty.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    unregister(pid);
    std::mem::forget(child); // reaped above
    if r != pid {
        anyhow::bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (ok, text) = if timed_out {
        (false, format!("killed after the {}s timeout", timeout.as_secs()))
    } else if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        (code == 0, format!("exit {code}"))
    } else {
        (false, format!("signal {}", libc::WTERMSIG(status)))
    };
    Ok(Sample {
        wall_s: wall.as_secs_f64(),
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        user_s: tv(ru.ru_utime),
        sys_s: tv(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss as u64,
        ok,
        status: text,
        target_cpu_s: None,
    })
}

/// A field of /proc/PID/status in KiB (VmRSS:, VmHWM:), 0 when unreadable.
/// The machine's busy and total CPU time so far, in clock ticks (from `/proc/stat`).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Waits until the machine is quiet (under `busy` of its CPU in use over 100 ms), at most
/// `max`, so that one tool's leftovers (sshd sessions closing, agents flushing) are not
/// measured as the next tool's time. Returns how long it waited, and whether it got quiet.
pub fn wait_quiet(busy: f64, max: Duration) -> (Duration, bool) {
    let start = Instant::now();
    let Some(mut last) = cpu_ticks() else {
        return (Duration::ZERO, false);
    };
    while start.elapsed() < max {
        std::thread::sleep(Duration::from_millis(100));
        let Some(now) = cpu_ticks() else { break };
        let (used, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && (used as f64) < busy * total as f64 {
            return (start.elapsed(), true);
        }
        last = now;
    }
    (start.elapsed(), false)
}

pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets a process's peak RSS (VmHWM) to its current RSS.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// CPU seconds of a process plus the children it has reaped (utime+stime+cutime+cstime).
pub fn cpu_with_children_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // Fields after the command: state is field 3; utime..cstime are fields 14..17.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = (11..15)
        .filter_map(|i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

pub fn cpu_sum_s(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_with_children_s(*p)).sum()
}

/// The processes whose parent is `pid` (from /proc/*/stat).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            ppid == Some(pid)
        })
        .collect()
}

/// CPU seconds of a process, its live children and what it reaped (a PostgreSQL
/// postmaster and its backends).
pub fn tree_cpu_s(pid: u32) -> f64 {
    cpu_with_children_s(pid) + cpu_sum_s(&children_of(pid))
}

/// A long-lived process (agent, sshd) killed and reaped when dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Result<Daemon> {
        die_with_parent(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        register(child.id() as i32, false);
        Ok(Daemon { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unregister(self.child.id() as i32);
    }
}

/// Runs a command to its end, failing with its stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// First line of a command's output (stdout or stderr), for version strings.
pub fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// The `floor` subcommand: `n` spawns of `sh -c CMD`, at most `k` at once; exits non-zero
/// when any failed.
pub fn floor_main(n: usize, k: usize, script: &str) -> i32 {
    let k = k.max(1);
    let mut in_flight = 0usize;
    let mut started = 0usize;
    let mut failed = 0usize;
    while started < n || in_flight > 0 {
        while started < n && in_flight < k {
            let spawned = Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => std::mem::forget(child), // reaped by wait(-1) below
                Err(e) => {
                    eprintln!("spawn: {e}");
                    return 2;
                }
            }
            started += 1;
            in_flight += 1;
        }
        let mut status: libc::c_int = 0;
        // SAFETY: waiting for any of our own children.
        let r = unsafe { libc::wait(&mut status) };
        if r > 0 {
            in_flight -= 1;
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                failed += 1;
            }
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    i32::from(failed > 0)
}
