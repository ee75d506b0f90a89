//! PKI for a fleet (issue 15 point 7): batch issuance that real agents serve with, `rjob pki
//! list`, CAs told apart, the expiry warning, and connection errors that say what happened
//! and where (two PKIs: an agent that refuses this controller's certificate).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rjob_tests::{bin, free_port, ran, test_policy, wait_for, Fleet, Pki, WAIT};

/// An agent serving with the certificate in `dir` (agent.crt, agent.key, ca.crt).
fn agent(dir: &Path, addr: SocketAddr) -> Child {
    std::fs::write(dir.join("policy.toml"), test_policy()).expect("policy");
    let child = Command::new(bin("rjob-agent"))
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--cert")
        .arg(dir.join("agent.crt"))
        .arg("--key")
        .arg(dir.join("agent.key"))
        .arg("--client-ca")
        .arg(dir.join("ca.crt"))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agent");
    assert!(
        wait_for(WAIT, || TcpStream::connect(addr).is_ok()),
        "agent {addr} did not listen"
    );
    child
}

#[test]
fn issue_agent_hosts_makes_one_certificate_per_host_that_real_agents_serve_with() {
    let fleet = Fleet::start(0).expect("fleet");
    let out = ran(fleet
        .rjob()
        .args(["pki", "issue-agent", "--hosts", "127.0.0.[2-4]"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("issued 3 agent certificates"), "{out}");
    let mut agents = Vec::new();
    let mut hosts = Vec::new();
    for octet in 2..=4u8 {
        let ip = Ipv4Addr::new(127, 0, 0, octet);
        let addr = SocketAddr::from((ip, free_port(ip)));
        agents.push(agent(&fleet.pki.dir.join("agents").join(ip.to_string()), addr));
        hosts.push(addr.to_string());
    }
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &hosts.join(","), "-s", "echo hi"]));
    for mut a in agents {
        let _ = a.kill();
        let _ = a.wait();
    }
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.matches(": hi").count(), 3, "{out}");

    // Every certificate with its expiry: the CA, the controller's, the three agents'.
    let out = ran(fleet.rjob().args(["pki", "list", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let listed: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(listed.len(), 5, "{out}");
    let agent_rows: Vec<&serde_json::Value> = listed.iter().filter(|l| l["kind"] == "agent").collect();
    assert_eq!(agent_rows.len(), 3, "{out}");
    assert!(
        agent_rows
            .iter()
            .all(|l| l["days_left"].as_i64().is_some_and(|d| d >= 729)),
        "{out}"
    );
    let out = ran(fleet.rjob().args(["pki", "list"]));
    assert!(
        out.stdout.starts_with("KIND") && out.stdout.contains("127.0.0.3"),
        "{out}"
    );
}

#[test]
fn each_ca_subject_is_distinguishable() {
    let fleet = Fleet::start(0).expect("fleet");
    let other = Pki::init(&fleet.scratch().join("other")).expect("pki");
    let ca_subject = |dir: &Path| -> String {
        let out = ran(fleet.rjob().args(["pki", "list", "-o", "json"]).arg(dir));
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["kind"] == "ca")
            .and_then(|l| l["subject"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (a, b) = (ca_subject(&fleet.pki.dir), ca_subject(&other.dir));
    assert!(a.starts_with("rjob CA ") && b.starts_with("rjob CA "), "{a} {b}");
    assert_ne!(a, b);
}

#[test]
fn a_refused_client_certificate_and_a_refused_connection_say_so_and_where() {
    let fleet = Fleet::start(1).expect("fleet");
    let host = fleet.agents[0].host();
    // The agent's CA for the agent's certificate, another CA's client identity.
    let other = Pki::init(&fleet.scratch().join("other")).expect("pki");
    let mixed = fleet.scratch().join("mixed");
    std::fs::create_dir_all(&mixed).expect("mkdir");
    std::fs::copy(fleet.pki.dir.join("ca.crt"), mixed.join("ca.crt")).expect("ca");
    for f in ["client.crt", "client.key"] {
        std::fs::copy(other.dir.join(f), mixed.join(f)).expect("client");
    }
    let out = ran(fleet
        .rjob()
        .env("RJOB_IDENTITY", &mixed)
        .args(["invoke", "-H", &host, "-s", "echo hi"]));
    assert_eq!(
        out.code, 4,
        "a refused client certificate is an unreachable host (exit 4): {out}"
    );
    let wanted = format!("the agent at {host} refused this controller's certificate: unknown CA?");
    assert!(out.stderr.contains(&wanted), "{out}");

    // Nothing listens: the error names the host and port tried.
    let ip = Ipv4Addr::new(127, 0, 0, 9);
    let closed = SocketAddr::from((ip, free_port(ip)));
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &closed.to_string(), "-s", "echo hi"]));
    assert_eq!(out.code, 4, "nothing listens: unreachable (exit 4): {out}");
    assert!(
        out.stderr.contains(&format!("cannot connect: {closed}: ")),
        "{out}"
    );
}

#[test]
fn any_command_warns_when_the_controllers_certificate_expires_within_30_days() {
    let tmp = tempfile::tempdir().expect("tmp");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["rjob-controller".to_string()]).expect("params");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + now - Duration::from_secs(3600);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + now + Duration::from_secs(10 * 86_400);
    let cert = params.self_signed(&key).expect("cert");
    std::fs::write(tmp.path().join("client.crt"), cert.pem()).expect("write");
    let out = ran(Command::new(bin("rjob"))
        .arg("--identity")
        .arg(tmp.path())
        .args(["hosts", "a1"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .starts_with("rjob: warning: the controller's certificate"),
        "{out}"
    );
    assert!(
        out.stderr.contains("expires in 9 days") || out.stderr.contains("expires in 10 days"),
        "{out}"
    );
    // A fresh identity (two years) draws no warning.
    let fleet = Fleet::start(0).expect("fleet");
    let out = ran(fleet.rjob().args(["hosts", "a1"]));
    assert_eq!(out.stderr, "", "{out}");
}

#[test]
fn a_batch_over_the_cap_is_refused_in_one_line_before_anything_is_written() {
    let fleet = Fleet::start(0).expect("fleet");
    let out = ran(fleet
        .rjob()
        .args(["pki", "issue-agent", "--hosts", "web[1-10001].example.com"]));
    assert_eq!(out.code, 2, "a usage error: {out}");
    let line = out.stderr.trim();
    assert!(
        line.contains("10001 hosts") && line.contains("at most 10000") && line.contains("batches"),
        "{out}"
    );
    assert_eq!(line.lines().count(), 1, "one line: {out}");
    assert!(!fleet.pki.dir.join("agents").exists(), "nothing issued: {out}");
    // The limit itself is fine (a smaller batch shows the same path works).
    let out = ran(fleet
        .rjob()
        .args(["pki", "issue-agent", "--hosts", "web[1-2].example.com"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("issued 2 agent certificates"), "{out}");
}
