//! Sessions (`rjob session new|list|remove`, `rjob invoke --session`) against real agents
//! and a real daemon: invokes over a session pay no TLS handshake after the session's own,
//! a restarted agent is reconnected, and output, JSON, exit status and Ctrl-C are those of
//! the same invoke without a session.

use std::process::Stdio;

use rjob_tests::{process_alive, ran, wait_for, Daemon, Fleet, Ran, WAIT};

/// Completed TLS handshakes an agent logged (one line per accepted connection).
fn handshakes(agent: &rjob_tests::Agent) -> usize {
    agent.log_text().matches("TLS connection established").count()
}

/// `rjob session list --output json`, one record per session.
fn sessions(daemon: &Daemon) -> Vec<serde_json::Value> {
    let out = ran(daemon.rjob().args(["session", "list", "--output", "json"]));
    assert_eq!(out.code, 0, "{out}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::Null))
        .collect()
}

fn connected(daemon: &Daemon, name: &str) -> u64 {
    sessions(daemon)
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["connected"].as_u64())
        .unwrap_or(0)
}

fn invoke_over(daemon: &Daemon, session: &str, script: &str, extra: &[&str]) -> Ran {
    ran(daemon
        .rjob()
        .args(["invoke", "--session", session, "--script", script])
        .args(extra))
}

#[test]
fn sixteen_agents_five_invokes_no_handshake_after_the_first_and_a_restart_reconnects() {
    let mut fleet = Fleet::start(16).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let new = ran(daemon
        .rjob()
        .args(["session", "new", "web", "-H", &fleet.hosts(), "-t", "16"]));
    assert_eq!(new.code, 0, "{new}");
    assert!(
        new.stdout.contains("Session web: 16 hosts, 16 connected"),
        "{new}"
    );
    let first: Vec<usize> = fleet.agents.iter().map(handshakes).collect();
    assert!(
        first.iter().all(|&n| n == 1),
        "one handshake per agent: {first:?}"
    );

    for i in 0..5 {
        let out = invoke_over(&daemon, "web", &format!("echo round {i}"), &[]);
        assert_eq!(out.code, 0, "{out}");
        for agent in &fleet.agents {
            assert_eq!(out.lines_of(&agent.host()), [format!("round {i}")], "{out}");
        }
        assert!(out.stderr.contains("16 hosts: 16 Completed"), "{out}");
    }
    let after: Vec<usize> = fleet.agents.iter().map(handshakes).collect();
    assert_eq!(after, first, "an invoke over the session dialled again");

    // One agent restarts: the session dials it again by itself, and the next invoke runs
    // on all 16.
    fleet.restart_agent(3).expect("restart");
    assert!(
        wait_for(WAIT, || handshakes(&fleet.agents[3]) >= 2
            && connected(&daemon, "web") == 16),
        "the session did not reconnect: {:?}\n{}",
        sessions(&daemon),
        daemon.log_text()
    );
    let out = invoke_over(&daemon, "web", "echo back", &[]);
    assert_eq!(out.code, 0, "{out}");
    for agent in &fleet.agents {
        assert_eq!(out.lines_of(&agent.host()), ["back"], "{out}");
    }
    let others: Vec<usize> = fleet
        .agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, a)| handshakes(a))
        .collect();
    assert!(others.iter().all(|&n| n == 1), "{others:?}");
}

/// What an invoke printed, without its timings: the summary's durations differ run to run,
/// and how the agent cut the output into chunks (`seq`) depends on timing too.
fn timeless(out: &Ran) -> (i32, String, Vec<String>) {
    let json_stdout: Vec<String> = out
        .stdout
        .lines()
        .map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(mut v) if v.is_object() => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("duration_ms");
                    o.remove("seq");
                }
                v.to_string()
            }
            _ => l.to_string(),
        })
        .collect();
    let summary = out
        .stderr
        .lines()
        .filter(|l| l.contains("hosts:"))
        .map(|l| l.split(" in ").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    (out.code, summary, json_stdout)
}

#[test]
fn output_json_and_exit_status_are_those_without_a_session() {
    let fleet = Fleet::start(3).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let new = ran(daemon.rjob().args(["session", "new", "s", "-H", &fleet.hosts()]));
    assert_eq!(new.code, 0, "{new}");
    let script = "for i in 1 2 3; do echo \"line $i $1\"; done; echo warn >&2; exit 3";
    let hosts = fleet.hosts();
    for extra in [
        &["--sort"][..],
        &["--output", "json"][..],
        &["--gather"][..],
        &["--output", "json", "--gather"][..],
    ] {
        let mut direct = vec!["invoke", "-H", &hosts, "--script", script];
        direct.extend_from_slice(extra);
        direct.extend_from_slice(&["--", "x"]);
        let without = ran(daemon.rjob().args(&direct));
        let mut over = extra.to_vec();
        over.extend_from_slice(&["--", "x"]);
        let with = invoke_over(&daemon, "s", script, &over);
        assert_eq!(without.code, 1, "{without}");
        let (a, b) = (timeless(&without), timeless(&with));
        let mut a_lines = a.2.clone();
        let mut b_lines = b.2.clone();
        if extra.contains(&"json") {
            // Hosts interleave in their own order; each host's records keep theirs.
            a_lines.sort();
            b_lines.sort();
        }
        assert_eq!(
            (a.0, &a.1, a_lines),
            (b.0, &b.1, b_lines),
            "{extra:?}\n{without}\n{with}"
        );
    }
    // A script that succeeds everywhere: 0 both ways.
    let ok = invoke_over(&daemon, "s", "true", &[]);
    assert_eq!(ok.code, 0, "{ok}");
}

#[test]
fn ctrl_c_during_a_session_invoke_stops_the_remote_runs() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let new = ran(daemon.rjob().args(["session", "new", "s", "-H", &fleet.hosts()]));
    assert_eq!(new.code, 0, "{new}");
    let pids = fleet.scratch();
    let script = format!(
        "echo started; echo $$ > {}/$(date +%s%N).pid; sleep 600",
        pids.display()
    );
    let child = daemon
        .rjob()
        .args(["invoke", "--session", "s", "--script", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rjob");
    assert!(
        wait_for(WAIT, || std::fs::read_dir(&pids).map(|d| d.count()).unwrap_or(0)
            == 2),
        "the runs did not start"
    );
    let rjob_pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(rjob_pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = Ran::of(child.wait_with_output().expect("wait"));
    assert_eq!(out.code, 130, "{out}");
    assert!(out.stderr.contains("2 Stopped"), "{out}");
    let run_pids: Vec<i32> = std::fs::read_dir(&pids)
        .expect("pids")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    assert_eq!(run_pids.len(), 2);
    assert!(
        wait_for(WAIT, || run_pids.iter().all(|p| !process_alive(*p))),
        "runs survived Ctrl-C"
    );
}

#[test]
fn list_remove_as_job_and_an_unknown_session() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let new = ran(daemon
        .rjob()
        .args(["session", "new", "web", "-H", &fleet.hosts()]));
    assert_eq!(new.code, 0, "{new}");
    let list = ran(daemon.rjob().args(["session", "list"]));
    assert_eq!(list.code, 0, "{list}");
    let header = list.stdout.lines().next().unwrap_or_default();
    for column in ["NAME", "HOSTS", "CONNECTED", "DISCONNECTED", "AGE"] {
        assert!(header.contains(column), "{list}");
    }
    let row: Vec<&str> = list
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["web", "2", "2", "0"], "{list}");
    let records = sessions(&daemon);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["type"], "session");
    assert_eq!(records[0]["hosts"].as_array().map(Vec::len), Some(2));
    assert_eq!(records[0]["disconnected"], 0);

    // The same name again is refused; the session stays.
    let again = ran(daemon
        .rjob()
        .args(["session", "new", "web", "-H", &fleet.hosts()]));
    assert_eq!(again.code, 2, "{again}");
    assert!(again.stderr.contains("exists already"), "{again}");

    // --as-job over the session: no new handshake, the output is kept as any job's.
    let before: Vec<usize> = fleet.agents.iter().map(handshakes).collect();
    let job = ran(daemon.rjob().args([
        "invoke",
        "--session",
        "web",
        "--as-job",
        "--job-name",
        "sj",
        "--script",
        "echo kept",
    ]));
    assert_eq!(job.code, 0, "{job}");
    let waited = ran(daemon.rjob().args(["wait", "sj"]));
    assert_eq!(waited.code, 0, "{waited}");
    let received = ran(daemon.rjob().args(["receive", "sj"]));
    for agent in &fleet.agents {
        assert_eq!(received.lines_of(&agent.host()), ["kept"], "{received}");
    }
    let after: Vec<usize> = fleet.agents.iter().map(handshakes).collect();
    assert_eq!(before, after, "the job dialled again");

    // An unknown session: one line naming it and `rjob session list`.
    let unknown = invoke_over(&daemon, "nope", "true", &[]);
    assert_eq!(unknown.code, 2, "{unknown}");
    assert_eq!(unknown.stderr.lines().count(), 1, "{unknown}");
    assert!(
        unknown.stderr.contains("\"nope\"") && unknown.stderr.contains("rjob session list"),
        "{unknown}"
    );

    let removed = ran(daemon.rjob().args(["session", "remove", "web"]));
    assert_eq!(removed.code, 0, "{removed}");
    assert!(sessions(&daemon).is_empty());
    let gone = invoke_over(&daemon, "web", "true", &[]);
    assert_eq!(gone.code, 2, "{gone}");
    let twice = ran(daemon.rjob().args(["session", "remove", "web"]));
    assert_eq!(twice.code, 2, "{twice}");
    assert!(twice.stderr.contains("no session"), "{twice}");
}

/// A session outlives its daemon: after a restart it is listed with the age it had, its
/// hosts are dialled again, and invokes over it run; a removed session stays removed.
#[test]
fn a_session_is_opened_again_by_the_next_daemon_and_a_removed_one_is_not() {
    let fleet = Fleet::start(4).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let new = ran(daemon
        .rjob()
        .args(["session", "new", "kept", "-H", &fleet.hosts(), "-t", "4"]));
    assert_eq!(new.code, 0, "{new}");
    let created = sessions(&daemon)[0]["created_at"].clone();
    assert!(created.is_string(), "{created}");

    daemon.restart().expect("restart the daemon");
    assert!(
        wait_for(WAIT, || connected(&daemon, "kept") == 4),
        "the session was not opened again: {:?}\n{}",
        sessions(&daemon),
        daemon.log_text()
    );
    let listed = sessions(&daemon);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["created_at"], created, "the session keeps its age");
    assert_eq!(listed[0]["throttle_limit"], 4);
    let out = invoke_over(&daemon, "kept", "echo after-restart", &[]);
    assert_eq!(out.code, 0, "{out}");
    for agent in &fleet.agents {
        assert_eq!(out.lines_of(&agent.host()), ["after-restart"], "{out}");
    }

    let removed = ran(daemon.rjob().args(["session", "remove", "kept"]));
    assert_eq!(removed.code, 0, "{removed}");
    daemon.restart().expect("restart the daemon again");
    assert!(sessions(&daemon).is_empty(), "a removed session came back");
}
