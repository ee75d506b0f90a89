//! Issue 11, reviewed as a full disk and a password guesser would: a daemon whose store cannot
//! be opened says so plainly, and clients sleeping out their password slow-down never hold
//! up another client's login. Real daemon, real agents, real PAM; needs root (it mounts a
//! tmpfs and creates a user). Split from `trust_review.rs`.

use rjob_tests::{ran, Fleet};

mod full_disk {
    use std::path::Path;
    use std::process::Command;

    use rjob_tests::ran;

    /// Pids of `rjob serve` processes on `state_dir` (the ones the CLI started).
    pub fn daemons(state_dir: &Path) -> Vec<i32> {
        let pattern = format!("rjob serve --state-dir {} ", state_dir.display());
        let out = ran(Command::new("pgrep").arg("-f").arg(pattern));
        out.stdout.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Stops them as systemd would (SIGTERM) and waits until they are gone.
    pub fn stop_daemons(state_dir: &Path) {
        for pid in daemons(state_dir) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
        }
        assert!(
            rjob_tests::wait_for(rjob_tests::WAIT, || daemons(state_dir).is_empty()),
            "the daemon did not stop"
        );
    }
}

#[test]
fn a_daemon_that_cannot_open_its_store_on_a_full_disk_says_so_and_never_advises_moving_it() {
    let fleet = Fleet::start(0).expect("fleet");
    let state = fleet.tmp.path().join("full-state");
    let _mount = rjob_tests::disk::Tmpfs::mount(&state, "2m");
    let rjob = || {
        let mut cmd = fleet.rjob();
        cmd.env("RJOB_STATE_DIR", &state);
        cmd
    };
    let made = ran(rjob().args(["start", "--name", "kept", "--script", "echo kept"]));
    assert_eq!(made.code, 0, "{made}");
    assert!(rjob_tests::wait_for(rjob_tests::WAIT, || ran(
        rjob().args(["jobs", "kept"])
    )
    .stdout
    .contains("Completed")));
    full_disk::stop_daemons(&state);
    // With no process on the store, its -shm is rebuilt at open (as after a reboot): SQLite
    // must then create it, which a full file system refuses.
    let _ = std::fs::remove_file(state.join("jobs.db-shm"));
    rjob_tests::disk::fill(&state.join("filler"));
    let out = ran(rjob().arg("jobs"));
    full_disk::stop_daemons(&state);
    assert_eq!(out.code, 2, "{out}");
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("rjob: error:"))
        .unwrap_or_default();
    assert!(error.contains("full"), "the error says the disk is full\n{out}");
    assert!(
        !error.contains("move it aside"),
        "an intact store is never to be moved aside\n{out}"
    );
    std::fs::remove_file(state.join("filler")).expect("free the space");
    let listed = ran(rjob().args(["jobs", "kept"]));
    full_disk::stop_daemons(&state);
    assert_eq!(listed.code, 0, "{listed}");
    assert!(listed.stdout.contains("kept"), "the job is still there\n{listed}");
}

mod pam {
    use std::sync::OnceLock;

    use rjob_tests::users;

    pub const USER: &str = "rjvpam";
    pub const PASSWORD: &str = "Rev1ew-rjob-test-secret";
    pub const SERVICE: &str = "rjob-review-test";

    pub fn setup() {
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            users::require_root("this test creates a user");
            users::ensure_user(USER, Some(PASSWORD));
            users::pam_service(SERVICE, "trust_review");
        });
    }
}

#[test]
fn clients_sleeping_out_their_password_slow_down_never_hold_up_another_clients_login() {
    pam::setup();
    let policy = format!(
        "[[allow]]\nidentity = \"*\"\nusers = [\"{}\"]\npassword = true\n",
        pam::USER
    );
    let fleet = Fleet::start_policy(1, &policy, |c| {
        c.args(["--pam-service", pam::SERVICE]);
    })
    .expect("fleet");
    let host = fleet.hosts();
    let wrong = fleet.scratch().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").expect("wrong");
    let right = fleet.scratch().join("right");
    std::fs::write(&right, format!("{}\n", pam::PASSWORD)).expect("right");
    // Four other clients (as many as the agent checks passwords at once), each guessing.
    let guessers: Vec<std::path::PathBuf> = (1..=4)
        .map(|i| {
            let dir = fleet.tmp.path().join(format!("guesser{i}"));
            let out = ran(fleet
                .rjob()
                .args(["pki", "issue-client", &format!("guesser{i}"), "--ca-dir"])
                .arg(&fleet.pki.dir)
                .arg("--out")
                .arg(&dir));
            assert_eq!(out.code, 0, "{out}");
            dir
        })
        .collect();
    let guess = |dir: &std::path::Path| {
        let mut cmd = fleet.rjob();
        cmd.env("RJOB_IDENTITY", dir)
            .args(["invoke", "-H", &host, "--user", pam::USER, "--password-file"])
            .arg(&wrong)
            .args(["--script", "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    // Four failures each (slowed down 0, 0, 0.5 and 1 s), side by side.
    std::thread::scope(|s| {
        for dir in &guessers {
            s.spawn(|| {
                for _ in 0..4 {
                    let status = guess(dir).status().expect("guess");
                    assert_eq!(status.code(), Some(1));
                }
            });
        }
    });
    // The fifth failure of each is answered only after 2 s.
    let mut sleeping: Vec<std::process::Child> = guessers
        .iter()
        .map(|d| guess(d).spawn().expect("guess"))
        .collect();
    let agent = &fleet.agents[0];
    let all_sleeping = rjob_tests::wait_for(rjob_tests::WAIT, || {
        agent
            .log_text()
            .lines()
            .filter(|l| l.contains("failures=5"))
            .count()
            == 4
    });
    assert!(all_sleeping, "{}", agent.log_text());
    let login = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host, "--user", pam::USER, "--password-file"])
        .arg(&right)
        .args(["--script", "id -un"]));
    let still_sleeping = sleeping
        .iter_mut()
        .map(|c| matches!(c.try_wait(), Ok(None)))
        .filter(|&going| going)
        .count();
    for mut child in sleeping {
        let _ = child.wait();
    }
    assert_eq!(login.code, 0, "{login}");
    assert_eq!(login.lines_of(&host), [pam::USER], "{login}");
    assert_eq!(
        still_sleeping, 4,
        "the login waited for the guessers' slow-down to end"
    );
}
