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
