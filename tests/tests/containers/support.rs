//! The container fleet the suite runs against (images, compose project, docker network) and
//! the helpers its tests share.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rjob_tests::{bin, ran, Ran};

pub const AGENTS: usize = 5;

/// The one timeout for every condition these tests wait for. Containers on a loaded 2-core
/// machine start and stop much more slowly than loopback agents (the harness's `WAIT`).
pub const WAIT: Duration = Duration::from_secs(90);

/// Polls `cond` every quarter second until it holds or `WAIT` passes; true when it held. (Each
/// check is a `docker` command; the harness's 20ms polling would load a busy machine.)
pub fn wait_for(cond: impl FnMut() -> bool) -> bool {
    rjob_testkit::wait_for_every(Duration::from_millis(250), WAIT, cond)
}

/// Where the daemon keeps its state inside its container.
pub const STATE_DIR: &str = "/state";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is inside the workspace")
        .to_path_buf()
}

/// Written straight to the process's stderr, past the test harness's capture, so that it is
/// seen in a passing run too.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "containers: {text}");
}

/// When the first test of this suite began (the suite's tests run in parallel).
pub fn suite_started() -> Instant {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    *STARTED.get_or_init(Instant::now)
}

/// Panics, loudly, unless the Docker daemon answers.
pub fn require_docker() -> Result<(), String> {
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
pub fn compose_program() -> Result<Vec<String>, String> {
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
pub struct Env {
    program: Vec<String>,
    tag: &'static str,
}

/// Checked and built once for all the tests of this binary (they run in parallel; two
/// build-images.sh at once would race on the same tags).
pub fn env() -> &'static Env {
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

pub fn docker(args: &[&str]) -> Ran {
    ran(Command::new("docker").args(args).stdin(Stdio::null()))
}

/// Lines per host from `rjob receive` text output (`host: line`).
pub fn by_host(stdout: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((host, text)) = line.split_once(": ") {
            map.entry(host.to_string()).or_default().push(text.to_string());
        }
    }
    map
}

pub fn numbered(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line{i}")).collect()
}

/// A script printing `line1` .. `lineN`, one every half second.
pub fn lines_script(n: usize) -> String {
    format!("for i in $(seq 1 {n}); do echo line$i; sleep 0.5; done")
}

pub fn state_of(value: &serde_json::Value) -> &str {
    value["state"].as_str().unwrap_or("")
}

pub fn finished(state: &str) -> bool {
    matches!(state, "Completed" | "Failed" | "Stopped")
}

/// One compose project: its own name, network, certificates and containers, and (once started)
/// a daemon container; everything is removed when dropped, failed test or not.
pub struct Fleet {
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
    pub fn up(scenario: &'static str) -> Fleet {
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

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.program[0]);
        cmd.args(&self.program[1..])
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(&self.file)
            .env("RJOB_FLEET_DIR", &self.fleet_dir)
            .env("RJOB_AGENT_IMAGE", format!("rjob-agent:{}", self.tag))
            .env("RJOB_CONTROLLER_IMAGE", format!("rjob-controller:{}", self.tag))
            .env("RJOB_POSTGRES_IMAGE", format!("rjob-postgres:{}", self.tag))
            .stdin(Stdio::null());
        cmd
    }

    /// A compose command of this project.
    pub fn run(&self, args: &[&str]) -> Ran {
        ran(self.cmd().args(args))
    }

    /// `rjob ARGS` in a throwaway controller container on the fleet's network.
    pub fn rjob_once(&self, args: &[&str]) -> Ran {
        let mut all = vec!["run", "--rm", "-T", "controller", "rjob"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Container id of `agentN`.
    pub fn container(&self, agent: usize) -> &str {
        &self.agents[agent - 1]
    }

    /// The networks a container is on.
    pub fn networks_of(&self, container: &str) -> Vec<String> {
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
    pub fn ready_count(&self, agent: usize) -> usize {
        self.agent_logs(agent).matches("rjob-agent ready").count()
    }

    pub fn agent_logs(&self, agent: usize) -> String {
        let out = docker(&["logs", self.container(agent)]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Starts `rjob serve` in a controller container of the project (with the controller's
    /// identity, on the fleet's network) and waits until it listens on its socket.
    pub fn start_daemon(&mut self, reconnect_window: &str) {
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

    pub fn daemon_logs(&self) -> String {
        match &self.daemon {
            Some(name) => {
                let out = docker(&["logs", "--tail", "80", name]);
                format!("{}{}", out.stdout, out.stderr)
            }
            None => String::new(),
        }
    }

    /// `rjob ARGS` against the daemon, inside its container.
    pub fn rjob(&self, args: &[&str]) -> Ran {
        let name = self.daemon.as_deref().expect("start_daemon first");
        let state = format!("RJOB_STATE_DIR={STATE_DIR}");
        let mut all = vec!["exec", "-e", &state, name, "rjob"];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// Starts a background job over `hosts`.
    pub fn start_job(&self, name: &str, hosts: &str, extra: &[&str], script: &str) {
        let mut args = vec!["invoke", "-H", hosts, "--as-job", "--job-name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--script", script]);
        let out = self.rjob(&args);
        assert_eq!(out.code, 0, "starting job {name}: {out}");
        assert!(out.stdout.contains(&format!("Name {name}")), "{out}");
    }

    /// `rjob jobs JOB -o json`, the job's object (Null when it can't be read).
    pub fn job(&self, job: &str) -> serde_json::Value {
        let out = self.rjob(&["jobs", job, "--output", "json"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().and_then(|a| a.first().cloned()))
            .unwrap_or(serde_json::Value::Null)
    }

    /// The child of `job` on `host`, from `rjob jobs`.
    pub fn child(&self, job: &str, host: &str) -> serde_json::Value {
        child_of(&self.job(job), host)
    }

    /// Lines of `host` received so far, kept for later receives.
    pub fn lines_so_far(&self, job: &str, host: &str) -> usize {
        let out = self.rjob(&["receive", job, "--keep", "--host", host]);
        by_host(&out.stdout).remove(host).map_or(0, |l| l.len())
    }

    /// Waits until `host` has printed `n` lines in `job`, i.e. its run is under way.
    pub fn wait_lines(&self, job: &str, host: &str, n: usize) {
        let got = wait_for(|| self.lines_so_far(job, host) >= n);
        assert!(got, "{host} never printed {n} lines: {}", self.job(job));
    }

    /// Waits until the job has ended and returns it.
    pub fn wait_finished(&self, job: &str) -> serde_json::Value {
        let done = wait_for(|| finished(state_of(&self.job(job))));
        let value = self.job(job);
        assert!(done, "job {job} did not end within {WAIT:?}: {value}");
        value
    }

    /// `rjob receive JOB` (what no receive returned yet), per host.
    pub fn receive(&self, job: &str) -> (Ran, BTreeMap<String, Vec<String>>) {
        let out = self.rjob(&["receive", job]);
        assert_eq!(out.code, 0, "receive {job}: {out}");
        let hosts = by_host(&out.stdout);
        (out, hosts)
    }

    /// Starts the shared job store (profile "store": PostgreSQL, controller1, controller2)
    /// and waits until both daemons listen.
    pub fn up_store(&self) {
        let up = self.run(&["--profile", "store", "up", "--detach"]);
        assert_eq!(up.code, 0, "compose up of the store profile failed: {up}");
        for service in ["controller1", "controller2"] {
            let ready = wait_for(|| {
                self.run(&["exec", "-T", service, "test", "-S", "/var/lib/rjob/rjob.sock"])
                    .code
                    == 0
            });
            let logs = || self.run(&["--profile", "store", "logs", "--no-color", "--tail", "40"]);
            assert!(ready, "{service} did not come up: {}", logs());
        }
    }

    /// `rjob ARGS` against the daemon of a store controller (`controller1`, `controller2`).
    pub fn rjob_on(&self, service: &str, args: &[&str]) -> Ran {
        let mut all = vec!["exec", "-T", service, "rjob"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `docker restart` of `agentN`, then waits until the new agent process listens.
    pub fn restart_agent(&self, agent: usize) -> Duration {
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
            "--profile",
            "store",
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

pub fn child_of(job: &serde_json::Value, host: &str) -> serde_json::Value {
    job["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["host"] == host).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// The reason of a run that its agent's restart ended: "the agent shut down while the run was
/// going" when the agent stopped it on SIGTERM, "the agent restarted while the run was going"
/// when the agent died without stopping it and found it again on disk when it came back.
pub fn restart_reason(reason: &str) -> bool {
    reason.contains("agent shut down") || reason.contains("agent restarted")
}

/// Output of a run that did not complete: what it printed up to its end, in order, each line
/// once (a prefix of the full output).
pub fn assert_prefix(host: &str, lines: &[String], full: usize, context: &dyn std::fmt::Display) {
    assert!(
        lines.len() <= full && lines == numbered(lines.len()).as_slice(),
        "{host}: output lost, repeated or out of order: {lines:?}\n{context}"
    );
}
