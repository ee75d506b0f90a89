//! Many hosts streaming large output through a small output budget (`RJOB_OUTPUT_BUDGET`,
//! crate `rjob::flow`): narrow HTTP/2 windows, small chunks asked of the agents, and a small
//! room for the daemon's store writer. Every byte of every host must still arrive, in order:
//! through `rjob invoke` and through `--as-job` into the store and `rjob receive`.

use std::path::Path;

use rjob_tests::{ran, Daemon, Fleet};
use sha2::{Digest, Sha256};

/// Hosts streaming at once; with the smallest budget each gets the narrowest window.
const HOSTS: usize = 48;
/// The smallest budget the controller accepts (64 KiB for all the hosts together).
const BUDGET: &str = "65536";
/// About 1.3 MB of distinct lines on stdout and 100 KB on stderr per host.
const SCRIPT: &str = "seq 1 200000; seq 500000 520000 >&2";

fn local(script: &str) -> Vec<u8> {
    std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("run the script locally")
        .stdout
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `dir` holds one `.out` and one `.err` per host (however its label is written), each with
/// exactly what the script prints locally.
fn every_host_complete(fleet: &Fleet, dir: &Path) {
    let (out, err) = (local("seq 1 200000"), local("seq 500000 520000"));
    let mut seen = (0, 0);
    for entry in std::fs::read_dir(dir).expect("the output directory") {
        let path = entry.expect("an entry").path();
        let name = path.display().to_string();
        let (want, count) = match path.extension().and_then(|e| e.to_str()) {
            Some("out") => (&out, &mut seen.0),
            Some("err") => (&err, &mut seen.1),
            _ => continue,
        };
        let got = std::fs::read(&path).expect("a host's file");
        assert_eq!(got.len(), want.len(), "{name}: length");
        assert_eq!(digest(&got), digest(want), "{name}: checksum");
        *count += 1;
    }
    assert_eq!(
        seen,
        (fleet.agents.len(), fleet.agents.len()),
        "one .out and one .err per host"
    );
}

#[test]
fn many_hosts_through_a_small_budget_deliver_every_byte_live() {
    let fleet = Fleet::start_one_port(HOSTS).expect("fleet");
    let dir = fleet.scratch().join("live");
    let out = ran(fleet
        .rjob()
        .env("RJOB_OUTPUT_BUDGET", BUDGET)
        .args(["invoke", "-H", &fleet.hosts(), "--quiet"])
        .args(["--throttle-limit", &HOSTS.to_string()])
        .arg("--output-dir")
        .arg(&dir)
        .args(["--script", SCRIPT]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("{HOSTS} hosts: {HOSTS} Completed")),
        "{}",
        out.stderr
    );
    every_host_complete(&fleet, &dir);
}

#[test]
fn many_hosts_through_a_small_budget_are_stored_whole_as_a_job() {
    let fleet = Fleet::start_one_port(HOSTS).expect("fleet");
    let daemon =
        Daemon::start_named_env(&fleet, "state", &[], &[("RJOB_OUTPUT_BUDGET", BUDGET)]).expect("daemon");
    let throttle = HOSTS.to_string();
    let started = daemon.invoke_job(&fleet.hosts(), "flow", SCRIPT, &["--throttle-limit", &throttle]);
    assert_eq!(started.code, 0, "{started}");
    let waited = ran(daemon.rjob().args(["wait", "flow"]));
    assert_eq!(waited.code, 0, "{waited}");
    let dir = fleet.scratch().join("stored");
    let received = ran(daemon
        .rjob()
        .args(["receive", "flow", "--keep", "--output-dir"])
        .arg(&dir));
    assert_eq!(received.code, 0, "{received}");
    every_host_complete(&fleet, &dir);
}
