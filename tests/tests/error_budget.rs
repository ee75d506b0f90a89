//! The error budget (`--max-errors N|N%`): once more than N hosts failed, no new host starts,
//! those in flight finish, and the rest end Stopped with cause "skipped"; for `rjob invoke`
//! and for a daemon's job (which keeps its budget across a restart). And `--throttle-limit N%`.

use rjob_tests::{ran, Daemon, Fleet, Ran};

/// Ten agents; the script fails (exit 1) on five of them, every other one.
fn half_failing() -> (Fleet, String) {
    let fleet = Fleet::start(10).expect("fleet");
    let marks = fleet.scratch();
    for agent in fleet.agents.iter().step_by(2) {
        std::fs::write(marks.join(format!("fail.{}", agent.pid())), b"").expect("mark");
    }
    // The script's parent is its agent: a mark named by the agent's pid fails it.
    let script = format!(
        "if [ -e '{}/fail.'$PPID ]; then exit 1; fi; echo fine",
        marks.display()
    );
    (fleet, script)
}

/// The result records of an `--output json` run.
fn results(out: &Ran) -> Vec<serde_json::Value> {
    out.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "result")
        .collect()
}

fn count(records: &[serde_json::Value], field: &str, value: &str) -> usize {
    records.iter().filter(|r| r[field] == value).count()
}

#[test]
fn invoke_stops_starting_hosts_once_the_budget_is_spent() {
    let (fleet, script) = half_failing();
    let throttle = 2;
    let out = ran(fleet
        .rjob()
        .args([
            "invoke",
            "-H",
            &fleet.hosts(),
            "--output",
            "json",
            "--max-errors",
            "2",
        ])
        .args(["-t", &throttle.to_string(), "--script", &script]));
    assert_eq!(out.code, 5, "the budget stopped the fan-out: {out}");
    let records = results(&out);
    assert_eq!(records.len(), 10, "{out}");
    let failed = count(&records, "state", "Failed");
    let skipped = count(&records, "cause", "skipped");
    let completed = count(&records, "state", "Completed");
    assert!(
        failed > 2,
        "more than 2 failed before the budget stopped it: {out}"
    );
    assert!(
        failed <= 2 + throttle,
        "at most 2 failures and those in flight: {out}"
    );
    assert!(skipped >= 1, "{out}");
    assert_eq!(failed + skipped + completed, 10, "{out}");
    for r in records.iter().filter(|r| r["cause"] == "skipped") {
        assert_eq!(r["state"], "Stopped", "{out}");
        assert_eq!(r["error"], "Skipped: error budget of 2 reached", "{out}");
    }
    assert!(
        out.stderr.contains(&format!("{skipped} skipped")),
        "the summary counts the skipped hosts: {out}"
    );
    assert!(out.stderr.contains("Skipped: error budget of 2 reached"), "{out}");
}

#[test]
fn a_budget_that_is_never_spent_changes_nothing() {
    let (fleet, script) = half_failing();
    let out = ran(fleet
        .rjob()
        .args([
            "invoke",
            "-H",
            &fleet.hosts(),
            "--output",
            "json",
            "--max-errors",
            "50%",
        ])
        .args(["--script", &script]));
    assert_eq!(out.code, 1, "5 failures are within 50% of 10 hosts: {out}");
    let records = results(&out);
    assert_eq!(count(&records, "state", "Failed"), 5, "{out}");
    assert_eq!(count(&records, "cause", "skipped"), 0, "{out}");
}

#[test]
fn a_job_keeps_its_budget_in_the_store_and_across_a_restart() {
    let (fleet, script) = half_failing();
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let created = daemon.invoke_job(
        &fleet.hosts(),
        "budget",
        &script,
        &["--max-errors", "20%", "-t", "1"],
    );
    assert_eq!(created.code, 0, "{created}");
    ran(daemon.rjob().args(["wait", "budget"]));
    let job = daemon.job("budget");
    assert_eq!(job["max_errors"], 2, "20% of 10 hosts: {job}");
    let children = job["children"].as_array().expect("children").clone();
    assert_eq!(children.len(), 10, "{job}");
    let failed = count(&children, "state", "Failed");
    let skipped = count(&children, "cause", "skipped");
    // One at a time: the third failure is the last host to start.
    assert_eq!(failed, 3, "{job}");
    assert!(skipped >= 1, "{job}");
    for c in children.iter().filter(|c| c["cause"] == "skipped") {
        assert_eq!(c["reason"], "Skipped: error budget of 2 reached", "{job}");
    }
    daemon.restart().expect("restart");
    assert_eq!(
        daemon.job("budget")["max_errors"],
        2,
        "the store keeps the budget"
    );
}

#[test]
fn throttle_and_budget_take_percentages_and_refuse_nonsense() {
    let fleet = Fleet::start(2).expect("fleet");
    let ok = ran(fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "-t", "10%", "--max-errors", "0%"])
        .args(["--script", "echo ok"]));
    assert_eq!(ok.code, 0, "10% of 2 hosts still runs one at a time: {ok}");
    for bad in [["-t", "101%"], ["--max-errors", "x"]] {
        let out = ran(fleet
            .rjob()
            .args(["invoke", "-H", &fleet.hosts()])
            .args(bad)
            .args(["--script", "echo never"]));
        assert_eq!(out.code, 2, "{bad:?}: {out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
}
