//! Agents that dial out (`rjob-agent --connect`, `rjob serve --agent-listen`), behind a
//! firewall: real agents in a network namespace the test creates, joined to the host by a
//! veth pair, where iptables drops every new TCP connection into the namespace (established
//! and related traffic passes, as behind NAT).
//!
//! - dialling in to such an agent fails (unreachable), while the agent, dialled out to the
//!   daemon, is reached by its certificate name: jobs run (`invoke --as-job -H web01`) and
//!   their output is complete;
//! - a connection cut mid-run (the agent's socket killed with `ss -K`, and its redials held
//!   back for a while) resumes: the run went on, and the received output is exactly 1..N,
//!   nothing lost or repeated.
//!
//! Needs root (namespaces, veth, iptables): without it these tests FAIL, on purpose.
//! Everything made (agents, namespace, rules, veth) goes at the end, also on failure.
#[path = "dial_out/netns.rs"]
mod netns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use netns::Firewalled;
use rjob_testkit::AgentSetup;
use rjob_tests::{bin_dir, free_port, ran, test_policy, wait_for, Daemon, Fleet};

/// Generous: the machine may be loaded, and a held-back redial waits for TCP's SYN resend.
const LONG: Duration = Duration::from_secs(120);

/// A firewalled namespace with one agent, `web01`, dialled out to a daemon on the host.
struct Setup {
    // Dropped in this order: the daemon, then the agent and the namespace, then the files.
    daemon: Daemon,
    ns: Firewalled,
    fleet: Fleet,
    agent_log: PathBuf,
    /// Where the daemon accepts agents.
    listen: SocketAddr,
}

impl Setup {
    fn start() -> anyhow::Result<Setup> {
        let ns = Firewalled::create()?;
        let fleet = Fleet::start(0)?;
        let dir = fleet.tmp.path().join("web01");
        let inside = ns.inside_ip.to_string();
        netns::sh(&[
            bin_dir().join("rjob").to_str().unwrap_or("rjob"),
            "pki",
            "issue-agent",
            "web01",
            "--san",
            "web01",
            "--san",
            &inside,
            "--ca-dir",
            fleet.pki.dir.to_str().unwrap_or(""),
            "--out",
            dir.to_str().unwrap_or(""),
        ])?;
        std::fs::write(dir.join("policy.toml"), test_policy())?;
        let listen = SocketAddr::from((ns.host_ip, free_port(ns.host_ip)));
        let daemon = Daemon::start_with(&fleet, &["--agent-listen", &listen.to_string()])?;
        let mut setup = Setup {
            daemon,
            ns,
            agent_log: dir.join("agent.log"),
            fleet,
            listen,
        };
        let agent = AgentSetup {
            listen: SocketAddr::from((setup.ns.inside_ip, rjob_proto::DEFAULT_PORT)),
            cert_dir: dir.clone(),
            spool: dir.join("spool"),
            policy: dir.join("policy.toml"),
            config: None,
        };
        let mut cmd = agent.command(bin_dir());
        cmd.args(["--kill-grace", "1s", "--connect", &listen.to_string()]);
        setup.ns.spawn(&cmd, &setup.agent_log)?;
        Ok(setup)
    }

    /// The hosts connected to the daemon now, by name (`rjob daemon status`).
    fn connected(&self) -> Vec<String> {
        let out = ran(self.daemon.rjob().args(["daemon", "status", "--output", "json"]));
        let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        status["connected"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["host"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn wait_connected(&self) {
        let connected = wait_for(LONG, || self.connected() == ["web01"]);
        assert!(
            connected,
            "web01 never dialled in: connected {:?}\n--- agent log\n{}\n--- daemon log\n{}",
            self.connected(),
            self.agent_log_text(),
            self.daemon.log_text()
        );
    }

    fn agent_log_text(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    /// The lines `job` received from web01 (`rjob receive`, kept with `keep`).
    fn lines(&self, job: &str, keep: bool) -> Vec<String> {
        let mut cmd = self.daemon.rjob();
        cmd.args(["receive", job]);
        if keep {
            cmd.arg("--keep");
        }
        ran(&mut cmd).lines_of("web01")
    }

    /// `rjob invoke` (from `rjob`) of the agent by its address inside the namespace, which
    /// the firewall drops.
    fn dial_in(&self, mut rjob: std::process::Command) -> rjob_tests::Ran {
        ran(rjob.args([
            "invoke",
            "-H",
            &format!("{}:{}", self.ns.inside_ip, rjob_proto::DEFAULT_PORT),
            "--connect-timeout",
            "3s",
            "--script",
            "echo reached",
        ]))
    }

    fn numbers(n: usize) -> Vec<String> {
        (1..=n).map(|i| i.to_string()).collect()
    }
}

#[test]
fn an_agent_behind_a_firewall_is_reached_only_when_it_dials_out() {
    let setup = Setup::start().expect("set up the namespace, the daemon and the agent");
    setup.wait_connected();

    // Dialling in: the firewall drops the connection, so the host is unreachable.
    let direct = setup.dial_in(setup.fleet.rjob());
    assert_eq!(direct.code, 4, "dialling in must fail as unreachable: {direct}");
    assert!(!direct.stdout.contains("reached"), "{direct}");

    // Dialled out: reached by its certificate name, through the daemon.
    let job = setup
        .daemon
        .invoke_job("web01", "seq", "seq 1 2000; echo done", &[]);
    assert_eq!(job.code, 0, "{job}");
    let waited = ran(setup.daemon.rjob().args(["wait", "seq", "--timeout", "120s"]));
    assert_eq!(waited.code, 0, "{waited}\n{}", setup.daemon.log_text());
    let mut want = Setup::numbers(2000);
    want.push("done".into());
    assert_eq!(
        setup.lines("seq", false),
        want,
        "the output is complete, in order"
    );
    assert_eq!(setup.daemon.job("seq")["state"], "Completed");

    // A second job over the same connection.
    let again = setup
        .daemon
        .invoke_job("web01", "again", "hostname >/dev/null; echo again", &[]);
    assert_eq!(again.code, 0, "{again}");
    let waited = ran(setup.daemon.rjob().args(["wait", "again", "--timeout", "120s"]));
    assert_eq!(waited.code, 0, "{waited}");
    assert_eq!(setup.lines("again", false), ["again"]);

    // The agents that dialled in are the built-in session @connected.
    let listed = ran(setup.daemon.rjob().args(["session", "list", "--hosts"]));
    assert_eq!(listed.code, 0, "{listed}");
    assert!(
        listed.stdout.contains("@connected") && listed.stdout.contains("web01"),
        "{listed}"
    );
    let synchronous = ran(setup.daemon.rjob().args([
        "invoke",
        "--session",
        "@connected",
        "--script",
        "echo over-the-dial-in",
    ]));
    assert_eq!(synchronous.code, 0, "{synchronous}");
    assert!(synchronous.stdout.contains("over-the-dial-in"), "{synchronous}");
    // A plain `rjob invoke -H web01` goes through the daemon, transparently: the same
    // output and exit status as over the session.
    let script = "echo routed; echo to-stderr >&2; exit 3";
    let routed = ran(setup
        .daemon
        .rjob()
        .args(["invoke", "-H", "web01", "--script", script]));
    let over = ran(setup
        .daemon
        .rjob()
        .args(["invoke", "--session", "@connected", "--script", script]));
    assert_eq!(
        routed.stdout, over.stdout,
        "routed: {routed}\nover the session: {over}"
    );
    assert!(routed.stdout.contains("web01: routed"), "{routed}");
    assert_eq!(
        (routed.code, over.code),
        (1, 1),
        "a failed host: {routed}\n{over}"
    );
    let json = ran(setup
        .daemon
        .rjob()
        .args(["invoke", "-H", "web01", "-o", "json", "--script", "echo j"]));
    assert_eq!(json.code, 0, "{json}");
    assert!(json.stdout.contains("\"host\":\"web01\""), "{json}");
    // A host that did not dial in is still dialled directly (and is unreachable here).
    let direct = setup.dial_in(setup.daemon.rjob());
    assert_eq!(
        direct.code, 4,
        "not dialled in: dialled directly, unreachable: {direct}"
    );
    assert!(!direct.stdout.contains("reached"), "{direct}");
    let removed = ran(setup.daemon.rjob().args(["session", "remove", "@connected"]));
    assert_ne!(removed.code, 0, "a built-in session cannot be removed: {removed}");
}

#[test]
fn a_cut_connection_resumes_with_nothing_lost_or_repeated() {
    let setup = Setup::start().expect("set up the namespace, the daemon and the agent");
    setup.wait_connected();
    let n = 120;
    let script = format!("i=1; while [ $i -le {n} ]; do echo $i; i=$((i+1)); sleep 0.05; done");
    let job = setup.daemon.invoke_job("web01", "cut", &script, &[]);
    assert_eq!(job.code, 0, "{job}");
    let under_way = wait_for(LONG, || setup.lines("cut", true).len() >= 10);
    assert!(under_way, "the run never got going: {}", setup.daemon.job("cut"));

    // Cut: new connections to the daemon are held back (their SYNs dropped), and the live
    // one is killed (the agent's socket destroyed, a reset sent to the daemon).
    let (host, port) = (setup.listen.ip().to_string(), setup.listen.port().to_string());
    let hold = ["-p", "tcp", "-d", &host, "--dport", &port, "--syn", "-j", "DROP"];
    let mut insert = vec!["iptables", "-I", "OUTPUT"];
    insert.extend_from_slice(&hold);
    setup.ns.exec(&insert).expect("hold back redials");
    let kill_filter = format!("dport = :{port}");
    setup
        .ns
        .exec(&["ss", "-K", "dst", &host, &kill_filter])
        .expect("kill the connection");
    let gone = wait_for(LONG, || setup.connected().is_empty());
    assert!(gone, "the daemon still counts web01 as connected after the cut");
    let disconnected = wait_for(LONG, || {
        setup.daemon.job("cut")["children"][0]["state"] == "Disconnected"
    });
    assert!(
        disconnected,
        "the child never showed Disconnected: {}",
        setup.daemon.job("cut")
    );
    // The cut lasts a while: the run goes on, its output spooled on the agent.
    std::thread::sleep(Duration::from_secs(3));
    let mut delete = vec!["iptables", "-D", "OUTPUT"];
    delete.extend_from_slice(&hold);
    setup.ns.exec(&delete).expect("let redials through");

    setup.wait_connected();
    let waited = ran(setup.daemon.rjob().args(["wait", "cut", "--timeout", "120s"]));
    assert_eq!(waited.code, 0, "{waited}\n{}", setup.daemon.log_text());
    assert_eq!(setup.daemon.job("cut")["state"], "Completed");
    assert_eq!(
        setup.lines("cut", false),
        Setup::numbers(n),
        "exactly 1..{n}, nothing lost or repeated"
    );
    let dials = setup
        .agent_log_text()
        .matches("dialled in to the controller")
        .count();
    assert!(
        dials >= 2,
        "the agent dialled in {dials} time(s): {}",
        setup.agent_log_text()
    );
}

/// An agent started with `--connect` and no `--listen` opens no port: behind NAT nothing
/// could reach it, and an agent that does not need a listener should not have one.
#[test]
fn an_agent_that_dials_out_opens_no_port_unless_asked() {
    let fleet = Fleet::start(0).expect("a CA");
    let dir = fleet.tmp.path().join("only-out");
    fleet
        .pki
        .issue_agent("only-out", "only-out", &dir)
        .expect("a certificate");
    std::fs::write(dir.join("policy.toml"), test_policy()).expect("a policy");
    let agent = AgentSetup {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert_dir: dir.clone(),
        spool: dir.join("spool"),
        policy: dir.join("policy.toml"),
        config: None,
    };
    // Nothing listens there: the agent keeps redialling meanwhile.
    let controller = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1].into())));
    let log = dir.join("agent.log");
    let mut cmd = agent.dial_out_command(bin_dir(), &controller.to_string());
    cmd.env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("the log"));
    let mut child = cmd.spawn().expect("rjob-agent");
    let ready = wait_for(LONG, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("rjob-agent ready"))
    });
    let sockets = ran(std::process::Command::new("ss").args(["-Hltnp"]));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "the agent never became ready:\n{text}");
    assert!(text.contains("dials out only"), "{text}");
    let mine = format!("pid={},", child.id());
    assert!(
        !sockets.stdout.contains(&mine),
        "an agent that only dials out listens nowhere:\n{}",
        sockets.stdout
    );
}
