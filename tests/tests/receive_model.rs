//! `rjob receive` as Receive-Job: per-host result records and state events in JSON,
//! `--wait --auto-remove`, and several jobs in one receive. Real daemon, real agents.

use std::io::{BufRead, BufReader, Read};

use rjob_tests::{ran, wait_for, Daemon, Fleet, WAIT};
use serde_json::Value;

fn records(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// A completed (or failed) job `name` of `script` on the fleet's hosts.
fn finished_job(daemon: &Daemon, hosts: &str, name: &str, script: &str, state: &str) {
    let out = daemon.invoke_job(hosts, name, script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state(name, state),
        "never {state}: {}",
        daemon.job(name)
    );
}

#[test]
fn json_receive_ends_each_host_with_the_result_record_invoke_prints() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let script = "echo out; echo err >&2; exit 3";
    finished_job(&daemon, &fleet.hosts(), "res", script, "Failed");
    let got = ran(daemon.rjob().args(["receive", "res", "-o", "json"]));
    assert_eq!(got.code, 0, "{got}");
    let recs = records(&got.stdout);
    // What `rjob invoke -o json` prints as a host's result.
    let host0 = fleet.agents[0].host();
    let invoked = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host0, "-o", "json", "--script", script]));
    let invoke_result = records(&invoked.stdout)
        .into_iter()
        .find(|r| r["type"] == "result")
        .unwrap_or_else(|| panic!("no result record from invoke: {invoked}"));
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    for agent in &fleet.agents {
        let host = agent.host();
        let mine: Vec<&Value> = recs.iter().filter(|r| r["host"] == host.as_str()).collect();
        assert_eq!(mine.len(), 3, "two lines and a result for {host}: {got}");
        let result = mine[2];
        assert_eq!(result["type"], "result", "{got}");
        assert_eq!(result["state"], "Failed", "{got}");
        assert_eq!(result["exit_code"], 3, "{got}");
        assert_eq!(result["signal"], Value::Null, "{got}");
        assert!(result["duration_ms"].is_u64(), "{got}");
        assert_eq!(keys(result), keys(&invoke_result), "{got}\n{invoked}");
        assert_eq!(result["state"], invoke_result["state"]);
        assert_eq!(result["exit_code"], invoke_result["exit_code"]);
    }
    // The output was taken; the results are given again (the hosts are still finished).
    let again = ran(daemon.rjob().args(["receive", "res", "-o", "json"]));
    let recs = records(&again.stdout);
    assert_eq!(recs.len(), 2, "{again}");
    assert!(recs.iter().all(|r| r["type"] == "result"), "{again}");
    // Text output stays lines only.
    let text = ran(daemon.rjob().args(["receive", "res"]));
    assert_eq!(text.code, 0, "{text}");
    assert_eq!(text.stdout, "", "{text}");
}

#[test]
fn follow_json_emits_state_records_then_the_result() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let host = fleet.agents[0].host();
    let go = fleet.scratch().join("go");
    let script = format!(
        "echo ready; while [ ! -e {} ]; do sleep 0.05; done; echo done",
        go.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "ev", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("ev", "Running"), "{}", daemon.job("ev"));
    let mut rx = daemon.spawn_receive(&["ev", "--follow", "-o", "json"]);
    let mut pipe = BufReader::new(rx.stdout.take().expect("stdout"));
    let mut first = String::new();
    pipe.read_line(&mut first).expect("read");
    let first: Value = serde_json::from_str(&first).expect("json");
    assert_eq!(first["data"], "ready", "{first}");
    std::fs::write(&go, b"").expect("touch go");
    let mut rest = String::new();
    pipe.read_to_string(&mut rest).expect("read");
    let status = rx.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let recs = records(&rest);
    let state_at = recs
        .iter()
        .position(|r| r["type"] == "state")
        .unwrap_or_else(|| panic!("no state record: {rest}"));
    assert_eq!(recs[state_at]["job"], "ev", "{rest}");
    assert_eq!(recs[state_at]["host"], host.as_str(), "{rest}");
    assert_eq!(recs[state_at]["state"], "Completed", "{rest}");
    let result_at = recs
        .iter()
        .position(|r| r["type"] == "result")
        .unwrap_or_else(|| panic!("no result record: {rest}"));
    assert!(state_at < result_at, "{rest}");
    assert_eq!(recs[result_at]["state"], "Completed", "{rest}");
    assert!(recs.iter().any(|r| r["data"] == "done"), "{rest}");
    assert_eq!(recs.last().expect("records")["type"], "result", "{rest}");
}

#[test]
fn wait_auto_remove_removes_the_job_once_all_its_output_arrived() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let host = fleet.agents[0].host();
    let out = daemon.invoke_job(&fleet.hosts(), "auto", "seq 1 20000", &[]);
    assert_eq!(out.code, 0, "{out}");
    let got = ran(daemon.rjob().args(["receive", "auto", "--wait", "--auto-remove"]));
    assert_eq!(got.code, 0, "{got}");
    let expected: Vec<String> = (1..=20000).map(|n| n.to_string()).collect();
    assert_eq!(got.lines_of(&host), expected);
    assert!(
        wait_for(WAIT, || daemon.job("auto").is_null()),
        "the job is still there: {}",
        daemon.job("auto")
    );
    // --keep and --auto-remove together are refused.
    let bad = ran(daemon
        .rjob()
        .args(["receive", "x", "--wait", "--auto-remove", "--keep"]));
    assert_eq!(bad.code, 2, "{bad}");
}

#[test]
fn wait_auto_remove_keeps_the_job_when_the_reader_closes_early() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    finished_job(&daemon, &fleet.hosts(), "kept", "seq 1 300000", "Completed");
    // As `| head -n 1`: one line read, then the pipe closed.
    let mut rx = daemon.spawn_receive(&["kept", "--wait", "--auto-remove"]);
    let mut pipe = BufReader::new(rx.stdout.take().expect("stdout"));
    let mut line = String::new();
    pipe.read_line(&mut line).expect("read");
    drop(pipe);
    let mut stderr = String::new();
    rx.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = rx.wait().expect("wait");
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert!(stderr.contains("kept"), "{stderr}");
    let job = daemon.job("kept");
    assert_eq!(job["state"], "Completed", "the job was removed: {job}");
    // What the reader did not take is still there.
    let rest = ran(daemon.rjob().args(["receive", "kept"]));
    assert_eq!(rest.code, 0, "{rest}");
    assert!(rest.stdout.lines().count() > 1000, "{rest}");
}

#[test]
fn several_jobs_in_one_receive_are_labelled_by_job_and_host() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let host = fleet.agents[0].host();
    finished_job(&daemon, &fleet.hosts(), "ja", "echo a", "Completed");
    finished_job(&daemon, &fleet.hosts(), "jb", "echo b", "Completed");
    // One job: exactly as before.
    let one = ran(daemon.rjob().args(["receive", "ja", "--keep"]));
    assert_eq!(one.stdout, format!("{host}: a\n"), "{one}");
    let json = ran(daemon
        .rjob()
        .args(["receive", "ja", "jb", "--keep", "-o", "json"]));
    assert_eq!(json.code, 0, "{json}");
    let outputs: Vec<(String, String, String)> = records(&json.stdout)
        .iter()
        .filter(|r| r["type"] == "output")
        .map(|r| {
            (
                r["job"].as_str().unwrap_or_default().to_string(),
                r["host"].as_str().unwrap_or_default().to_string(),
                r["data"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        outputs,
        vec![
            ("ja".to_string(), host.clone(), "a".to_string()),
            ("jb".to_string(), host.clone(), "b".to_string())
        ],
        "{json}"
    );
    let results: Vec<Value> = records(&json.stdout)
        .into_iter()
        .filter(|r| r["type"] == "result")
        .collect();
    assert_eq!(results.len(), 2, "{json}");
    assert_eq!(results[0]["job"], "ja");
    assert_eq!(results[1]["job"], "jb");
    let text = ran(daemon.rjob().args(["receive", "ja", "jb"]));
    assert_eq!(text.code, 0, "{text}");
    assert_eq!(text.stdout, format!("ja/{host}: a\njb/{host}: b\n"), "{text}");
    // Consumed: nothing the second time.
    let again = ran(daemon.rjob().args(["receive", "ja", "jb"]));
    assert_eq!(again.stdout, "", "{again}");
    let missing = ran(daemon.rjob().args(["receive", "ja", "nosuch"]));
    assert_ne!(missing.code, 0, "{missing}");
}
