//! The daemon's job store under faults: a full disk (a small tmpfs as the state directory),
//! a damaged or lost store, and files an attacker could plant in the state directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use rjob_tests::{ran, wait_for, Daemon, Fleet, WAIT};

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
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

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
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

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| i.to_string()).collect()
}

#[test]
fn a_full_state_dir_holds_the_job_with_a_reason_and_it_completes_once_space_returns() {
    let fleet = Fleet::start(1).expect("fleet");
    // Declared before the daemon: unmounted after it is killed.
    let _tmpfs = Tmpfs::mount(&fleet.tmp.path().join("state"), "16m");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let lines = 200_000;
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; seq 1 {lines}",
        go = go.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "full", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("full", "Running"), "{}", daemon.job("full"));

    let filler = daemon.state_dir.join("filler");
    fill(&filler);
    std::fs::write(&go, "").expect("go");

    // The job is held Running, says why, and every command warns.
    let reason = "job store: disk full; output held on the agents";
    let mut listed = None;
    let held = wait_for(WAIT, || {
        let out = ran(daemon.rjob().args(["jobs", "--children"]));
        let held = out.stdout.contains(reason);
        listed = Some(out);
        held
    });
    let listed = listed.expect("rjob jobs ran");
    assert!(held, "no reason shown: {listed}");
    assert!(
        listed.stderr.lines().any(
            |l| l.starts_with("rjob: warning: the daemon cannot write its job store")
                && l.contains("disk full")
        ),
        "no warning: {listed}"
    );
    let plain = ran(daemon.rjob().args(["jobs"]));
    assert!(plain.stdout.contains(&format!("reason: {reason}")), "{plain}");
    let job = daemon.job("full");
    assert_eq!(job["state"], "Running", "{job}");
    let waited = ran(daemon.rjob().args(["wait", "full", "--timeout", "1s"]));
    assert_eq!(waited.code, 3, "{waited}");
    assert_eq!(
        waited
            .stderr
            .lines()
            .filter(|l| l.starts_with("rjob: warning:"))
            .count(),
        1,
        "one warning line per command: {waited}"
    );

    // Space comes back: the job completes with all its output, without a restart.
    std::fs::remove_file(&filler).expect("freeing space");
    assert!(daemon.wait_state("full", "Completed"), "{}", daemon.job("full"));
    let received = ran(daemon.rjob().args(["receive", "full"]));
    assert_eq!(received.code, 0, "{received}");
    assert!(
        received.lines_of(&fleet.agents[0].host()) == numbered(lines),
        "output differs"
    );
    assert!(!received.stderr.contains("warning"), "{}", received.stderr);
}

#[test]
fn a_daemon_restarted_on_a_full_state_dir_starts_and_goes_on_once_space_returns() {
    let fleet = Fleet::start(1).expect("fleet");
    let _tmpfs = Tmpfs::mount(&fleet.tmp.path().join("state"), "16m");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let lines = 50_000;
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; seq 1 {lines}",
        go = go.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "restarted", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("restarted", "Running"),
        "{}",
        daemon.job("restarted")
    );
    let filler = daemon.state_dir.join("filler");
    fill(&filler);
    std::fs::write(&go, "").expect("go");
    let reason = "job store: disk full; output held on the agents";
    let held = |daemon: &Daemon| {
        wait_for(WAIT, || {
            daemon.job("restarted")["children"][0]["reason"] == reason
        })
    };
    assert!(held(&daemon), "{}", daemon.job("restarted"));

    // Killed and started again while the disk is still full: it starts, and holds the job.
    daemon.restart().expect("a daemon starts on a full state dir");
    assert!(held(&daemon), "{}", daemon.job("restarted"));
    std::fs::remove_file(&filler).expect("freeing space");
    assert!(
        daemon.wait_state("restarted", "Completed"),
        "{}",
        daemon.job("restarted")
    );
    let received = ran(daemon.rjob().args(["receive", "restarted"]));
    assert!(
        received.lines_of(&fleet.agents[0].host()) == numbered(lines),
        "output differs"
    );
}

/// `rjob start` jobs j1..jN (Ids 1..N), each run to its end.
fn local_jobs(daemon: &Daemon, n: usize) {
    for i in 1..=n {
        let name = format!("j{i}");
        let out = ran(daemon
            .rjob()
            .args(["start", "--name", &name, "--script", "echo hi"]));
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stdout.starts_with(&format!("Id {i} ")), "{out}");
        assert!(daemon.wait_state(&name, "Completed"), "{}", daemon.job(&name));
    }
}

/// The Ids `rjob jobs` lists, with what it printed.
fn listed_ids(daemon: &Daemon) -> (Vec<u64>, rjob_tests::Ran) {
    let out = ran(daemon.rjob().args(["jobs", "--output", "json"]));
    let jobs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let ids = jobs
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["id"].as_u64()).collect())
        .unwrap_or_default();
    (ids, out)
}

/// The next job's Id.
fn next_id(daemon: &Daemon) -> String {
    let out = ran(daemon
        .rjob()
        .args(["start", "--name", "next", "--script", "true"]));
    assert_eq!(out.code, 0, "{out}");
    out.stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn lost_line(ran: &rjob_tests::Ran) -> Option<&str> {
    ran.stderr
        .lines()
        .find(|l| l.starts_with("rjob: warning: job store: job") && l.contains("missing from the job store"))
}

#[test]
fn a_truncated_wal_is_reported_and_no_id_is_handed_out_twice() {
    let fleet = Fleet::start(0).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    local_jobs(&daemon, 5);
    daemon.kill9();
    let wal = daemon.state_dir.join("jobs.db-wal");
    let len = std::fs::metadata(&wal).expect("the WAL").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncating the WAL");
    daemon.restart().expect("restart");

    let (ids, out) = listed_ids(&daemon);
    assert!(ids.len() < 5, "the truncation lost nothing: {out}");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "{out}");
    let lost = match ids.len() {
        4 => "job 5".to_string(),
        n => format!("jobs {}-5", n + 1),
    };
    let line = lost_line(&out).unwrap_or_else(|| panic!("no notice of the lost jobs: {out}"));
    assert!(
        line.starts_with(&format!("rjob: warning: job store: {lost} missing")),
        "{line}"
    );
    assert!(
        daemon.log_text().contains(&format!("job store: {lost} missing")),
        "{}",
        daemon.log_text()
    );
    // A lost job named by its Id is said to be lost, not unknown.
    let received = ran(daemon.rjob().args(["receive", "5"]));
    assert_eq!(received.code, 2, "{received}");
    assert!(
        received.stderr.trim_end().ends_with(
            "rjob: error: job 5 was lost from the job store (found missing when the daemon started): its state and output are gone"
        ),
        "{received}"
    );
    assert_eq!(next_id(&daemon), "6");
}

#[test]
fn a_deleted_wal_is_reported_and_ids_go_on() {
    let fleet = Fleet::start(0).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    local_jobs(&daemon, 5);
    // A removed job is not reported lost.
    let out = ran(daemon.rjob().args(["remove", "j5"]));
    assert_eq!(out.code, 0, "{out}");
    daemon.kill9();
    for file in ["jobs.db-wal", "jobs.db-shm"] {
        std::fs::remove_file(daemon.state_dir.join(file)).expect("removing the WAL");
    }
    daemon.restart().expect("restart");

    let (ids, out) = listed_ids(&daemon);
    assert_eq!(ids, Vec::<u64>::new(), "{out}");
    let line = lost_line(&out).unwrap_or_else(|| panic!("no notice of the lost jobs: {out}"));
    assert!(
        line.starts_with("rjob: warning: job store: jobs 1-4 missing"),
        "{line}"
    );
    assert_eq!(next_id(&daemon), "6");
    // Once: the next daemon has nothing more to report.
    daemon.restart().expect("restart");
    let (ids, out) = listed_ids(&daemon);
    assert_eq!(ids, [6], "{out}\n--- the daemon's log\n{}", daemon.log_text());
    assert_eq!(lost_line(&out), None, "{out}");
}

#[test]
fn a_job_whose_request_is_damaged_ends_failed_with_the_reason() {
    let fleet = Fleet::start(2).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done; echo done", go.display());
    // One child runs, the other waits for the throttle slot.
    let out = daemon.invoke_job(&fleet.hosts(), "damaged", &script, &["--throttle-limit", "1"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("damaged", "Running"),
        "{}",
        daemon.job("damaged")
    );
    daemon.kill9();
    let db = daemon.state_dir.join("jobs.db");
    let sql = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE jobs SET request = x'ff' WHERE name = 'damaged'\")\nc.commit()\n";
    let out = ran(Command::new("python3").args(["-c", sql]).arg(&db));
    assert_eq!(
        out.code, 0,
        "python3 with sqlite3 damages the stored request: {out}"
    );
    daemon.restart().expect("restart");
    std::fs::write(&go, "").expect("go");

    assert!(
        daemon.wait_state("damaged", "Failed"),
        "{}",
        daemon.job("damaged")
    );
    let job = daemon.job("damaged");
    // The child that was running is followed to its end; the queued one cannot start.
    assert_eq!(job["children"][0]["state"], "Completed", "{job}");
    assert_eq!(job["children"][1]["state"], "Failed", "{job}");
    let reason = job["children"][1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the job store holds a damaged request for job 1 (")
            && reason.ends_with("): it cannot be started"),
        "{job}"
    );
    let received = ran(daemon.rjob().args(["receive", "damaged"]));
    assert_eq!(received.lines_of(&fleet.agents[0].host()), ["done"], "{received}");
}

#[test]
fn a_store_that_cannot_be_opened_is_reported_by_the_command_that_starts_the_daemon() {
    let fleet = Fleet::start(0).expect("fleet");
    let state = fleet.tmp.path().join("unopenable");
    std::fs::create_dir(&state).expect("state dir");
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    std::fs::write(state.join("jobs.db"), vec![b'x'; 8192]).expect("a damaged store");
    let out = ran(fleet.rjob().env("RJOB_STATE_DIR", &state).args(["jobs"]));
    assert_eq!(out.code, 2, "{out}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("rjob: error: the daemon could not start: job store ")
            && last.contains("jobs.db: file is not a database: move it aside"),
        "{out}"
    );
    assert!(!out.stderr.contains("did not answer"), "{out}");
}

/// Runs `cmd` to its end, killing it if it is still going after the global timeout (a daemon
/// that should have refused to start).
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
    let out = ran(Command::new("sh").args([
        "-c",
        "id rjsmallory >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin rjsmallory",
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
    let mut spy = Command::new("runuser")
        .args(["-u", "rjsmallory", "--", "python3", "-c", listener])
        .arg(&state)
        .spawn()
        .expect("runuser");
    assert!(
        wait_for(WAIT, || state.join("ready").exists()),
        "mallory's listener did not start"
    );

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

#[test]
fn a_receive_on_a_full_state_dir_waits_for_space_and_loses_nothing() {
    let fleet = Fleet::start(1).expect("fleet");
    let _tmpfs = Tmpfs::mount(&fleet.tmp.path().join("state"), "16m");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let lines = 50_000;
    let out = daemon.invoke_job(&fleet.hosts(), "done", &format!("seq 1 {lines}"), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("done", "Completed"), "{}", daemon.job("done"));

    let filler = daemon.state_dir.join("filler");
    fill(&filler);
    // The received marks cannot be written: the receive waits, it does not fail.
    let got = fleet.scratch().join("received.txt");
    let receiving = daemon
        .rjob()
        .args(["receive", "done"])
        .stdout(std::fs::File::create(&got).expect("output file"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rjob receive");
    let held = wait_for(WAIT, || {
        let out = ran(daemon.rjob().args(["jobs"]));
        out.stderr
            .lines()
            .any(|l| l.starts_with("rjob: warning: the daemon cannot write its job store"))
    });
    assert!(held, "no warning while the received mark cannot be written");
    std::fs::remove_file(&filler).expect("freeing space");
    let mut received = rjob_tests::Ran::of(receiving.wait_with_output().expect("receive ends"));
    assert_eq!(received.code, 0, "{received}");
    received.stdout = std::fs::read_to_string(&got).expect("received output");
    let got_lines = received.lines_of(&fleet.agents[0].host());
    assert!(
        got_lines == numbered(lines),
        "output differs: {} lines, starting {:?}",
        got_lines.len(),
        received.stdout.lines().take(3).collect::<Vec<_>>()
    );
    // All of it was taken: nothing is delivered twice.
    let again = ran(daemon.rjob().args(["receive", "done"]));
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.is_empty(), "delivered twice: {again}");
}
