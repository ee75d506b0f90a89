//! Background jobs: the real daemon (`rjob serve`) and real agents.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rjob_tests::{process_alive, ran, wait_for, Daemon, Fleet, Proxy, WAIT};

/// Lines per host from `rjob receive` text output.
fn by_host(stdout: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((host, text)) = line.split_once(": ") {
            map.entry(host.to_string()).or_default().push(text.to_string());
        }
    }
    map
}

fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line{i}")).collect()
}

#[test]
fn a_named_job_runs_completes_and_its_output_is_received_once_or_kept() {
    let fleet = Fleet::start(5).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let script = "for i in $(seq 1 5); do echo line$i; sleep 0.2; done";
    let out = daemon.invoke_job(&fleet.hosts(), "patch-check", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Name patch-check"), "{out}");
    assert!(
        daemon.wait_state("patch-check", "Running"),
        "never Running: {}",
        daemon.job("patch-check")
    );
    assert!(
        daemon.wait_state("patch-check", "Completed"),
        "never Completed: {}",
        daemon.job("patch-check")
    );
    let job = daemon.job("patch-check");
    assert_eq!(job["has_more_data"], true);
    assert_eq!((&job["done"], &job["total"]), (&5.into(), &5.into()), "{job}");

    let first = ran(daemon.rjob().args(["receive", "patch-check"]));
    assert_eq!(first.code, 0, "{first}");
    let hosts = by_host(&first.stdout);
    assert_eq!(hosts.len(), 5, "{first}");
    for agent in &fleet.agents {
        assert_eq!(hosts.get(&agent.host()), Some(&numbered(5)), "{first}");
    }
    let second = ran(daemon.rjob().args(["receive", "patch-check"]));
    assert_eq!(second.code, 0, "{second}");
    assert_eq!(second.stdout, "", "a second receive returned output again");
    assert_eq!(daemon.job("patch-check")["has_more_data"], false);

    // With --keep, the same output twice.
    let out = daemon.invoke_job(&fleet.hosts(), "kept", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran(daemon.rjob().args(["wait", "kept"])).code, 0);
    let a = ran(daemon.rjob().args(["receive", "kept", "--keep"]));
    let b = ran(daemon.rjob().args(["receive", "kept", "--keep"]));
    assert_eq!(by_host(&a.stdout).len(), 5, "{a}");
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(daemon.job("kept")["has_more_data"], true);
}

#[test]
fn wait_any_returns_with_the_first_job_and_wait_timeout_leaves_the_job_running() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let start = |name: &str, script: &str| {
        let out = daemon.invoke_job(&fleet.hosts(), name, script, &[]);
        assert_eq!(out.code, 0, "{out}");
    };
    start("short", "sleep 1");
    start("long", "sleep 60");
    let began = Instant::now();
    let out = ran(daemon.rjob().args(["wait", "short", "long", "--any"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "wait --any took {:?}",
        began.elapsed()
    );
    assert_eq!(daemon.job("short")["state"], "Completed");
    assert_eq!(daemon.job("long")["state"], "Running");

    let began = Instant::now();
    let out = ran(daemon.rjob().args(["wait", "long", "--timeout", "1s"]));
    let took = began.elapsed();
    assert_eq!(out.code, 3, "{out}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(daemon.job("long")["state"], "Running");
    assert_eq!(ran(daemon.rjob().args(["stop", "long"])).code, 0);
}

#[test]
fn stop_ends_every_run_and_leaves_no_process_behind() {
    let fleet = Fleet::start(3).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let pids = fleet.scratch();
    let script = format!("echo $$ > {}/$1.pid; sleep 600 & sleep 600", pids.display());
    for agent in &fleet.agents {
        let name = format!("sleeper-{}", agent.addr.ip());
        let ip = agent.addr.ip().to_string();
        let out = daemon.invoke_job(&agent.host(), &name, &script, &["--", &ip]);
        assert_eq!(out.code, 0, "{out}");
    }
    // One job over all three as well.
    // A file per run: the three agents share one host name, and three shells writing one file
    // at once can leave it unparseable.
    let all = format!("echo $$ > {}/all-$$-$1.pid; sleep 600", pids.display());
    assert_eq!(
        daemon
            .invoke_job(&fleet.hosts(), "fleet-sleep", &all, &["--", "x"])
            .code,
        0
    );
    assert!(daemon.wait_state("fleet-sleep", "Running"));
    assert!(wait_for(WAIT, || std::fs::read_dir(&pids)
        .map(|d| d.count())
        .unwrap_or(0)
        >= 6));
    let out = ran(daemon.rjob().args(["stop", "fleet-sleep"]));
    assert_eq!(out.code, 0, "{out}");
    for agent in &fleet.agents {
        let out = ran(daemon
            .rjob()
            .args(["stop", &format!("sleeper-{}", agent.addr.ip())]));
        assert_eq!(out.code, 0, "{out}");
    }
    assert!(
        daemon.wait_state("fleet-sleep", "Stopped"),
        "{}",
        daemon.job("fleet-sleep")
    );
    for agent in &fleet.agents {
        assert!(daemon.wait_state(&format!("sleeper-{}", agent.addr.ip()), "Stopped"));
    }
    let pid_values: Vec<i32> = std::fs::read_dir(&pids)
        .expect("pid dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    assert!(pid_values.len() >= 6, "{pid_values:?}");
    assert!(
        wait_for(WAIT, || pid_values.iter().all(|p| !process_alive(*p))),
        "runs survived stop: {pid_values:?}"
    );
    // Nothing of the runs is left: no sleep 600 whose session is one of the runs.
    let leftovers = ran(std::process::Command::new("pgrep").args(["-f", "sleep 600"]));
    for pid in leftovers
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
    {
        let sid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.split_whitespace().nth(3).unwrap_or("").to_string())
            })
            .and_then(|s| s.parse::<i32>().ok());
        assert!(
            sid.is_none_or(|sid| !pid_values.contains(&sid)),
            "process {pid} of a stopped run is still alive"
        );
    }
}

#[test]
fn suspend_freezes_a_job_and_resume_lets_it_go_on() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let dir = fleet.scratch();
    let script = format!(
        "i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo $i > {}/count-$1.tmp; mv {d}/count-$1.tmp {d}/count-$1; sleep 0.05; done",
        dir.display(),
        d = dir.display()
    );
    assert_eq!(
        daemon
            .invoke_job(&fleet.hosts(), "counter", &script, &["--", "c"])
            .code,
        0
    );
    let counter = dir.join("count-c");
    let read = || {
        std::fs::read_to_string(&counter)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    assert!(wait_for(WAIT, || read() > 5), "the counter never moved");

    let out = ran(daemon.rjob().args(["suspend", "counter"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("counter", "Suspended"),
        "{}",
        daemon.job("counter")
    );
    std::thread::sleep(Duration::from_millis(200));
    let frozen = read();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(read(), frozen, "the counter moved while suspended");

    let out = ran(daemon.rjob().args(["resume", "counter"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("counter", "Running"),
        "{}",
        daemon.job("counter")
    );
    assert!(
        wait_for(WAIT, || read() > frozen + 5),
        "the counter did not go on after resume"
    );
    assert_eq!(ran(daemon.rjob().args(["stop", "counter"])).code, 0);
}

#[test]
fn a_daemon_killed_mid_job_picks_it_up_again_and_loses_nothing() {
    let fleet = Fleet::start(3).expect("fleet");
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let script = "for i in $(seq 1 40); do echo line$i; sleep 0.05; done";
    let out = daemon.invoke_job(&fleet.hosts(), "crash", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("crash", "Running"));
    std::thread::sleep(Duration::from_millis(700));
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(500));
    daemon.restart().expect("restart");
    let job = daemon.job("crash");
    assert_eq!(
        job["name"], "crash",
        "the job is still listed after the restart: {job}"
    );
    let out = ran(daemon.rjob().args(["wait", "crash", "--timeout", "30s"]));
    assert_eq!(out.code, 0, "{out}\n{}", daemon.log_text());
    let received = ran(daemon.rjob().args(["receive", "crash"]));
    let hosts = by_host(&received.stdout);
    for agent in &fleet.agents {
        assert_eq!(hosts.get(&agent.host()), Some(&numbered(40)), "{received}");
    }
}

#[test]
fn a_connection_cut_mid_run_shows_disconnected_then_completes_without_loss_or_duplicates() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let agent = &fleet.agents[0];
    let std::net::IpAddr::V4(ip) = agent.addr.ip() else {
        panic!("IPv4 agent")
    };
    let proxy = Proxy::start(ip, agent.addr).expect("proxy");
    let script = "for i in $(seq 1 60); do echo line$i; sleep 0.1; done";
    let out = daemon.invoke_job(&proxy.addr.to_string(), "cut", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("cut", "Running"));
    std::thread::sleep(Duration::from_millis(1500));
    proxy.cut();
    assert!(daemon.wait_state("cut", "Disconnected"), "{}", daemon.job("cut"));
    std::thread::sleep(Duration::from_millis(1500));
    proxy.reopen();
    assert!(
        wait_for(WAIT, || matches!(
            daemon.job("cut")["state"].as_str(),
            Some("Running" | "Completed")
        )),
        "{}",
        daemon.job("cut")
    );
    let out = ran(daemon.rjob().args(["wait", "cut", "--timeout", "30s"]));
    assert_eq!(out.code, 0, "{out}");
    let received = ran(daemon.rjob().args(["receive", "cut"]));
    let hosts = by_host(&received.stdout);
    assert_eq!(
        hosts.get(&proxy.addr.to_string()),
        Some(&numbered(60)),
        "{received}"
    );
}

#[test]
fn local_background_jobs_run_on_this_machine_with_the_same_model() {
    let fleet = Fleet::start(0).expect("no agents");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let out = ran(daemon.rjob().args([
        "start",
        "--name",
        "here",
        "--script",
        "echo \"$1 from $(id -un)\"; exit 4",
        "--",
        "hi",
    ]));
    assert_eq!(out.code, 0, "{out}");
    let out = ran(daemon.rjob().args(["wait", "here"]));
    assert_eq!(out.code, 1, "a failed job makes wait exit 1: {out}");
    let job = daemon.job("here");
    assert_eq!(job["state"], "Failed");
    assert_eq!(job["location"], "local");
    assert_eq!(job["children"][0]["exit_code"], 4);
    let received = ran(daemon.rjob().args(["receive", "here"]));
    assert!(received.stdout.starts_with("localhost: hi from "), "{received}");
}

#[test]
fn bad_job_references_and_operations_get_one_line_errors() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let expect_error = |args: &[&str], needle: &str| {
        let out = ran(daemon.rjob().args(args));
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "{args:?}: one line expected: {out}"
        );
        assert!(
            out.stderr.contains(needle),
            "{args:?}: should mention {needle:?}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    };
    expect_error(&["receive", "nosuchjob"], "no job \"nosuchjob\"");
    expect_error(&["wait", "42"], "no job \"42\"");
    for _ in 0..2 {
        let out = daemon.invoke_job(&fleet.hosts(), "twin", "sleep 60", &[]);
        assert_eq!(out.code, 0, "{out}");
    }
    expect_error(&["stop", "twin"], "ambiguous");
    let ids: Vec<String> = ran(daemon.rjob().args(["jobs", "--name", "twin", "--output", "json"]))
        .stdout
        .parse::<serde_json::Value>()
        .ok()
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().map(|j| j["id"].to_string()).collect())
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), 2);
    assert!(daemon.wait_state(&ids[0], "Running"));
    expect_error(&["remove", &ids[0]], "--force");
    assert_eq!(
        daemon.job(&ids[0])["state"],
        "Running",
        "a refused remove changed nothing"
    );
    let out = ran(daemon.rjob().args(["remove", "--force", &ids[0], &ids[1]]));
    assert_eq!(out.code, 0, "{out}");
    expect_error(&["receive", &ids[0]], "no job");
    expect_error(&["jobs", "--state", "Sleeping"], "unknown state");
}

#[test]
fn an_agent_restart_mid_run_is_reported_with_a_reason_not_left_running() {
    let mut fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let script = "for i in $(seq 1 100); do echo line$i; sleep 0.1; done";
    let out = daemon.invoke_job(&fleet.hosts(), "restarted", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("restarted", "Running"));
    std::thread::sleep(Duration::from_millis(1000));
    fleet.restart_agent(0).expect("restart agent");
    let out = ran(daemon.rjob().args(["wait", "restarted", "--timeout", "60s"]));
    assert_eq!(out.code, 1, "the job ends Failed: {out}");
    let job = daemon.job("restarted");
    assert_eq!(job["state"], "Failed", "{job}");
    let children = job["children"].as_array().cloned().unwrap_or_default();
    let restarted = children
        .iter()
        .find(|c| c["host"] == fleet.agents[0].host().as_str())
        .expect("child of the restarted agent");
    assert_eq!(restarted["state"], "Failed", "{job}");
    assert!(
        restarted["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("agent restarted"),
        "{job}"
    );
    let other = children
        .iter()
        .find(|c| c["host"] == fleet.agents[1].host().as_str())
        .expect("the other child");
    assert_eq!(other["state"], "Completed", "{job}");
    // What the restarted agent had spooled before it died is kept and received.
    let received = ran(daemon
        .rjob()
        .args(["receive", "restarted", "--host", &fleet.agents[0].host()]));
    let lines = by_host(&received.stdout)
        .remove(&fleet.agents[0].host())
        .unwrap_or_default();
    assert!(!lines.is_empty() && lines == numbered(lines.len()), "{received}");
}
