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

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rjob_tests::{bin, ran, Ran};

const AGENTS: usize = 5;

/// The one timeout for every condition these tests wait for. Containers on a loaded 2-core
/// machine start and stop much more slowly than loopback agents (the harness's `WAIT`).
const WAIT: Duration = Duration::from_secs(90);

/// Polls `cond` every quarter second until it holds or `WAIT` passes; true when it held. (Each
/// check is a `docker` command; the harness's 20ms polling would load a busy machine.)
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Where the daemon keeps its state inside its container.
const STATE_DIR: &str = "/state";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// Written straight to the process's stderr, past the test harness's capture, so that it is
/// seen in a passing run too.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "containers: {text}");
}

/// When the first test of this suite began (the suite's tests run in parallel).
fn suite_started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Panics, loudly, unless the Docker daemon answers.
fn require_docker() -> Result<(), String> {
    let out = ran(Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null()));
    if out.code == 0 {
        return Ok(());
    }
    Err(format!(
        "\n\n*** Docker is needed for these tests (deploy/ images and 5-container fleets), and it \
         is not usable here: install Docker (Debian: apt-get install docker.io docker-compose) and \
         start its daemon, or run the other tests with `cargo test -- --skip containers`.\n\
         `docker info` said:\n{out}\n"
    ))
}

/// The Compose command: `docker compose` (v2) when the plugin is there, else `docker-compose`.
fn compose_program() -> Result<Vec<String>, String> {
    let works = |cmd: &mut Command| ran(cmd.arg("version").stdin(Stdio::null())).code == 0;
    if works(Command::new("docker").arg("compose")) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    if works(&mut Command::new("docker-compose")) {
        return Ok(vec!["docker-compose".into()]);
    }
    Err(
        "\n\n*** Docker Compose is needed for these tests and neither `docker compose` nor \
         `docker-compose` works here: apt-get install docker-compose.\n"
            .to_string(),
    )
}

/// What every scenario needs once: Docker, Compose, and the images of the binaries under test.
struct Env {
    program: Vec<String>,
    tag: &'static str,
}

/// Checked and built once for all the tests of this binary (they run in parallel; two
/// build-images.sh at once would race on the same tags).
fn env() -> &'static Env {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        suite_started();
        require_docker()?;
        let program = compose_program()?;
        let bin_dir = bin("rjob")
            .parent()
            .expect("the binary is in a directory")
            .to_path_buf();
        let tag = "test";
        let began = Instant::now();
        let build = ran(Command::new(repo_root().join("deploy/build-images.sh"))
            .arg("--bin-dir")
            .arg(&bin_dir)
            .args(["--tag", tag])
            .stdin(Stdio::null()));
        if build.code != 0 {
            return Err(format!("deploy/build-images.sh failed: {build}"));
        }
        note(&format!("images ready in {:.1}s", began.elapsed().as_secs_f64()));
        Ok(Env { program, tag })
    });
    match env {
        Ok(env) => env,
        Err(e) => panic!("{e}"),
    }
}

fn docker(args: &[&str]) -> Ran {
    ran(Command::new("docker").args(args).stdin(Stdio::null()))
}

/// Lines per host from `rjob receive` text output (`host: line`).
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

/// A script printing `line1` .. `lineN`, one every half second.
fn lines_script(n: usize) -> String {
    format!("for i in $(seq 1 {n}); do echo line$i; sleep 0.5; done")
}

fn state_of(value: &serde_json::Value) -> &str {
    value["state"].as_str().unwrap_or("")
}

fn finished(state: &str) -> bool {
    matches!(state, "Completed" | "Failed" | "Stopped")
}

/// One compose project: its own name, network, certificates and containers, and (once started)
/// a daemon container; everything is removed when dropped, failed test or not.
struct Fleet {
    scenario: &'static str,
    started: Instant,
    program: Vec<String>,
    tag: &'static str,
    name: String,
    file: PathBuf,
    fleet_dir: PathBuf,
    _tmp: tempfile::TempDir,
    /// Container ids of agent1..agentN (index 0: agent1).
    agents: Vec<String>,
    /// Container name of the daemon (`rjob serve` in a controller container).
    daemon: Option<String>,
}

impl Fleet {
    /// Certificates, `compose up` of the five agents, and every agent ready.
    fn up(scenario: &'static str) -> Fleet {
        let env = env();
        let started = Instant::now();
        let root = repo_root();
        let tmp = tempfile::Builder::new()
            .prefix("rjob-containers-")
            .tempdir()
            .expect("temporary directory");
        let fleet_dir = tmp.path().join("fleet");
        let certs = ran(Command::new(root.join("deploy/fleet-certs.sh"))
            .arg("--rjob")
            .arg(bin("rjob"))
            .args(["--agents", &AGENTS.to_string()])
            .arg("--out")
            .arg(&fleet_dir)
            .stdin(Stdio::null()));
        assert_eq!(certs.code, 0, "deploy/fleet-certs.sh failed: {certs}");
        let mut fleet = Fleet {
            scenario,
            started,
            program: env.program.clone(),
            tag: env.tag,
            name: format!("rjob-test-{}-{scenario}", std::process::id()),
            file: root.join("deploy/compose.yaml"),
            fleet_dir,
            _tmp: tmp,
            agents: Vec::new(),
            daemon: None,
        };
        let up = fleet.run(&["up", "--detach"]);
        assert_eq!(up.code, 0, "compose up failed: {up}");
        // The agents' containers, found once by the labels Compose (v1 and v2) gives them: the
        // tests then use plain `docker`, much quicker than a Compose command on a busy machine.
        let ps = docker(&[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={}", fleet.name),
            "--format",
            "{{.Label \"com.docker.compose.service\"}} {{.ID}}",
        ]);
        assert_eq!(ps.code, 0, "docker ps: {ps}");
        let ids: BTreeMap<&str, &str> = ps.stdout.lines().filter_map(|l| l.split_once(' ')).collect();
        fleet.agents = (1..=AGENTS)
            .map(|i| {
                let id = ids.get(format!("agent{i}").as_str());
                id.unwrap_or_else(|| panic!("no container for agent{i}: {ps}"))
                    .to_string()
            })
            .collect();
        for i in 1..=AGENTS {
            let ready = wait_for(|| fleet.ready_count(i) >= 1);
            assert!(ready, "agent{i} did not start: {}", fleet.agent_logs(i));
        }
        fleet
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(&self.file)
            .env("RJOB_FLEET_DIR", &self.fleet_dir)
            .env("RJOB_AGENT_IMAGE", format!("rjob-agent:{}", self.tag))
            .env("RJOB_CONTROLLER_IMAGE", format!("rjob-controller:{}", self.tag))
            .stdin(Stdio::null());
        cmd
    }

    /// A compose command of this project.
    fn run(&self, args: &[&str]) -> Ran {
        ran(self.cmd().args(args))
    }

    /// `rjob ARGS` in a throwaway controller container on the fleet's network.
    fn rjob_once(&self, args: &[&str]) -> Ran {
        let mut all = vec!["run", "--rm", "-T", "controller", "rjob"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Container id of `agentN`.
    fn container(&self, agent: usize) -> &str {
        &self.agents[agent - 1]
    }

    /// The networks a container is on.
    fn networks_of(&self, container: &str) -> Vec<String> {
        let out = docker(&[
            "inspect",
            "--format",
            "{{range $name, $net := .NetworkSettings.Networks}}{{$name}} {{end}}",
            container,
        ]);
        assert_eq!(out.code, 0, "docker inspect {container}: {out}");
        out.stdout.split_whitespace().map(str::to_string).collect()
    }

    /// How many times `agentN` has logged that it listens (once per start).
    fn ready_count(&self, agent: usize) -> usize {
        self.agent_logs(agent).matches("rjob-agent ready").count()
    }

    fn agent_logs(&self, agent: usize) -> String {
        let out = docker(&["logs", self.container(agent)]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Starts `rjob serve` in a controller container of the project (with the controller's
    /// identity, on the fleet's network) and waits until it listens on its socket.
    fn start_daemon(&mut self, reconnect_window: &str) {
        let name = format!("{}-daemon", self.name);
        let out = self.run(&[
            "run",
            "--detach",
            "--name",
            &name,
            "controller",
            "rjob",
            "--state-dir",
            STATE_DIR,
            "serve",
            "--reconnect-window",
            reconnect_window,
        ]);
        // Recorded before the check: Drop removes it whatever happens next.
        self.daemon = Some(name.clone());
        assert_eq!(out.code, 0, "starting the daemon container: {out}");
        let up =
            wait_for(|| docker(&["exec", &name, "test", "-S", &format!("{STATE_DIR}/rjob.sock")]).code == 0);
        assert!(up, "the daemon did not come up: {}", self.daemon_logs());
    }

    fn daemon_logs(&self) -> String {
        match &self.daemon {
            Some(name) => {
                let out = docker(&["logs", "--tail", "80", name]);
                format!("{}{}", out.stdout, out.stderr)
            }
            None => String::new(),
        }
    }

    /// `rjob ARGS` against the daemon, inside its container.
    fn rjob(&self, args: &[&str]) -> Ran {
        let name = self.daemon.as_deref().expect("start_daemon first");
        let state = format!("RJOB_STATE_DIR={STATE_DIR}");
        let mut all = vec!["exec", "-e", &state, name, "rjob"];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Starts a background job over `hosts`.
    fn start_job(&self, name: &str, hosts: &str, extra: &[&str], script: &str) {
        let mut args = vec!["invoke", "-H", hosts, "--as-job", "--job-name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--script", script]);
        let out = self.rjob(&args);
        assert_eq!(out.code, 0, "starting job {name}: {out}");
        assert!(out.stdout.contains(&format!("Name {name}")), "{out}");
    }

    /// `rjob jobs JOB -o json`, the job's object (Null when it can't be read).
    fn job(&self, job: &str) -> serde_json::Value {
        let out = self.rjob(&["jobs", job, "--output", "json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// The child of `job` on `host`, from `rjob jobs`.
    fn child(&self, job: &str, host: &str) -> serde_json::Value {
        child_of(&self.job(job), host)
    }

    /// Lines of `host` received so far, kept for later receives.
    fn lines_so_far(&self, job: &str, host: &str) -> usize {
        let out = self.rjob(&["receive", job, "--keep", "--host", host]);
        by_host(&out.stdout).remove(host).map_or(0, |l| l.len())
    }

    /// Waits until `host` has printed `n` lines in `job`, i.e. its run is under way.
    fn wait_lines(&self, job: &str, host: &str, n: usize) {
        let got = wait_for(|| self.lines_so_far(job, host) >= n);
        assert!(got, "{host} never printed {n} lines: {}", self.job(job));
    }

    /// Waits until the job has ended and returns it.
    fn wait_finished(&self, job: &str) -> serde_json::Value {
        let done = wait_for(|| finished(state_of(&self.job(job))));
        let value = self.job(job);
        assert!(done, "job {job} did not end within {WAIT:?}: {value}");
        value
    }

    /// `rjob receive JOB` (what no receive returned yet), per host.
    fn receive(&self, job: &str) -> (Ran, BTreeMap<String, Vec<String>>) {
        let out = self.rjob(&["receive", job]);
        assert_eq!(out.code, 0, "receive {job}: {out}");
        let hosts = by_host(&out.stdout);
        (out, hosts)
    }

    /// `docker restart` of `agentN`, then waits until the new agent process listens.
    fn restart_agent(&self, agent: usize) -> Duration {
        let before = self.ready_count(agent);
        let began = Instant::now();
        let out = docker(&["restart", self.container(agent)]);
        assert_eq!(out.code, 0, "docker restart agent{agent}: {out}");
        let back = wait_for(|| self.ready_count(agent) > before);
        assert!(back, "agent{agent} did not come back: {}", self.agent_logs(agent));
        began.elapsed()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            note(&format!(
                "[{}] FAILED; the daemon's log:\n{}\n--- the agents' logs:\n{}",
                self.scenario,
                self.daemon_logs(),
                {
                    let out = self.run(&["logs", "--no-color", "--tail", "15"]);
                    format!("{}{}", out.stdout, out.stderr)
                }
            ));
        }
        if let Some(name) = &self.daemon {
            let _ = docker(&["rm", "--force", name]);
        }
        let down = self.run(&[
            "--profile",
            "controller",
            "down",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "5",
        ]);
        if down.code != 0 {
            note(&format!("`compose down` of project {} failed: {down}", self.name));
        }
        note(&format!(
            "[{}] took {:.1}s (containers suite running for {:.1}s)",
            self.scenario,
            self.started.elapsed().as_secs_f64(),
            suite_started().elapsed().as_secs_f64()
        ));
    }
}

fn child_of(job: &serde_json::Value, host: &str) -> serde_json::Value {
    job["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["host"] == host).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// The reason of a run that its agent's restart ended: "the agent shut down while the run was
/// going" when the agent stopped it on SIGTERM, "the agent restarted while the run was going"
/// when the agent died without stopping it and found it again on disk when it came back.
fn restart_reason(reason: &str) -> bool {
    reason.contains("agent shut down") || reason.contains("agent restarted")
}

/// Output of a run that did not complete: what it printed up to its end, in order, each line
/// once (a prefix of the full output).
fn assert_prefix(host: &str, lines: &[String], full: usize, context: &dyn std::fmt::Display) {
    assert!(
        lines.len() <= full && lines == numbered(lines.len()).as_slice(),
        "{host}: output lost, repeated or out of order: {lines:?}\n{context}"
    );
}

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
