//! The PowerShell job model (issue 13): Wait-Job's terminating states, HasMoreData, Start-Job's
//! directory, the throttle limit's default, `--state` on wait/stop/remove and Get-Job's
//! filters. The real daemon and real agents.

use std::process::Stdio;

use rjob_tests::{ran, Daemon, Fleet, Ran};

/// A script that waits until the file `gate` exists, then prints `done`.
fn gated(gate: &std::path::Path) -> String {
    format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo done",
        gate.display()
    )
}

#[test]
fn wait_returns_on_suspended_with_status_4_and_force_waits_for_a_final_state() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let gate = fleet.scratch().join("gate");
    let out = daemon.invoke_job(&fleet.hosts(), "held", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("held", "Running"), "{}", daemon.job("held"));
    let out = ran(daemon.rjob().args(["suspend", "held"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("held", "Suspended"), "{}", daemon.job("held"));

    // Untimed: Suspended is one of Wait-Job's terminating states.
    let out = ran(daemon.rjob().args(["wait", "held", "-q"]));
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stdout.contains("Suspended"), "{out}");
    let out = ran(daemon.rjob().args(["wait", "held", "--any", "-o", "json"]));
    assert_eq!(out.code, 4, "{out}");

    // --force waits through it: with a timeout it times out, untimed it waits on.
    let out = ran(daemon
        .rjob()
        .args(["wait", "held", "--force", "--timeout", "1s", "-q"]));
    assert_eq!(out.code, 3, "{out}");
    let mut forced = daemon
        .rjob()
        .args(["wait", "held", "--force", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rjob wait --force");
    let out = ran(daemon.rjob().args(["resume", "held"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("held", "Running"), "{}", daemon.job("held"));
    assert!(
        forced.try_wait().expect("try_wait").is_none(),
        "wait --force returned while the job was suspended"
    );
    std::fs::write(&gate, "").expect("gate");
    let out = Ran::of(forced.wait_with_output().expect("wait --force"));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Completed"), "{out}");
    assert_eq!(daemon.job("held")["state"], "Completed");
}

#[test]
fn has_more_data_is_true_while_a_job_runs_even_before_it_wrote_anything() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let gate = fleet.scratch().join("gate");
    let out = daemon.invoke_job(&fleet.hosts(), "quiet", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("quiet", "Running"), "{}", daemon.job("quiet"));
    let job = daemon.job("quiet");
    assert_eq!(job["has_more_data"], true, "{job}");
    for child in job["children"].as_array().expect("children") {
        assert_eq!(child["has_more_data"], true, "{job}");
    }
    let table = ran(daemon.rjob().args(["jobs", "quiet"]));
    let row = table.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(row.contains("Running") && row.contains("True"), "{table}");
    // A receive of nothing yet leaves it true: the "receive while HasMoreData" loop goes on.
    let out = ran(daemon.rjob().args(["receive", "quiet"]));
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out}");
    assert_eq!(daemon.job("quiet")["has_more_data"], true);

    std::fs::write(&gate, "").expect("gate");
    assert!(daemon.wait_state("quiet", "Completed"), "{}", daemon.job("quiet"));
    assert_eq!(
        daemon.job("quiet")["has_more_data"],
        true,
        "its output is not received yet"
    );
    let out = ran(daemon.rjob().args(["receive", "quiet"]));
    assert_eq!(
        out.stdout.lines().filter(|l| l.ends_with(": done")).count(),
        2,
        "{out}"
    );
    assert_eq!(daemon.job("quiet")["has_more_data"], false);

    // A job that ends without output has no more data.
    let out = daemon.invoke_job(&fleet.hosts(), "silent", "true", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("silent", "Completed"),
        "{}",
        daemon.job("silent")
    );
    assert_eq!(daemon.job("silent")["has_more_data"], false);
}

/// A script that holds until `n` runs have reached it (each leaves a file in `dir`), so it
/// ends only when `n` runs are in flight at once; it gives up after 30s with exit 7.
fn barrier(dir: &std::path::Path, n: usize) -> String {
    format!(
        "mkdir -p {d}; touch {d}/run.$$; i=0; \
         while [ $(ls {d} | wc -l) -lt {n} ]; do i=$((i+1)); [ $i -gt 600 ] && exit 7; sleep 0.05; done; echo met",
        d = dir.display()
    )
}

#[test]
fn throttle_limit_0_means_the_default_32_for_invoke_and_as_job() {
    let fleet = Fleet::start(3).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let scratch = fleet.scratch();
    // Three runs must be in flight at once: a limit of 1 would never meet the barrier.
    let out = ran(daemon.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--throttle-limit",
        "0",
        "-q",
        "--script",
        &barrier(&scratch.join("live"), 3),
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout.lines().filter(|l| l.ends_with(": met")).count(),
        3,
        "{out}"
    );

    let script = barrier(&scratch.join("job"), 3);
    let out = daemon.invoke_job(&fleet.hosts(), "zero", &script, &["--throttle-limit", "0"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(daemon.job("zero")["throttle_limit"], 32);
    let out = ran(daemon.rjob().args(["wait", "zero", "-q"]));
    assert_eq!(out.code, 0, "{out}");

    let out = ran(daemon
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "-t", "-1", "-s", "true"]));
    assert_eq!(out.code, 2, "{out}");
}

/// The lines a job printed, without their host labels, after it completed.
fn received_lines(daemon: &Daemon, job: &str) -> Vec<String> {
    let out = ran(daemon.rjob().args(["wait", job, "-q"]));
    assert_eq!(out.code, 0, "{out}");
    let out = ran(daemon.rjob().args(["receive", job]));
    assert_eq!(out.code, 0, "{out}");
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, text)| text.to_string()))
        .collect()
}

#[test]
fn start_runs_in_the_callers_directory_and_remote_jobs_in_the_home_directory() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let here = fleet.scratch().join("caller dir");
    std::fs::create_dir_all(&here).expect("mkdir");
    let here = here.canonicalize().expect("canonical");
    let out = ran(daemon
        .rjob()
        .current_dir(&here)
        .args(["start", "--name", "local-pwd", "--script", "pwd"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(received_lines(&daemon, "local-pwd"), [here.display().to_string()]);

    // --cwd still decides.
    let out = ran(daemon
        .rjob()
        .current_dir(&here)
        .args(["start", "--name", "tmp-pwd", "--cwd", "/tmp", "--script", "pwd"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(received_lines(&daemon, "tmp-pwd"), ["/tmp"]);

    // A remote job keeps the run user's home, as a live invoke has it.
    let live =
        ran(daemon
            .rjob()
            .current_dir(&here)
            .args(["invoke", "-H", &fleet.hosts(), "-q", "--script", "pwd"]));
    assert_eq!(live.code, 0, "{live}");
    let home: Vec<String> = live
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, t)| t.to_string()))
        .collect();
    assert_eq!(home.len(), 1, "{live}");
    assert_ne!(home[0], here.display().to_string());
    let out = ran(daemon.rjob().current_dir(&here).args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--as-job",
        "--job-name",
        "remote-pwd",
        "--script",
        "pwd",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(received_lines(&daemon, "remote-pwd"), home);

    // An empty --cwd stays refused.
    for args in [
        vec!["start", "--cwd", "", "--script", "pwd"],
        vec!["invoke", "-H", "127.0.0.1", "--cwd", "", "--script", "pwd"],
    ] {
        let out = ran(daemon.rjob().current_dir(&here).args(&args));
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(out.stderr.contains("--cwd"), "{args:?}: {out}");
    }
}

#[test]
fn state_selects_the_jobs_of_wait_stop_and_remove() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let gate = fleet.scratch().join("gate");
    for (name, script) in [
        ("done1", "true".to_string()),
        ("done2", "echo hi".into()),
        ("bad", "exit 3".into()),
    ] {
        let out = daemon.invoke_job(&fleet.hosts(), name, &script, &[]);
        assert_eq!(out.code, 0, "{out}");
    }
    let out = ran(daemon.rjob().args(["wait", "done1", "done2", "bad", "-q"]));
    assert_eq!(out.code, 1, "{out}");
    let out = daemon.invoke_job(&fleet.hosts(), "long", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("long", "Running"), "{}", daemon.job("long"));

    // wait --state: every job in that state.
    let out = ran(daemon.rjob().args(["wait", "--state", "Failed", "-q"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains("bad") && !out.stdout.contains("done1"),
        "{out}"
    );
    let out = ran(daemon
        .rjob()
        .args(["wait", "--state", "Running", "--timeout", "500ms", "-q"]));
    assert_eq!(out.code, 3, "{out}");
    assert!(
        out.stdout.contains("long") && !out.stdout.contains("bad"),
        "{out}"
    );

    // stop --state Running stops only the running one.
    let out = ran(daemon.rjob().args(["stop", "--state", "running"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(out.stdout.contains("long"), "{out}");
    assert!(daemon.wait_state("long", "Stopped"), "{}", daemon.job("long"));
    assert_eq!(daemon.job("done1")["state"], "Completed");

    // remove --state Completed: the clean-up.
    let out = ran(daemon.rjob().args(["remove", "--state", "Completed"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
    assert_eq!(listed(&daemon, &[]), ["bad", "long"]);
    let out = ran(daemon.rjob().args(["remove", "--state", "Completed"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("no job is Completed"), "{out}");
    // With job names too: only those of them in the state.
    let out = ran(daemon
        .rjob()
        .args(["remove", "bad", "long", "--state", "Stopped"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(listed(&daemon, &[]), ["bad"]);

    for cmd in ["wait", "stop", "remove"] {
        let out = ran(daemon.rjob().args([cmd, "--state", "Done"]));
        assert_eq!(out.code, 2, "{cmd}: {out}");
        assert!(out.stderr.contains("unknown state \"Done\""), "{cmd}: {out}");
    }
    assert_eq!(
        ran(daemon.rjob().args(["remove"])).code,
        2,
        "remove needs jobs or --state"
    );
}

/// The names of the jobs `rjob jobs ARGS -o json` lists (in Id order).
fn listed(daemon: &Daemon, args: &[&str]) -> Vec<String> {
    let out = ran(daemon.rjob().arg("jobs").args(args).args(["-o", "json"]));
    assert_eq!(out.code, 0, "{args:?}: {out}");
    let jobs: serde_json::Value = serde_json::from_str(&out.stdout).expect("jobs json");
    jobs.as_array()
        .expect("array")
        .iter()
        .map(|j| j["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn jobs_filters_by_has_more_data_child_state_name_globs_and_newest() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    // A host nobody listens on: its child fails.
    let dead = format!(
        "127.0.0.1:{}",
        rjob_tests::free_port(std::net::Ipv4Addr::LOCALHOST)
    );
    let hosts = format!("{},{dead}", fleet.hosts());
    let out = daemon.invoke_job(&hosts, "patch-a", "echo a", &["--connect-timeout", "2s"]);
    assert_eq!(out.code, 0, "{out}");
    let out = daemon.invoke_job(&fleet.hosts(), "patch-b", "echo b", &[]);
    assert_eq!(out.code, 0, "{out}");
    let out = ran(daemon.rjob().args(["wait", "patch-a", "patch-b", "-q"]));
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(ran(daemon.rjob().args(["receive", "patch-b"])).code, 0);
    let gate = fleet.scratch().join("gate");
    let out = daemon.invoke_job(&fleet.hosts(), "other", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("other", "Running"), "{}", daemon.job("other"));

    assert_eq!(listed(&daemon, &["--has-more-data", "false"]), ["patch-b"]);
    assert_eq!(
        listed(&daemon, &["--has-more-data", "true"]),
        ["patch-a", "other"]
    );
    assert_eq!(
        ran(daemon.rjob().args(["jobs", "--has-more-data", "maybe"])).code,
        2
    );

    // --child-state: the jobs with such children, and only those children.
    let out = ran(daemon
        .rjob()
        .args(["jobs", "--child-state", "Failed", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let jobs: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let jobs = jobs.as_array().expect("array");
    assert_eq!(jobs.len(), 1, "{out}");
    assert_eq!(jobs[0]["name"], "patch-a");
    assert_eq!(
        (&jobs[0]["done"], &jobs[0]["total"]),
        (&3.into(), &3.into()),
        "the job's own counts stay whole"
    );
    let children = jobs[0]["children"].as_array().expect("children");
    assert_eq!(children.len(), 1, "{out}");
    assert_eq!(children[0]["host"], dead.as_str());
    let out = ran(daemon.rjob().args(["jobs", "--child-state", "failed"]));
    assert_eq!(out.code, 0, "{out}");
    let rows: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "header, the job, its failed host:\n{out}");
    assert!(rows[2].contains(&dead) && rows[2].contains("Failed"), "{out}");
    assert_eq!(
        listed(&daemon, &["--child-state", "Stopped"]),
        Vec::<String>::new()
    );

    // Globs in --name and in job references.
    assert_eq!(listed(&daemon, &["--name", "patch-*"]), ["patch-a", "patch-b"]);
    assert_eq!(listed(&daemon, &["patch-?"]), ["patch-a", "patch-b"]);
    assert_eq!(listed(&daemon, &["*-b", "oth*"]), ["patch-b", "other"]);
    let out = ran(daemon.rjob().args(["jobs", "nope-*"]));
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains("no job has a name matching \"nope-*\""),
        "{out}"
    );

    // --newest N: the N created last, in Id order.
    assert_eq!(listed(&daemon, &["--newest", "2"]), ["patch-b", "other"]);
    assert_eq!(listed(&daemon, &["--newest", "0"]), Vec::<String>::new());

    // A glob reference acts on every job it matches; one matching no job is exit 2.
    let out = ran(daemon.rjob().args(["stop", "zzz-*"]));
    assert_eq!(out.code, 2, "{out}");
    let out = ran(daemon.rjob().args(["stop", "oth*"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("other", "Stopped"), "{}", daemon.job("other"));
    let out = ran(daemon.rjob().args(["remove", "patch-*"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
    assert_eq!(listed(&daemon, &[]), ["other"]);
}

#[test]
fn wait_returns_on_disconnected_with_status_4_and_force_waits_through_it() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let agent = &fleet.agents[0];
    let std::net::IpAddr::V4(ip) = agent.addr.ip() else {
        panic!("IPv4 agent")
    };
    let proxy = rjob_tests::Proxy::start(ip, agent.addr).expect("proxy");
    let gate = fleet.scratch().join("gate");
    let out = daemon.invoke_job(&proxy.addr.to_string(), "cut", &gated(&gate), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("cut", "Running"), "{}", daemon.job("cut"));
    proxy.cut();
    assert!(daemon.wait_state("cut", "Disconnected"), "{}", daemon.job("cut"));
    let out = ran(daemon.rjob().args(["wait", "cut", "-q"]));
    assert_eq!(out.code, 4, "{out}");
    assert!(out.stdout.contains("Disconnected"), "{out}");
    let out = ran(daemon
        .rjob()
        .args(["wait", "cut", "--force", "--timeout", "1s", "-q"]));
    assert_eq!(out.code, 3, "--force waits through Disconnected: {out}");
    assert_eq!(daemon.job("cut")["state"], "Disconnected");

    let forced = daemon
        .rjob()
        .args(["wait", "cut", "--force", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rjob wait --force");
    proxy.reopen();
    std::fs::write(&gate, "").expect("gate");
    let out = Ran::of(forced.wait_with_output().expect("wait --force"));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(daemon.job("cut")["state"], "Completed");
}

#[test]
fn the_jobs_table_shows_location_as_localhost_or_the_folded_hosts() {
    let fleet = Fleet::start_one_port(3).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let out = daemon.invoke_job(&fleet.hosts(), "fleet", "true", &[]);
    assert_eq!(out.code, 0, "{out}");
    let out = ran(daemon
        .rjob()
        .args(["start", "--name", "here", "--script", "true"]));
    assert_eq!(out.code, 0, "{out}");
    let table = ran(daemon.rjob().args(["jobs"]));
    assert_eq!(table.code, 0, "{table}");
    let row = |name: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"))
            .to_string()
    };
    // One port for all: no port in the set (Get-Job's Location is the computer names).
    assert!(row("fleet").contains(" 127.0.0.[2-4] "), "{table}");
    assert!(row("here").contains(" localhost "), "{table}");
}
