//! `rjob rerun JOB [--failed|--unreachable|--all]`: a new job with the earlier job's script,
//! arguments and settings, on the chosen hosts only; against real agents and a real daemon.

use rjob_tests::{free_port, ran, Daemon, Fleet};

/// The hosts of `job`'s children, in order, and their states.
fn children(daemon: &Daemon, job: &str) -> Vec<(String, String)> {
    let job = daemon.job(job);
    job["children"]
        .as_array()
        .unwrap_or_else(|| panic!("no children: {job}"))
        .iter()
        .map(|c| {
            (
                c["host"].as_str().unwrap_or_default().to_string(),
                c["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_rerun_of_the_failed_hosts_runs_only_them_with_the_same_script_and_arguments() {
    let fleet = Fleet::start(4).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let marks = fleet.scratch();
    let failing = [&fleet.agents[0], &fleet.agents[2]];
    for agent in failing {
        std::fs::write(marks.join(format!("fail.{}", agent.pid())), b"").expect("mark");
    }
    let closed = format!("127.0.0.9:{}", free_port("127.0.0.9".parse().expect("ip")));
    // The script's parent is its agent: a mark named by the agent's pid fails it.
    let script = format!(
        "echo \"$1\"; if [ -e '{}/fail.'$PPID ]; then exit 1; fi",
        marks.display()
    );
    let hosts = format!("{},{closed}", fleet.hosts());
    let first = daemon.invoke_job(
        &hosts,
        "first",
        &script,
        &["--connect-timeout", "2s", "-t", "3", "--", "hello"],
    );
    assert_eq!(first.code, 0, "{first}");
    ran(daemon.rjob().args(["wait", "first", "-q"]));
    let before = daemon.job("first");
    assert_eq!(before["state"], "Failed", "{before}");

    // The hosts are fixed now: the rerun completes.
    for agent in failing {
        std::fs::remove_file(marks.join(format!("fail.{}", agent.pid()))).expect("unmark");
    }
    let out = ran(daemon
        .rjob()
        .args(["rerun", "first", "--failed", "--job-name", "again"]));
    assert_eq!(out.code, 0, "{out}");
    let out = ran(daemon.rjob().args(["wait", "again", "-q"]));
    assert_eq!(out.code, 0, "the failed hosts completed this time: {out}");
    let want: Vec<(String, String)> = failing
        .iter()
        .map(|a| (a.host(), "Completed".to_string()))
        .collect();
    assert_eq!(
        children(&daemon, "again"),
        want,
        "only the failed hosts ran again"
    );
    let again = daemon.job("again");
    assert_eq!(
        again["throttle_limit"], 3,
        "the settings are the earlier job's: {again}"
    );
    assert_eq!(again["command"], before["command"], "{again}");
    let output = ran(daemon.rjob().args(["receive", "again"]));
    for agent in failing {
        assert_eq!(
            output.lines_of(&agent.host()),
            ["hello"],
            "the same arguments: {output}"
        );
    }

    // The unreachable host alone, and a choice with nothing in it.
    let out = ran(daemon
        .rjob()
        .args(["rerun", "first", "--unreachable", "--job-name", "far"]));
    assert_eq!(out.code, 0, "{out}");
    ran(daemon.rjob().args(["wait", "far", "-q"]));
    assert_eq!(children(&daemon, "far"), [(closed, "Failed".to_string())]);
    let out = ran(daemon.rjob().args(["rerun", "again", "--failed"]));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("has no failed hosts to rerun"), "{out}");
    let out = ran(daemon.rjob().args(["rerun", "first", "--failed", "--all"]));
    assert_eq!(out.code, 2, "one choice at a time: {out}");
}
