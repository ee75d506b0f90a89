//! Issue 11, reviewed as a hostile peer, a careless operator and a full disk would: what the
//! merged points missed between them. Real daemon, real agents, real pipes.

use std::process::Command;

use rjob_tests::{ran, Daemon, Fleet, Ran};

/// Runs `cmd` with its stdout a pipe whose reader has already gone (as under `head` that
/// has read what it wanted).
fn into_closed_pipe(cmd: &mut Command) -> Ran {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    ran(cmd.stdout(writer))
}

fn assert_quiet_pipe_close(what: &str, out: &Ran) {
    assert_eq!(out.code, 141, "{what}: a closed stdout ends it with 141\n{out}");
    assert!(
        !out.stderr.contains("panicked"),
        "{what} panicked on a closed stdout\n{out}"
    );
}

#[test]
fn job_commands_end_quietly_when_their_reader_goes_away_and_still_do_their_work() {
    let fleet = Fleet::start(0).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    for name in ["slow-a", "slow-b"] {
        let out = into_closed_pipe(
            daemon
                .rjob()
                .args(["start", "--name", name, "--script", "sleep 60"]),
        );
        assert_quiet_pipe_close("rjob start", &out);
    }
    assert!(daemon.wait_state("slow-a", "Running"), "{}", daemon.job("slow-a"));
    assert!(daemon.wait_state("slow-b", "Running"), "{}", daemon.job("slow-b"));
    assert_quiet_pipe_close("rjob jobs", &into_closed_pipe(daemon.rjob().arg("jobs")));
    assert_quiet_pipe_close(
        "rjob jobs -o json",
        &into_closed_pipe(daemon.rjob().args(["jobs", "-o", "json"])),
    );
    assert_quiet_pipe_close(
        "rjob wait --timeout",
        &into_closed_pipe(daemon.rjob().args(["wait", "slow-a", "--timeout", "10ms"])),
    );
    // Both jobs are stopped, though the first line already found the pipe closed.
    assert_quiet_pipe_close(
        "rjob stop",
        &into_closed_pipe(daemon.rjob().args(["stop", "slow-a", "slow-b"])),
    );
    assert!(daemon.wait_state("slow-a", "Stopped"), "{}", daemon.job("slow-a"));
    assert!(daemon.wait_state("slow-b", "Stopped"), "{}", daemon.job("slow-b"));
    assert_quiet_pipe_close(
        "rjob remove",
        &into_closed_pipe(daemon.rjob().args(["remove", "slow-a", "slow-b"])),
    );
    let left = ran(daemon.rjob().args(["jobs", "-o", "json"]));
    assert_eq!(left.stdout.trim(), "[]", "both jobs removed\n{left}");
}
