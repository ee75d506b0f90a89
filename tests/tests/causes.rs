//! Why a child ended, typed: the `cause` of `rjob invoke --output json`'s result records and
//! of `rjob jobs --output json`'s children, against real agents and a real daemon.

use std::process::Stdio;

use rjob_tests::{free_port, ran, wait_for, Daemon, Fleet, Ran, WAIT};

/// The `cause` of the result record for `host` in an `--output json` run.
fn cause_of(out: &Ran, host: &str) -> String {
    let result = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["type"] == "result" && r["host"] == host)
        .unwrap_or_else(|| panic!("no result record for {host}: {out}"));
    result["cause"].as_str().unwrap_or_default().to_string()
}

fn invoke_json(fleet: &Fleet, hosts: &str, extra: &[&str], script: &str) -> Ran {
    ran(fleet
        .rjob()
        .args(["invoke", "-H", hosts, "--output", "json"])
        .args(extra)
        .args(["--script", script]))
}

#[test]
fn a_normal_exit_is_exited_whatever_its_status() {
    let fleet = Fleet::start(1).expect("fleet");
    let host = fleet.agents[0].host();
    let ok = invoke_json(&fleet, &fleet.hosts(), &[], "echo fine");
    assert_eq!(ok.code, 0, "{ok}");
    assert_eq!(cause_of(&ok, &host), "exited", "{ok}");
    let failed = invoke_json(&fleet, &fleet.hosts(), &[], "exit 3");
    assert_eq!(failed.code, 1, "{failed}");
    assert_eq!(cause_of(&failed, &host), "exited", "{failed}");
}

#[test]
fn a_timeout_is_timed_out() {
    let fleet = Fleet::start(1).expect("fleet");
    let out = invoke_json(&fleet, &fleet.hosts(), &["--timeout", "1s"], "sleep 300");
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(cause_of(&out, &fleet.agents[0].host()), "timed_out", "{out}");
}

#[test]
fn output_past_the_agents_limit_is_output_limit() {
    let fleet = Fleet::start_with(1, |agent| {
        agent.args(["--max-output-bytes", "1000"]);
    })
    .expect("fleet");
    let out = invoke_json(
        &fleet,
        &fleet.hosts(),
        &[],
        "head -c 100000 /dev/zero | tr '\\0' x; sleep 300",
    );
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(cause_of(&out, &fleet.agents[0].host()), "output_limit", "{out}");
}

#[test]
fn a_request_the_agent_refuses_is_refused() {
    let fleet = Fleet::start_with(1, |agent| {
        agent.args(["--default-timeout", "1m", "--max-timeout", "1h"]);
    })
    .expect("fleet");
    let out = invoke_json(&fleet, &fleet.hosts(), &["--timeout", "2h"], "echo never");
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(cause_of(&out, &fleet.agents[0].host()), "refused", "{out}");
}

#[test]
fn a_start_the_agent_cannot_make_is_start_failed() {
    let fleet = Fleet::start_with(1, |agent| {
        agent.args(["--max-spool-bytes", "4096"]);
    })
    .expect("fleet");
    let flag = fleet.scratch().join("go");
    // 8 KiB of output, then it waits: the spool holds more than its quota meanwhile.
    let script = format!(
        "head -c 8192 /dev/zero | tr '\\0' x; while [ ! -e {} ]; do sleep 0.05; done",
        flag.display()
    );
    let first = fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "--script", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rjob invoke");
    let spool = fleet.agents[0].spool.clone();
    let spooled = || -> u64 {
        std::fs::read_dir(&spool)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    assert!(
        wait_for(WAIT, || spooled() > 8192),
        "the first run's output is spooled"
    );
    let out = invoke_json(&fleet, &fleet.hosts(), &[], "echo never");
    std::fs::write(&flag, "").expect("flag");
    let first = first.wait_with_output().expect("the first invoke");
    assert!(first.status.success(), "the first run was not cut");
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(cause_of(&out, &fleet.agents[0].host()), "start_failed", "{out}");
}

#[test]
fn a_port_where_nothing_listens_is_unreachable() {
    let fleet = Fleet::start(0).expect("fleet");
    let closed = format!("127.0.0.9:{}", free_port("127.0.0.9".parse().expect("ip")));
    let out = invoke_json(&fleet, &closed, &["--connect-timeout", "3s"], "echo never");
    assert_eq!(out.code, 4, "unreachable, and nothing failed otherwise: {out}");
    assert_eq!(cause_of(&out, &closed), "unreachable", "{out}");
}

#[test]
fn the_daemon_keeps_each_childs_cause() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let closed = format!("127.0.0.9:{}", free_port("127.0.0.9".parse().expect("ip")));
    let hosts = format!("{},{closed}", fleet.hosts());
    let out = daemon.invoke_job(&hosts, "causes", "exit 4", &["--connect-timeout", "3s"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("causes", "Failed"), "{}", daemon.job("causes"));
    let job = daemon.job("causes");
    let causes: Vec<(String, String)> = job["children"]
        .as_array()
        .unwrap_or_else(|| panic!("no children: {job}"))
        .iter()
        .map(|c| {
            (
                c["host"].as_str().unwrap_or_default().to_string(),
                c["cause"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        causes,
        [
            (fleet.agents[0].host(), "exited".to_string()),
            (closed, "unreachable".to_string())
        ],
        "{job}"
    );
}
