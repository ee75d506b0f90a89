//! Several daemons on one PostgreSQL store, and an agent that dialled out to one of them
//! (`rjob-agent --connect`): the registry of which agent is on which daemon lives in the
//! store, and only the daemon the agent dialled in to claims its children, whichever daemon
//! the job was created on. The agent's name (`web01`) resolves nowhere: no other daemon could
//! dial it.

#[path = "multi/mod.rs"]
mod multi;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};

use rjob_testkit::AgentSetup;
use rjob_tests::pg::Cluster;
use rjob_tests::{bin_dir, free_port, ran, test_policy, wait_for, Daemon, Fleet};

/// An agent process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn only_the_daemon_an_agent_dialled_in_to_claims_its_children() {
    let cluster = Cluster::shared();
    let fleet = Fleet::start(0).expect("fleet");
    let db = cluster.database().expect("database");
    let url = db.url();
    let lo = Ipv4Addr::LOCALHOST;
    let listen = SocketAddr::from((lo, free_port(lo))).to_string();
    let a = Daemon::start_named_env(&fleet, "daemon-a", &["--store", &url], &[]).expect("daemon a");
    let b = Daemon::start_named_env(
        &fleet,
        "daemon-b",
        &["--store", &url, "--agent-listen", &listen],
        &[],
    )
    .expect("daemon b");
    let m = multi::Multi {
        fleet,
        db,
        daemons: vec![a, b],
    };

    let dir = m.fleet.tmp.path().join("web01");
    m.fleet
        .pki
        .issue_agent("web01", "web01", &dir)
        .expect("certificate");
    std::fs::write(dir.join("policy.toml"), test_policy()).expect("policy");
    let log = dir.join("agent.log");
    let agent = AgentSetup {
        listen: SocketAddr::from((lo, free_port(lo))),
        cert_dir: dir.clone(),
        spool: dir.join("spool"),
        policy: dir.join("policy.toml"),
        config: None,
    };
    let mut cmd = agent.command(bin_dir());
    cmd.args(["--connect", &listen])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let _agent = Running(cmd.spawn().expect("rjob-agent"));

    let published = "SELECT count(*) FROM agents a JOIN daemons d ON d.id = a.daemon WHERE a.name = 'web01'";
    assert!(
        wait_for(multi::LONG, || m.num(published) == 1),
        "web01's connection never reached the store's registry\n--- agent\n{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        m.logs()
    );
    let epoch_b = m.epoch(1);
    for round in 0..3 {
        let started = std::time::Instant::now();
        let name = format!("via-a-{round}");
        let r = m.daemons[0].invoke_job("web01", &name, "echo from-web01", &[]);
        assert_eq!(r.code, 0, "{r}");
        m.wait_completed(&name);
        let id = m.job_id(&name);
        let by = m.num(&format!("SELECT written_by FROM children WHERE job_id = {id}"));
        assert_eq!(
            by,
            epoch_b,
            "job {name} ran on the daemon web01 dialled in to\n{}",
            m.logs()
        );
        let got = ran(m.daemons[0].rjob().args(["receive", &name]));
        assert_eq!(got.code, 0, "{got}");
        assert_eq!(got.lines_of("web01"), ["from-web01"], "{got}");
        eprintln!("job {name}: {:?}", started.elapsed());
    }
}
