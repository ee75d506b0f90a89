//! The deploy/ tooling end to end: images built by `deploy/build-images.sh`, certificates made
//! by `deploy/fleet-certs.sh` (with the real `rjob pki`), five agent containers of
//! `deploy/compose.yaml` on a private network, each with its own address and host name, and
//! `rjob invoke` fanning out to them from the controller container.
//!
//! Needs Docker and Docker Compose (`docker compose` or `docker-compose`): without them this
//! test FAILS, on purpose, so that a machine that cannot run it does not look green.
//!
//! The images are built from the binaries under test (the same target directory as `bin()`,
//! so target/debug), tagged `rjob-agent:test` and `rjob-controller:test`; build-images.sh
//! does not rebuild them while the binaries and Dockerfiles are unchanged. The compose project
//! has a name of its own (so its network and containers cannot clash with a developer's
//! fleet) and is taken down even when the test fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rjob_tests::{bin, ran, wait_for, Ran, WAIT};

const AGENTS: usize = 5;

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

/// Panics, loudly, unless the Docker daemon answers.
fn require_docker() {
    let out = ran(Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null()));
    assert!(
        out.code == 0,
        "\n\n*** Docker is needed for this test (deploy/ images and a 5-container fleet), and it \
         is not usable here: install Docker (Debian: apt-get install docker.io docker-compose) and \
         start its daemon, or run the other tests with `cargo test -- --skip containers`.\n\
         `docker info` said:\n{out}\n"
    );
}

/// The Compose command: `docker compose` (v2) when the plugin is there, else `docker-compose`.
fn compose_program() -> Vec<String> {
    let works = |cmd: &mut Command| ran(cmd.arg("version").stdin(Stdio::null())).code == 0;
    if works(Command::new("docker").arg("compose")) {
        return vec!["docker".into(), "compose".into()];
    }
    if works(&mut Command::new("docker-compose")) {
        return vec!["docker-compose".into()];
    }
    panic!(
        "\n\n*** Docker Compose is needed for this test and neither `docker compose` nor \
         `docker-compose` works here: apt-get install docker-compose.\n"
    );
}

/// One compose project: its own name, certificates and images; `down` when dropped.
struct Project {
    program: Vec<String>,
    name: String,
    file: PathBuf,
    fleet_dir: PathBuf,
    tag: String,
}

impl Project {
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

    fn run(&self, args: &[&str]) -> Ran {
        ran(self.cmd().args(args))
    }

    /// `rjob ARGS` in a throwaway controller container on the fleet's network.
    fn rjob(&self, args: &[&str]) -> Ran {
        let mut all = vec!["run", "--rm", "-T", "controller", "rjob"];
        all.extend_from_slice(args);
        self.run(&all)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
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
    }
}

fn docker_ip(container: &str) -> String {
    let out = ran(Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ])
        .stdin(Stdio::null()));
    assert_eq!(out.code, 0, "docker inspect {container}: {out}");
    out.stdout.trim().to_string()
}

#[test]
fn containers_five_agent_fleet_from_deploy_images() {
    let started = Instant::now();
    require_docker();
    let program = compose_program();
    let root = repo_root();

    // Images from the binaries under test.
    let bin_dir = bin("rjob")
        .parent()
        .expect("the binary is in a directory")
        .to_path_buf();
    let tag = "test";
    let build = ran(Command::new(root.join("deploy/build-images.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--tag", tag])
        .stdin(Stdio::null()));
    assert_eq!(build.code, 0, "deploy/build-images.sh failed: {build}");
    let images_took = started.elapsed();

    // Certificates: a CA, the controller's identity, agent1..agent5 with --san agentN.
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

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let project = Project {
        program,
        name: format!("rjob-test-{}-{nanos}", std::process::id()),
        file: root.join("deploy/compose.yaml"),
        fleet_dir,
        tag: tag.to_string(),
    };

    let up = project.run(&["up", "--detach"]);
    assert_eq!(up.code, 0, "compose up failed: {up}");

    // Every agent's own address on the project's private network.
    let ids = project.run(&["ps", "--quiet"]);
    assert_eq!(ids.code, 0, "compose ps: {ids}");
    let mut ips: Vec<String> = ids.stdout.split_whitespace().map(docker_ip).collect();
    assert_eq!(ips.len(), AGENTS, "containers of the project: {ids}");
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), AGENTS, "each agent has an address of its own: {ips:?}");

    // Ready: each agent logged that it listens.
    let ready = wait_for(WAIT, || {
        project
            .run(&["logs", "--no-color"])
            .stdout
            .matches("rjob-agent ready")
            .count()
            >= AGENTS
    });
    assert!(
        ready,
        "the agents did not all start: {}",
        project.run(&["logs", "--no-color"])
    );

    // The fan-out, two hosts in flight at a time; each script sleeps, so three rounds.
    let hosts = format!("agent[1-{AGENTS}]");
    let invoked = Instant::now();
    let out = project.rjob(&[
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
    let out = project.rjob(&[
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

    drop(project);
    note(&format!(
        "took {:.1}s ({:.1}s for the images, {:.1}s for the throttled fan-out)",
        started.elapsed().as_secs_f64(),
        images_took.as_secs_f64(),
        invoke_took.as_secs_f64()
    ));
}
