//! The documented deployment (issue 15 point 8): `deploy/agent.toml` and `deploy/policy.toml`,
//! installed where `deploy/README.md` says (under a temporary root here), start an agent that
//! serves the controller; without the policy, an agent running as root refuses to start.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rjob_tests::{bin, free_port, ran, wait_for, Fleet, WAIT};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// deploy/agent.toml with its absolute paths moved under `root` and `listen` on `addr`.
fn installed_config(root: &Path, addr: SocketAddr) -> String {
    let text = std::fs::read_to_string(repo_file("deploy/agent.toml")).expect("deploy/agent.toml");
    let etc = root.join("etc/rjob");
    let var = root.join("var/lib/rjob-agent");
    text.replace("\"/etc/rjob/", &format!("\"{}/", etc.display()))
        .replace("\"/var/lib/rjob-agent/", &format!("\"{}/", var.display()))
        .replace("listen = \"0.0.0.0:7443\"", &format!("listen = \"{addr}\""))
}

#[test]
fn the_documented_agent_toml_and_policy_start_an_agent_that_serves_the_controller() {
    let fleet = Fleet::start(0).expect("fleet");
    let root = fleet.scratch().join("root");
    let ip = Ipv4Addr::new(127, 0, 0, 2);
    let addr = SocketAddr::from((ip, free_port(ip)));
    // The README's steps: agent.toml, the TLS files from `rjob pki issue-agent --out`, the
    // policy, and the spool's parent (systemd's StateDirectory, 0700).
    let etc = root.join("etc/rjob");
    fleet
        .pki
        .issue_agent("web01", &ip.to_string(), &etc.join("tls"))
        .expect("issue");
    std::fs::write(etc.join("agent.toml"), installed_config(&root, addr)).expect("config");
    std::fs::copy(repo_file("deploy/policy.toml"), etc.join("policy.toml")).expect("policy");
    let var = root.join("var/lib/rjob-agent");
    std::fs::create_dir_all(&var).expect("state dir");
    std::fs::set_permissions(&var, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");

    let log = root.join("agent.log");
    let mut agent = Command::new(bin("rjob-agent"))
        .arg("--config")
        .arg(etc.join("agent.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the agent");
    let listening = wait_for(WAIT, || TcpStream::connect(addr).is_ok());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    if !listening {
        let _ = agent.kill();
        panic!("the documented config did not start an agent: {}", log_text());
    }
    // The policy is live: the controller's identity (rjob-controller) runs as its default,
    // "deploy", whether or not this machine has that user.
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &addr.to_string(), "-s", "id -un"]));
    let _ = agent.kill();
    let _ = agent.wait();
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("deploy"),
        "the policy's default user decides: {out}\n{}",
        log_text()
    );
    assert!(!said.contains("connection"), "{out}");

    // Without the policy file, an agent running as root (as the unit runs it, and as this
    // suite runs) refuses to start, naming it.
    assert!(
        nix::unistd::geteuid().is_root(),
        "the deployment tests run as root, as the unit does"
    );
    std::fs::remove_file(etc.join("policy.toml")).expect("rm policy");
    let out = ran(Command::new(bin("rjob-agent"))
        .arg("--config")
        .arg(etc.join("agent.toml"))
        .stdin(Stdio::null()));
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("policy"), "{out}");
}
