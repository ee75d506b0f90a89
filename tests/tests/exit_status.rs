//! The exit statuses of `rjob invoke` that programs branch on (0, 1, 2, 4, 5, 130) and of
//! `rjob wait` (3: its timeout), against real agents and a real daemon.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use rjob_tests::{free_port, ran, Daemon, Fleet};

fn invoke(fleet: &Fleet, hosts: &str, extra: &[&str], script: &str) -> i32 {
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", hosts, "--connect-timeout", "3s"])
        .args(extra)
        .args(["--script", script]));
    assert!(!out.stderr.contains("panicked"), "{out}");
    out.code
}

/// A host on a port where nothing listens.
fn closed() -> String {
    format!("127.0.0.9:{}", free_port("127.0.0.9".parse().expect("ip")))
}

#[test]
fn each_status_of_invoke() {
    let fleet = Fleet::start(2).expect("fleet");
    let hosts = fleet.hosts();
    let with_closed = format!("{hosts},{}", closed());
    assert_eq!(invoke(&fleet, &hosts, &[], "true"), 0, "all completed");
    assert_eq!(invoke(&fleet, &hosts, &[], "exit 3"), 1, "a script failed");
    assert_eq!(
        invoke(&fleet, &hosts, &[], "kill -9 $$"),
        1,
        "a script was killed"
    );
    assert_eq!(invoke(&fleet, &hosts, &["--bogus"], "true"), 2, "usage");
    assert_eq!(
        invoke(&fleet, &with_closed, &[], "true"),
        4,
        "unreachable, none failed"
    );
    assert_eq!(
        invoke(&fleet, &with_closed, &[], "exit 1"),
        1,
        "a failure outweighs an unreachable host"
    );
    assert_eq!(
        invoke(&fleet, &hosts, &["--max-errors", "0", "-t", "1"], "exit 1"),
        5,
        "the error budget stopped the fan-out"
    );
}

#[test]
fn ctrl_c_is_130() {
    let fleet = Fleet::start(1).expect("fleet");
    let mut child = fleet
        .rjob()
        .args([
            "invoke",
            "-H",
            &fleet.hosts(),
            "--script",
            "echo started; sleep 300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rjob invoke");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert!(line.contains("started"), "{line:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status:?}");
}

#[test]
fn a_wait_that_times_out_is_3() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let created = daemon.invoke_job(&fleet.hosts(), "long", "sleep 300", &[]);
    assert_eq!(created.code, 0, "{created}");
    let out = ran(daemon.rjob().args(["wait", "long", "--timeout", "1s"]));
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(ran(daemon.rjob().args(["stop", "long"])).code, 0);
}
