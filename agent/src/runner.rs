//! Starting a script in a new, clean process.
//!
//! This is the one place that spawns user scripts; the agent uses it for remote runs and the
//! controller for local background jobs (`rjob start`), so both behave the same:
//! - the environment is cleared and rebuilt from a documented minimal set
//!   ([`BASE_ENV_VARS`]) plus the caller's additions;
//! - the process gets its own process group (and, when the user changes, its own session), so
//!   a signal to the group reaches every process of the run, background grandchildren
//!   included;
//! - the script text is handed to the interpreter as a file descriptor (`/dev/fd/N`, a memfd),
//!   never pasted into a command line, and the arguments become `$1`, `$2`, ...;
//! - a run as the agent's own user is started with `posix_spawn` (no copy of the agent's
//!   memory map, which is most of the cost of a fork); a change of user needs a fork, to drop
//!   privileges between the fork and the exec.
//! - stdin is `/dev/null` unless the caller gave bytes for it;
//! - where runs have cgroups ([`crate::contain`]), the child moves itself into its run's
//!   cgroup between fork and exec (then a run as the agent's user is forked too: posix_spawn
//!   cannot do that), so nothing of the run ever starts outside it.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Pid, User};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::contain::Contained;
use crate::subreaper;

/// The variables a run's environment starts from; nothing of the spawner's own environment
/// is passed on.
pub const BASE_ENV_VARS: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG"];

/// `PATH` of every run unless the caller sets another.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The descriptor the script text is readable on, in a child that changes user.
const SCRIPT_FD: i32 = 3;

/// Held around every spawn. A run as the agent's own user inherits its script's descriptor
/// without close-on-exec, and no other child may be forked meanwhile (it would inherit that
/// script too).
static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("cannot prepare the script: {0}")]
    Script(#[source] std::io::Error),
    #[error("cannot start {interpreter}: {source}")]
    Spawn {
        interpreter: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter working directory {path} as {user}: {source}")]
    WorkingDir {
        path: PathBuf,
        user: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot look up the user to run as: {0}")]
    User(String),
}

/// The user a run's process runs as, as found in the user database.
#[derive(Debug, Clone)]
pub struct RunUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
    /// Supplementary group ids (from the group database), the primary one included.
    pub groups: Vec<u32>,
}

impl RunUser {
    /// Looks `name` up in the user and group databases; `Ok(None)` when there is no such user.
    pub fn lookup(name: &str) -> Result<Option<RunUser>, RunnerError> {
        let Some(user) = User::from_name(name).map_err(|e| RunUser::lookup_error(name, e))? else {
            return Ok(None);
        };
        let cname =
            std::ffi::CString::new(name).map_err(|_| RunnerError::User(format!("{name:?}: bad name")))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| RunUser::lookup_error(name, e))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut run_user = RunUser::from(user);
        run_user.groups = groups;
        Ok(Some(run_user))
    }

    /// Whether the user is a member of the group named `group`.
    pub fn in_group(&self, group: &str) -> bool {
        matches!(nix::unistd::Group::from_name(group), Ok(Some(g)) if self.groups.contains(&g.gid.as_raw()) || self.gid == g.gid.as_raw())
    }

    /// The user this process runs as.
    pub fn current() -> Result<RunUser, RunnerError> {
        let uid = nix::unistd::geteuid();
        let user = User::from_uid(uid)
            .map_err(|e| RunUser::lookup_error(&uid.to_string(), e))?
            .ok_or_else(|| RunnerError::User(format!("uid {uid} has no entry in the user database")))?;
        Ok(RunUser::from(user))
    }

    fn lookup_error(who: &str, e: nix::Error) -> RunnerError {
        RunnerError::User(format!("{who}: {e}"))
    }
}

impl From<User> for RunUser {
    fn from(u: User) -> Self {
        RunUser {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
            groups: Vec::new(),
        }
    }
}

/// Everything needed to start one run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Absolute path of the interpreter, from an allow-list the caller checked.
    pub interpreter: PathBuf,
    pub script: String,
    pub args: Vec<String>,
    pub stdin: Option<Vec<u8>>,
    /// Additions to (or overrides of) the base environment.
    pub env: BTreeMap<String, String>,
    /// `None`: the user's home directory.
    pub working_dir: Option<PathBuf>,
    pub user: RunUser,
    pub lang: String,
}

impl RunSpec {
    /// The complete environment of the process.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
        env.insert("HOME".to_string(), self.user.home.display().to_string());
        env.insert("USER".to_string(), self.user.name.clone());
        env.insert("LOGNAME".to_string(), self.user.name.clone());
        env.insert("SHELL".to_string(), self.user.shell.display().to_string());
        env.insert("LANG".to_string(), self.lang.clone());
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}

/// A started process: its pipes and the handle to wait for it.
pub struct Spawned {
    pub child: Child,
    /// Process id, which is also the process group id.
    pub pid: u32,
    /// Its start time (clock ticks after boot) and session, read right after the spawn.
    pub start_time: u64,
    pub sid: u32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Starts the run's process inside `contained`: in its cgroup from before the exec, or
/// registered with the subreaper before anything can see it.
pub fn spawn_contained(spec: &RunSpec, contained: &Contained) -> Result<Spawned, RunnerError> {
    let cgroup_procs = contained.cgroup_procs_fd();
    let script_fd = script_memfd(&spec.script).map_err(RunnerError::Script)?;
    let cwd = spec.working_dir.clone().unwrap_or_else(|| spec.user.home.clone());
    // Entered in the child after the switch to the run's user, so that it can only reach
    // directories that user may reach.
    let cwd_c =
        std::ffi::CString::new(cwd.as_os_str().as_encoded_bytes()).map_err(|_| RunnerError::WorkingDir {
            path: cwd.clone(),
            user: spec.user.name.clone(),
            source: std::io::Error::other("the path holds a NUL byte"),
        })?;
    if !spec.interpreter.is_file() {
        return Err(RunnerError::Spawn {
            interpreter: spec.interpreter.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }

    let same_user = spec.user.uid == nix::unistd::geteuid().as_raw();
    let raw = script_fd.as_raw_fd();
    let mut cmd = Command::new(&spec.interpreter);
    cmd.arg(format!("/dev/fd/{}", if same_user { raw } else { SCRIPT_FD }))
        .args(&spec.args)
        .env_clear()
        .envs(spec.environment())
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);

    if same_user {
        // Without pre_exec std starts the child with posix_spawn (vfork-like).
        cmd.process_group(0).current_dir(&cwd);
        if let Some(procs) = cgroup_procs {
            // SAFETY: runs in the forked child before exec; one write(2), async-signal-safe.
            unsafe {
                cmd.pre_exec(move || enter_cgroup(procs));
            }
        }
    } else {
        // Changing user (the agent runs as root): every id, real, effective and saved, becomes
        // the target's, with its supplementary groups, so nothing of root's privileges is kept.
        let groups: Vec<nix::unistd::Gid> = spec
            .user
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        let gid = nix::unistd::Gid::from_raw(spec.user.gid);
        let uid = nix::unistd::Uid::from_raw(spec.user.uid);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (setsid, write, dup2, fcntl, setgroups, setresgid,
        // setresuid, chdir); it allocates nothing (the group list was built before the fork).
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                // Into the run's cgroup while still privileged to write there.
                if let Some(procs) = cgroup_procs {
                    enter_cgroup(procs)?;
                }
                if raw == SCRIPT_FD {
                    // dup2 onto itself would keep close-on-exec set: clear it instead.
                    clear_cloexec(raw)?;
                } else if libc::dup2(raw, SCRIPT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::unistd::setgroups(&groups).map_err(std::io::Error::from)?;
                nix::unistd::setresgid(gid, gid, gid).map_err(std::io::Error::from)?;
                nix::unistd::setresuid(uid, uid, uid).map_err(std::io::Error::from)?;
                if libc::chdir(cwd_c.as_ptr()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    let spawned = {
        // The subreaper's table is held from before the fork until the new process is in it,
        // so that no sweep takes it for an orphan.
        let mut live = contained.is_subreaper().then(subreaper::live);
        let _serial = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        if same_user {
            clear_cloexec(raw).map_err(RunnerError::Script)?;
        }
        let spawned = cmd.spawn();
        if let (Some(live), Ok(child)) = (live.as_mut(), &spawned) {
            if let Some(pid) = child.id() {
                subreaper::register(live, pid, crate::procfs::process_start_time(pid));
            }
        }
        // The child has its copy (posix_spawn returns after the exec): close ours before
        // another spawn could inherit it.
        drop(script_fd);
        spawned
    };
    let mut child = spawned.map_err(|source| {
        use std::io::ErrorKind::{NotADirectory, NotFound, PermissionDenied};
        // The interpreter exists (checked above): these come from entering the directory.
        if matches!(source.kind(), NotFound | PermissionDenied | NotADirectory) {
            RunnerError::WorkingDir {
                path: cwd.clone(),
                user: spec.user.name.clone(),
                source,
            }
        } else {
            RunnerError::Spawn {
                interpreter: spec.interpreter.clone(),
                source,
            }
        }
    })?;
    let pid = child.id().unwrap_or_default();
    let (start_time, sid) = crate::procfs::process_start_and_session(pid);
    let stdout = child.stdout.take().ok_or_else(|| pipe_missing(spec))?;
    let stderr = child.stderr.take().ok_or_else(|| pipe_missing(spec))?;
    if let (Some(mut pipe), Some(data)) = (child.stdin.take(), spec.stdin.clone()) {
        tokio::spawn(async move {
            // A script that does not read its stdin closes the pipe early: not an error.
            let _ = pipe.write_all(&data).await;
        });
    }
    Ok(Spawned {
        child,
        pid,
        start_time,
        sid,
        stdout,
        stderr,
    })
}

fn pipe_missing(spec: &RunSpec) -> RunnerError {
    RunnerError::Spawn {
        interpreter: spec.interpreter.clone(),
        source: std::io::Error::other("output pipe missing"),
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open on `procs`.
/// Async-signal-safe (one write): used between fork and exec.
fn enter_cgroup(procs: i32) -> std::io::Result<()> {
    // SAFETY: write(2) of a 1-byte static buffer to a descriptor the parent opened.
    if unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) } != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Async-signal-safe (only fcntl): also used between fork and exec.
fn clear_cloexec(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this function's caller owns; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn script_memfd(script: &str) -> std::io::Result<OwnedFd> {
    let fd = memfd_create("rjob-script", MFdFlags::MFD_CLOEXEC).map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(script.as_bytes())?;
    Ok(OwnedFd::from(file))
}

/// Sends a signal to every process of a run's process group. A group that is already gone
/// is not an error.
pub fn signal_group(pgid: u32, signal: Signal) -> Result<(), nix::Error> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Err(nix::Error::EINVAL);
    };
    if raw <= 1 {
        return Err(nix::Error::EINVAL);
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}
