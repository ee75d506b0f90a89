//! The daemon's state directory against other users: it must be private (0700, the user's
//! own, not a symlink), files in it are never written through a planted symlink, and the CLI
//! sends nothing to a socket another user serves.

use std::path::Path;
use std::process::Command;

use rjob_tests::{ran, wait_for, Fleet, WAIT};

fn ran_to_end(cmd: &mut Command) -> rjob_tests::Ran {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let killer = std::thread::spawn(move || {
        if !wait_for(WAIT, || flag.load(std::sync::atomic::Ordering::SeqCst)) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = killer.join();
    rjob_tests::Ran::of(out)
}

fn one_error_line(out: &rjob_tests::Ran) -> &str {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {out}");
    lines[0]
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path).map_or(0, |m| m.mode() & 0o7777)
}

#[test]
fn a_state_dir_open_to_others_or_symlinked_is_refused_with_one_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let fleet = Fleet::start(0).expect("fleet");
    let open = fleet.tmp.path().join("open-state");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let want = format!("rjob: error: state directory {} has mode 0755:", open.display());
    let served = ran_to_end(fleet.rjob().arg("--state-dir").arg(&open).arg("serve"));
    assert_eq!(served.code, 2, "{served}");
    assert!(one_error_line(&served).starts_with(&want), "{served}");
    // A job command that would start a daemon there says the same, and starts none.
    let listed = ran_to_end(fleet.rjob().env("RJOB_STATE_DIR", &open).arg("jobs"));
    assert_eq!(listed.code, 2, "{listed}");
    assert!(one_error_line(&listed).starts_with(&want), "{listed}");
    assert!(!open.join("jobs.db").exists() && !open.join("daemon.log").exists());

    let real = fleet.tmp.path().join("real-state");
    std::fs::create_dir(&real).expect("dir");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let link = fleet.tmp.path().join("linked-state");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let served = ran_to_end(fleet.rjob().arg("--state-dir").arg(&link).arg("serve"));
    assert_eq!(served.code, 2, "{served}");
    assert!(
        one_error_line(&served).starts_with(&format!(
            "rjob: error: state directory {} is a symbolic link",
            link.display()
        )),
        "{served}"
    );
    assert_eq!(
        std::fs::read_dir(&real).expect("real").count(),
        0,
        "nothing written through the link"
    );

    // A symlink above the state directory is fine (/home may be one).
    let state = link.join("state");
    let mut serve = fleet
        .rjob()
        .arg("--state-dir")
        .arg(&state)
        .arg("serve")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rjob serve");
    let up = wait_for(WAIT, || state.join("rjob.sock").exists());
    let listed = ran(fleet.rjob().env("RJOB_STATE_DIR", &state).arg("jobs"));
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(up, "the daemon did not start under a symlinked parent");
    assert_eq!(listed.code, 0, "{listed}");
}

#[test]
fn planted_symlinks_in_the_state_dir_are_never_written_through() {
    use std::os::unix::fs::PermissionsExt as _;
    let fleet = Fleet::start(0).expect("fleet");
    let victim = fleet.tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let state = fleet.tmp.path().join("planted");
    std::fs::create_dir(&state).expect("dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    // daemon.log, opened by the command that starts the daemon.
    std::os::unix::fs::symlink(&victim, state.join("daemon.log")).expect("symlink");
    let out = ran_to_end(fleet.rjob().env("RJOB_STATE_DIR", &state).arg("jobs"));
    assert_eq!(out.code, 2, "{out}");
    assert!(
        one_error_line(&out).starts_with(&format!(
            "rjob: error: {} is a symbolic link: refusing to follow it",
            state.join("daemon.log").display()
        )),
        "{out}"
    );
    std::fs::remove_file(state.join("daemon.log")).expect("unplant");

    // The store's files, opened by the daemon.
    for planted in ["jobs.db", "jobs.db-wal", "jobs.db-shm", "jobs.ids"] {
        let path = state.join(planted);
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let out = ran_to_end(fleet.rjob().arg("--state-dir").arg(&state).arg("serve"));
        assert_eq!(out.code, 2, "{planted}: {out}");
        assert!(
            out.stderr.lines().last().unwrap_or_default().contains(&format!(
                "{} is a symbolic link: refusing to follow it",
                path.display()
            )),
            "{planted}: {out}"
        );
        std::fs::remove_file(&path).expect("unplant");
        let _ = std::fs::remove_file(state.join("jobs.db"));
    }
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious\n");
    assert_eq!(mode_of(&victim), 0o644, "the victim's mode is untouched");
}

#[test]
fn the_daemon_creates_its_state_dir_and_files_private() {
    let fleet = Fleet::start(0).expect("fleet");
    let state = fleet.tmp.path().join("made/by/rjob/state");
    let mut daemon_pid = None;
    let out = ran(fleet
        .rjob()
        .env("RJOB_STATE_DIR", &state)
        .args(["start", "--name", "private", "--script", "echo hi"]));
    assert_eq!(out.code, 0, "{out}");
    // The daemon it started, found by its state directory: killed at the end.
    struct KillOnDrop(Option<i32>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.iter().any(|a| *a == b"serve")
            && args.iter().any(|a| *a == state.as_os_str().as_encoded_bytes())
        {
            daemon_pid = entry.file_name().to_str().and_then(|p| p.parse().ok());
        }
    }
    let _daemon = KillOnDrop(daemon_pid);
    assert!(daemon_pid.is_some(), "the daemon it started is running");
    let done = wait_for(WAIT, || {
        ran(fleet
            .rjob()
            .env("RJOB_STATE_DIR", &state)
            .args(["wait", "private"]))
        .code
            == 0
    });
    assert!(done);
    assert_eq!(mode_of(&state), 0o700);
    for name in [
        "daemon.log",
        "daemon.lock",
        "jobs.db",
        "jobs.db-wal",
        "jobs.db-shm",
        "jobs.ids",
        "rjob.sock",
        "local-agent.sock",
    ] {
        let path = state.join(name);
        assert!(path.exists(), "{} missing", path.display());
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
}

/// `rjsmallory`, another real user of this machine.
fn mallory() -> nix::unistd::User {
    // One useradd at a time: the tests of this file run in parallel, and on a fresh machine two
    // of them would make the user at once.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let out = ran(Command::new("sh").args([
        "-c",
        "id rjsmallory >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin rjsmallory || id rjsmallory >/dev/null",
    ]));
    assert_eq!(out.code, 0, "creating the test user rjsmallory needs root: {out}");
    nix::unistd::User::from_name("rjsmallory")
        .ok()
        .flatten()
        .expect("rjsmallory")
}

#[test]
fn a_state_dir_inside_another_users_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let mallory = mallory();
    let fleet = Fleet::start(0).expect("fleet");
    let outer = fleet.tmp.path().join("mallorys");
    std::fs::create_dir(&outer).expect("dir");
    nix::unistd::chown(&outer, Some(mallory.uid), Some(mallory.gid)).expect("chown");
    let state = outer.join("state");
    std::fs::create_dir(&state).expect("dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let served = ran_to_end(fleet.rjob().arg("--state-dir").arg(&state).arg("serve"));
    assert_eq!(served.code, 2, "{served}");
    let want = format!(
        "rjob: error: state directory {} is inside {}, which belongs to uid {}: that user could replace it",
        state.display(),
        outer.display(),
        mallory.uid
    );
    assert!(one_error_line(&served).starts_with(&want), "{served}");
    assert!(!state.join("jobs.db").exists());
}

#[test]
fn a_socket_planted_by_another_user_gets_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let mallory = mallory();
    let fleet = Fleet::start(0).expect("fleet");
    // Somewhere mallory can reach: a world-traversable dir with mallory's state dir in it.
    let outer = tempfile::Builder::new()
        .prefix("rjob-mallory-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let state = outer.path().join("state");
    std::fs::create_dir(&state).expect("dir");
    nix::unistd::chown(&state, Some(mallory.uid), Some(mallory.gid)).expect("chown");
    // Mallory listens on STATE/rjob.sock and records how many bytes anyone sends.
    let listener = "import socket, sys\nd = sys.argv[1]\ns = socket.socket(socket.AF_UNIX)\ns.bind(d + '/rjob.sock')\ns.listen(8)\nopen(d + '/ready', 'w').close()\ns.settimeout(30)\ngot = 0\nfor _ in range(2):\n    c, _ = s.accept()\n    c.settimeout(5)\n    try:\n        while True:\n            b = c.recv(65536)\n            if not b:\n                break\n            got += len(b)\n    except socket.timeout:\n        pass\n    c.close()\nopen(d + '/got', 'w').write(str(got))\n";
    // Ready, or ended early (then its error is the message). Its bind has been seen to fail
    // with EACCES once in a while on a loaded machine: tried up to three times, and then the
    // error is the message.
    let mut tries = 0;
    let mut spy = loop {
        tries += 1;
        let mut spy = Command::new("runuser")
            .args(["-u", "rjsmallory", "--", "python3", "-c", listener])
            .arg(&state)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runuser");
        let ready = wait_for(WAIT, || {
            state.join("ready").exists() || matches!(spy.try_wait(), Ok(Some(_)))
        });
        if state.join("ready").exists() {
            break spy;
        }
        let _ = spy.kill();
        let out = spy.wait_with_output().expect("mallory's listener");
        assert!(
            tries < 3,
            "mallory's listener did not start (waited: {ready}; {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(state.join("rjob.sock"));
        std::thread::sleep(std::time::Duration::from_millis(500));
    };

    let want = format!(
        "rjob: error: {} is served by uid {} (rjsmallory), not by you (uid {}): refusing to send anything on it",
        state.join("rjob.sock").display(),
        mallory.uid,
        nix::unistd::geteuid()
    );
    let listed = ran_to_end(fleet.rjob().env("RJOB_STATE_DIR", &state).arg("jobs"));
    assert_eq!(listed.code, 2, "{listed}");
    assert!(one_error_line(&listed).starts_with(&want), "{listed}");
    let started =
        ran_to_end(
            fleet
                .rjob()
                .env("RJOB_STATE_DIR", &state)
                .args(["start", "--script", "echo secret"]),
        );
    assert_eq!(started.code, 2, "{started}");
    assert!(one_error_line(&started).starts_with(&want), "{started}");

    assert!(
        wait_for(WAIT, || state.join("got").exists()),
        "mallory's listener did not finish"
    );
    let _ = spy.wait();
    assert_eq!(
        std::fs::read_to_string(state.join("got")).expect("got"),
        "0",
        "bytes reached mallory"
    );
}
