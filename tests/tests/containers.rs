//! The deploy/ tooling end to end, and the fault suite of issue 5, across real containers:
//! images built by `deploy/build-images.sh`, certificates made by `deploy/fleet-certs.sh` (with
//! the real `rjob pki`), five agent containers of `deploy/compose.yaml` on a private network,
//! each with its own address and host name, and the controller in a container of the same
//! compose file.
//!
//! Scenarios, each an independent test with a compose project (containers and network) of its
//! own, so that they run in parallel without clashing, and torn down even when the test fails:
//! - a throttled fan-out (`rjob invoke`) over the five agents;
//! - partition: an agent's container disconnected from the network mid-job and reconnected 20s
//!   later: its child shows Disconnected, then completes, with complete output, no duplicates;
//! - node loss: an agent's container killed mid-job: that child fails with a clear reason in
//!   bounded time (`rjob serve --reconnect-window 10s`), the others complete, the job fails;
//! - agent restart: `docker restart` of an agent mid-job: the old run is reported Failed with
//!   the reason (its spool, in the container's writable layer, survives the restart), and a new
//!   job on the restarted agent works;
//! - rolling restart: the agents restarted one by one during a throttled job: every host ends
//!   Completed or Failed with a reason, and the hosts that completed have all their output.
//!
//! Where the daemon runs: inside the fleet, as a `controller` container of the compose file
//! running `rjob serve`, driven with `docker exec`. It dials the agents by their service names,
//! the names their certificates carry (as in the documented fan-out), and Docker's DNS follows
//! a container to whatever address it gets after a restart or a reconnect: no fixed subnets
//! (which could clash between parallel projects and with the host's networks), no IP SANs, and
//! the network can stay `internal`. The faults (`network disconnect`, `kill`, `restart`) hit
//! only agent containers, never the daemon's.
//!
//! Needs Docker and Docker Compose (`docker compose` or `docker-compose`): without them these
//! tests FAIL, on purpose, so that a machine that cannot run them does not look green.
//!
//! The images are built once per test process from the binaries under test (the same target
//! directory as `bin()`, so target/debug), tagged `rjob-agent:test` and `rjob-controller:test`;
//! build-images.sh does not rebuild them while the binaries and Dockerfiles are unchanged.
#[path = "containers/support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn containers_five_agent_fleet_from_deploy_images() {
    let fleet = Fleet::up("fanout");

    // Every agent's own address on the project's private network.
    let mut ips: Vec<String> = (1..=AGENTS)
        .map(|i| {
            let out = docker(&[
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                fleet.container(i),
            ]);
            assert_eq!(out.code, 0, "docker inspect: {out}");
            out.stdout.trim().to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), AGENTS, "each agent has an address of its own: {ips:?}");

    // The fan-out, two hosts in flight at a time; each script sleeps, so three rounds.
    let hosts = format!("agent[1-{AGENTS}]");
    let invoked = Instant::now();
    let out = fleet.rjob_once(&[
        "invoke",
        "--throttle-limit",
        "2",
        "-H",
        &hosts,
        "--script",
        "uname -n; echo \"user $(id -un)\"; sleep 0.4",
    ]);
    let invoke_took = invoked.elapsed();
    assert_eq!(out.code, 0, "{out}");
    for i in 1..=AGENTS {
        let host = format!("agent{i}");
        assert_eq!(
            out.lines_of(&host),
            [host.clone(), "user root".to_string()],
            "{host}: {out}"
        );
    }
    assert!(
        invoke_took >= Duration::from_millis(1200),
        "5 hosts, 2 at a time, 0.4s each take 3 rounds, but it took {invoke_took:?}: {out}"
    );

    // A host whose script fails makes the whole invoke fail, the others still answer.
    let out = fleet.rjob_once(&[
        "invoke",
        "--throttle-limit",
        "2",
        "-H",
        &hosts,
        "--script",
        "uname -n; test \"$(uname -n)\" != agent3",
    ]);
    assert_eq!(out.code, 1, "agent3's script exits 1: {out}");
    for i in 1..=AGENTS {
        let host = format!("agent{i}");
        assert_eq!(out.lines_of(&host), std::slice::from_ref(&host), "{host}: {out}");
    }
    note(&format!(
        "[fanout] throttled fan-out took {:.1}s",
        invoke_took.as_secs_f64()
    ));
}

#[test]
fn containers_partition_shows_disconnected_then_completes_without_loss_or_duplicates() {
    const LINES: usize = 80; // 40s
    const PARTITION: Duration = Duration::from_secs(20);
    let mut fleet = Fleet::up("partition");
    // The default window (10m): a 20s partition must not fail the child.
    fleet.start_daemon("10m");
    fleet.start_job("part", &format!("agent[1-{AGENTS}]"), &[], &lines_script(LINES));
    fleet.wait_lines("part", "agent3", 3);

    let agent3 = fleet.container(3);
    let networks = fleet.networks_of(agent3);
    assert_eq!(
        networks.len(),
        1,
        "agent3 is on the fleet's network only: {networks:?}"
    );
    let network = &networks[0];
    let out = docker(&["network", "disconnect", network, agent3]);
    assert_eq!(out.code, 0, "docker network disconnect: {out}");
    let cut = Instant::now();

    // A silent partition: noticed by HTTP/2 keep-alive (5s interval, 10s timeout).
    let seen = wait_for(|| state_of(&fleet.child("part", "agent3")) == "Disconnected");
    let noticed = cut.elapsed();
    let job = fleet.job("part");
    assert!(seen, "agent3's child never showed Disconnected: {job}");
    for i in [1, 2, 4, 5] {
        let child = child_of(&job, &format!("agent{i}"));
        assert!(
            matches!(state_of(&child), "Running" | "Completed"),
            "agent{i} is not affected by agent3's partition: {job}"
        );
    }

    // The partition lasts PARTITION (or until it was noticed, if that took longer).
    std::thread::sleep(PARTITION.saturating_sub(cut.elapsed()));
    let job = fleet.job("part");
    assert_eq!(
        state_of(&child_of(&job, "agent3")),
        "Disconnected",
        "agent3's child stays Disconnected while the partition lasts: {job}"
    );
    let out = docker(&["network", "connect", "--alias", "agent3", network, agent3]);
    assert_eq!(out.code, 0, "docker network connect: {out}");
    let healed = Instant::now();
    let back = wait_for(|| matches!(state_of(&fleet.child("part", "agent3")), "Running" | "Completed"));
    let reattached = healed.elapsed();
    assert!(
        back,
        "agent3's child stayed Disconnected after the partition: {}",
        fleet.job("part")
    );

    let job = fleet.wait_finished("part");
    assert_eq!(state_of(&job), "Completed", "{job}");
    let (received, hosts) = fleet.receive("part");
    assert_eq!(hosts.len(), AGENTS, "{received}");
    for i in 1..=AGENTS {
        let host = format!("agent{i}");
        assert_eq!(
            hosts.get(&host),
            Some(&numbered(LINES)),
            "{host}: complete output, each line once\n{received}"
        );
    }
    let again = fleet.rjob(&["receive", "part"]);
    assert_eq!(
        again.stdout, "",
        "a second receive returned output again: {again}"
    );
    note(&format!(
        "[partition] Disconnected {:.1}s after the cut; network back after {:.1}s; child attached \
         again {:.1}s later",
        noticed.as_secs_f64(),
        (healed - cut).as_secs_f64(),
        reattached.as_secs_f64()
    ));
}

#[test]
fn containers_a_killed_node_fails_its_child_in_bounded_time_and_the_job_fails() {
    // 30s of output.
    const LINES: usize = 60;
    // Keep-alive notices the loss within 15s, the window is 10s, a connect attempt gives up
    // after 10s, the backoff is at most 5s: 40s, plus slack for a loaded machine.
    const BOUND: Duration = Duration::from_secs(60);
    let mut fleet = Fleet::up("nodeloss");
    fleet.start_daemon("10s");
    fleet.start_job("loss", &format!("agent[1-{AGENTS}]"), &[], &lines_script(LINES));
    fleet.wait_lines("loss", "agent4", 3);

    let out = docker(&["kill", fleet.container(4)]);
    assert_eq!(out.code, 0, "docker kill: {out}");
    let killed = Instant::now();
    let failed = wait_for(|| state_of(&fleet.child("loss", "agent4")) == "Failed");
    let took = killed.elapsed();
    let job = fleet.job("loss");
    assert!(failed, "agent4's child did not fail within {WAIT:?}: {job}");
    assert!(took < BOUND, "agent4's child failed only after {took:?}: {job}");
    let child = child_of(&job, "agent4");
    let reason = child["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("connection lost") || reason.contains("cannot reach"),
        "the reason says the agent was lost: {job}"
    );

    let job = fleet.wait_finished("loss");
    assert_eq!(state_of(&job), "Failed", "the parent fails: {job}");
    let out = fleet.rjob(&["wait", "loss"]);
    assert_eq!(out.code, 1, "wait: a failed job: {out}");
    let (received, hosts) = fleet.receive("loss");
    for i in [1, 2, 3, 5] {
        let host = format!("agent{i}");
        assert_eq!(state_of(&child_of(&job, &host)), "Completed", "{host}: {job}");
        assert_eq!(hosts.get(&host), Some(&numbered(LINES)), "{host}: {received}");
    }
    let lost = hosts.get("agent4").cloned().unwrap_or_default();
    assert!(
        !lost.is_empty(),
        "agent4's output up to the kill is kept: {received}"
    );
    assert_prefix("agent4", &lost, LINES, &received);
    note(&format!(
        "[nodeloss] the killed agent's child failed {:.1}s after the kill: {reason}",
        took.as_secs_f64()
    ));
}

#[test]
fn containers_an_agent_restart_reports_the_old_run_and_takes_new_jobs() {
    const LINES: usize = 40; // 20s
    let mut fleet = Fleet::up("restart");
    // Longer than a restart takes: the child must end by what the agent reports after its
    // restart, not by the window running out.
    fleet.start_daemon("2m");
    fleet.start_job("old", "agent1,agent2", &[], &lines_script(LINES));
    fleet.wait_lines("old", "agent2", 3);

    // The spool (/var/lib/rjob-agent/spool) is in the container's writable layer, not on a
    // volume: `docker restart` keeps it, so the restarted agent knows its interrupted run.
    let mounts = docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Destination}} {{end}}",
        fleet.container(2),
    ]);
    assert!(
        mounts.code == 0 && !mounts.stdout.contains("/var/lib/rjob-agent"),
        "agent2's spool is in its writable layer: {mounts}"
    );
    let restart_took = fleet.restart_agent(2);
    let failed = wait_for(|| state_of(&fleet.child("old", "agent2")) == "Failed");
    let job = fleet.job("old");
    assert!(failed, "the interrupted run is reported, not left going: {job}");
    let reason = child_of(&job, "agent2")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(restart_reason(&reason), "the reason says why: {job}");

    let job = fleet.wait_finished("old");
    assert_eq!(state_of(&job), "Failed", "{job}");
    assert_eq!(state_of(&child_of(&job, "agent1")), "Completed", "{job}");
    let (received, hosts) = fleet.receive("old");
    assert_eq!(hosts.get("agent1"), Some(&numbered(LINES)), "{received}");
    let old = hosts.get("agent2").cloned().unwrap_or_default();
    assert!(
        !old.is_empty(),
        "what agent2 spooled before the restart is kept: {received}"
    );
    assert_prefix("agent2", &old, LINES, &received);

    // The restarted agent takes new work, as a job and as a plain invoke.
    fleet.start_job("new", "agent2", &[], "uname -n; echo \"fresh $(id -un)\"");
    let job = fleet.wait_finished("new");
    assert_eq!(state_of(&job), "Completed", "{job}");
    let (received, hosts) = fleet.receive("new");
    assert_eq!(
        hosts.get("agent2"),
        Some(&vec!["agent2".to_string(), "fresh root".to_string()]),
        "{received}"
    );
    let out = fleet.rjob(&["invoke", "-H", "agent2", "--script", "echo again"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of("agent2"), ["again"], "{out}");
    note(&format!(
        "[restart] docker restart took {:.1}s; the old run: {reason}",
        restart_took.as_secs_f64()
    ));
}

#[test]
fn containers_a_rolling_restart_leaves_every_host_in_a_definite_state() {
    const LINES: usize = 40; // 20s per host
    let mut fleet = Fleet::up("rolling");
    fleet.start_daemon("2m");
    // Two hosts at a time, so that the restarts meet runs in every phase: going (agent1 and
    // agent2 first, then the hosts that take over their slots), not started yet (queued behind
    // the throttle limit), and started on an agent that has already been restarted.
    fleet.start_job(
        "rolling",
        &format!("agent[1-{AGENTS}]"),
        &["--throttle-limit", "2"],
        &lines_script(LINES),
    );
    fleet.wait_lines("rolling", "agent1", 3);

    // One by one, each back before the next: agent1 first (its run is going: it has printed),
    // then from the end of the list, so that agent4 and agent5 are restarted before their runs
    // start and agent3 and agent2 while theirs are going (on a machine not too slow).
    let mut took = Vec::new();
    for i in [1, 5, 4, 3, 2] {
        took.push(format!("agent{i} {:.1}s", fleet.restart_agent(i).as_secs_f64()));
    }

    let job = fleet.wait_finished("rolling");
    let (received, hosts) = fleet.receive("rolling");
    let context = format!("{job}\n{received}");
    let mut mix = Vec::new();
    for i in 1..=AGENTS {
        let host = format!("agent{i}");
        let child = child_of(&job, &host);
        let lines = hosts.get(&host).cloned().unwrap_or_default();
        match state_of(&child) {
            "Completed" => {
                assert_eq!(child["exit_code"], 0, "{host}: {context}");
                assert_eq!(
                    lines,
                    numbered(LINES),
                    "{host} completed: all its output: {context}"
                );
            }
            "Failed" => {
                assert!(
                    !child["reason"].as_str().unwrap_or_default().is_empty(),
                    "{host} failed without a reason: {context}"
                );
                assert_prefix(&host, &lines, LINES, &context);
            }
            other => panic!("{host} ended {other:?}, not Completed or Failed: {context}"),
        }
        mix.push(format!("{host} {} ({} lines)", state_of(&child), lines.len()));
    }
    // agent1 was restarted while its run was going (it had printed, and prints for 20s).
    let first = child_of(&job, "agent1");
    assert_eq!(state_of(&first), "Failed", "{context}");
    assert!(
        restart_reason(first["reason"].as_str().unwrap_or_default()),
        "{context}"
    );
    // The runs that start after their agent came back complete, all their output kept.
    assert!(
        mix.iter().any(|m| m.contains("Completed")),
        "no host completed: {context}"
    );
    assert_eq!(
        state_of(&job),
        "Failed",
        "the parent follows its children: {context}"
    );
    note(&format!(
        "[rolling] restarts: {}; outcome: {}",
        took.join(", "),
        mix.join(", ")
    ));
}

#[test]
fn containers_two_controllers_on_one_postgres_store_see_one_job() {
    let fleet = Fleet::up("retain-store");
    fleet.up_store();
    let out = fleet.rjob_on(
        "controller1",
        &[
            "invoke",
            "-H",
            "agent[1-5]",
            "--as-job",
            "--job-name",
            "shared",
            "--script",
            "uname -n",
        ],
    );
    assert_eq!(out.code, 0, "invoke on controller1: {out}");
    // The other daemon reads the same store: it lists the job, and its output.
    let job = |service: &str| {
        let out = fleet.rjob_on(service, &["jobs", "shared", "--output", "json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
            .unwrap_or(serde_json::Value::Null)
    };
    let done = wait_for(|| state_of(&job("controller2")) == "Completed");
    assert!(
        done,
        "controller2 never saw the job complete: {}",
        job("controller2")
    );
    let out = fleet.rjob_on("controller2", &["receive", "shared", "--keep"]);
    assert_eq!(out.code, 0, "receive on controller2: {out}");
    let hosts = by_host(&out.stdout);
    for i in 1..=5 {
        let host = format!("agent{i}");
        assert_eq!(hosts.get(&host), Some(&vec![host.clone()]), "{out}");
    }
    assert_eq!(
        job("controller1")["id"],
        job("controller2")["id"],
        "one job, one Id"
    );
}
