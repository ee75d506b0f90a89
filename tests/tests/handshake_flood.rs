//! Unauthenticated exhaustion (issue 11, point 11): thousands of connections that stall in
//! the TLS handshake, from one source or from many, neither lock out a controller nor take
//! the agent's descriptors, and they are logged as counts, not one line each.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;

use rjob_tests::{ran, wait_for, Agent, Fleet, WAIT};

/// The start of a ClientHello: a TLS record header announcing 512 bytes and the handshake
/// header, then nothing more. The agent reads it and waits for the rest.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x5a,
];

const AGGREGATE: &str = "TLS handshakes that did not complete";

/// The soft limit on open files, raised to the hard one: the test holds thousands.
fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising the test's open-file limit");
    }
}

/// `n` connections to `to`, spread round-robin over `sources`, each sending the start of a
/// ClientHello and then stalling. Returned open: dropping them closes them.
fn stall(to: SocketAddr, sources: &[Ipv4Addr], n: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::from((sources[i % sources.len()], 0)))
                .expect("binding a loopback source address");
            let tcp = socket.connect(to).await.expect("connect");
            // Closed with a reset when dropped: no TIME_WAIT (nor a connection-tracking entry
            // for two minutes) for thousands of connections.
            let _ = tcp.set_zero_linger();
            let mut tcp = tcp.into_std().expect("std stream");
            tcp.set_nonblocking(false).expect("blocking");
            // A refused connection may already be reset: that is what the agent should do.
            let _ = tcp.write_all(PARTIAL_CLIENT_HELLO);
            out.push(tcp);
        }
        out
    })
}

fn sources(third: u8, n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|last| Ipv4Addr::new(127, 0, third, last)).collect()
}

fn open_fds(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// The sum of `key=N` over the agent's aggregated handshake lines.
fn logged(agent: &Agent, key: &str) -> u64 {
    let needle = format!(" {key}=");
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains(AGGREGATE))
        .filter_map(|l| {
            let at = l.find(&needle)? + needle.len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Lines of the agent's log about handshakes, aggregated or not.
fn handshake_lines(agent: &Agent) -> usize {
    agent
        .log_text()
        .lines()
        .filter(|l| l.to_lowercase().contains("handshake"))
        .count()
}

/// One agent with small caps, a log interval of 1s and a long handshake timeout (so the
/// stalled connections stay stalled for the whole test).
fn agent_with_caps(total: u32, per_source: u32) -> Fleet {
    raise_own_fd_limit();
    Fleet::start_with(1, |cmd: &mut Command| {
        cmd.args([
            "--max-handshakes",
            &total.to_string(),
            "--max-handshakes-per-source",
            &per_source.to_string(),
            "--handshake-timeout",
            "60s",
            "--handshake-log-interval",
            "1s",
        ]);
    })
    .expect("fleet")
}

fn invoke_works(fleet: &Fleet, word: &str) {
    let agent = &fleet.agents[0];
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &agent.host(), "--script", &format!("echo {word}")]));
    assert_eq!(
        out.code,
        0,
        "rjob invoke failed under the flood: {out}\n--- agent log\n{}",
        agent.log_text()
    );
    assert_eq!(out.lines_of(&agent.host()), vec![word.to_string()], "{out}");
}

#[test]
fn two_thousand_stalled_handshakes_from_one_source_neither_lock_out_a_controller_nor_flood_the_log() {
    let fleet = agent_with_caps(256, 16);
    let agent = &fleet.agents[0];
    let before = open_fds(agent);
    let n = 2000;
    let held = stall(agent.addr, &sources(1, 1), n);
    // Every connection beyond the source's 16 is refused at once, and counted.
    assert!(
        wait_for(WAIT, || logged(agent, "refused_per_source_cap")
            == (n - 16) as u64),
        "refusals not counted: {} of {}\n{}",
        logged(agent, "refused_per_source_cap"),
        n - 16,
        agent.log_text()
    );
    let fds = open_fds(agent);
    assert!(
        fds <= before + 16 + 8,
        "the agent holds {fds} descriptors with the flood on (before: {before}; cap 16 per source)"
    );
    invoke_works(&fleet, "through-the-flood");
    let fds = open_fds(agent);
    assert!(
        fds <= before + 16 + 8,
        "{fds} descriptors after the invoke (before: {before})"
    );
    let lines = handshake_lines(agent);
    assert!(
        lines < 20,
        "{lines} log lines about handshakes for {n} connections:\n{}",
        agent.log_text()
    );
    // The audit trail is there, not drowned out.
    assert!(
        agent
            .log_text()
            .lines()
            .any(|l| l.contains("audit") && l.contains("run started")),
        "no audit record of the run:\n{}",
        agent.log_text()
    );
    drop(held);
}

#[test]
fn stalled_handshakes_from_many_sources_share_the_cap_and_a_controller_still_gets_in() {
    let fleet = agent_with_caps(256, 16);
    let agent = &fleet.agents[0];
    let before = open_fds(agent);
    // 100 sources want 30 each (3000): the per-source cap would allow 1600, the overall cap 256.
    let n = 3000;
    let held = stall(agent.addr, &sources(2, 100), n);
    assert!(
        wait_for(WAIT, || {
            logged(agent, "refused_per_source_cap")
                + logged(agent, "refused_overall_cap")
                + logged(agent, "evicted")
                >= (n - 256) as u64
        }),
        "the flood was not counted:\n{}",
        agent.log_text()
    );
    assert!(
        logged(agent, "evicted") > 0,
        "a full table never evicted:\n{}",
        agent.log_text()
    );
    let fds = open_fds(agent);
    assert!(
        fds <= before + 256 + 8,
        "the agent holds {fds} descriptors with the flood on (before: {before}; cap 256)"
    );
    for i in 0..3 {
        invoke_works(&fleet, &format!("controller-{i}"));
    }
    let fds = open_fds(agent);
    assert!(
        fds <= before + 256 + 8,
        "{fds} descriptors after the invokes (before: {before})"
    );
    let lines = handshake_lines(agent);
    assert!(
        lines < 20,
        "{lines} log lines about handshakes for {n} connections:\n{}",
        agent.log_text()
    );
    drop(held);
}

/// Whether the peer closed or reset the connection (it reads nothing more, or an error).
fn closed_by_peer(mut tcp: &TcpStream) -> bool {
    let _ = tcp.set_read_timeout(Some(WAIT));
    let mut buf = [0u8; 64];
    matches!(tcp.read(&mut buf), Ok(0) | Err(_))
}

/// Sets the soft limit on open files of `pid` (the hard one stays).
fn prlimit_nofile(pid: u32, soft: u64, hard: u64) {
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .output()
        .expect("prlimit (util-linux) must be installed");
    assert!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn out_of_descriptors_the_agent_sheds_new_connections_and_recovers() {
    let fleet = agent_with_caps(4096, 4096);
    let agent = &fleet.agents[0];
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).expect("getrlimit");
    let before = open_fds(agent) as u64;
    // Room for 30 more descriptors, then EMFILE.
    prlimit_nofile(agent.pid(), before + 30, hard);
    let held = stall(agent.addr, &sources(3, 10), 200);
    // The loop does not wait on the error: what it cannot serve, it accepts and closes at once.
    assert!(
        wait_for(WAIT, || logged(agent, "refused_out_of_descriptors") > 0),
        "no connection shed while out of descriptors:\n{}",
        agent.log_text()
    );
    let closed = held.iter().rev().take(100).filter(|t| closed_by_peer(t)).count();
    assert_eq!(
        closed, 100,
        "the last 100 connections were not all closed by the agent"
    );
    prlimit_nofile(agent.pid(), hard, hard);
    drop(held);
    invoke_works(&fleet, "after-exhaustion");
    assert!(
        agent
            .log_text()
            .lines()
            .filter(|l| l.contains("Too many open files"))
            .count()
            < 20,
        "EMFILE logged per connection:\n{}",
        agent.log_text()
    );
}

#[test]
fn a_handshake_that_stalls_past_the_deadline_is_closed_and_counted() {
    raise_own_fd_limit();
    let fleet = Fleet::start_with(1, |cmd: &mut Command| {
        cmd.args(["--handshake-timeout", "1s", "--handshake-log-interval", "1s"]);
    })
    .expect("fleet");
    let agent = &fleet.agents[0];
    let held = stall(agent.addr, &sources(4, 5), 5);
    for tcp in &held {
        assert!(
            closed_by_peer(tcp),
            "a stalled handshake was not closed at the deadline"
        );
    }
    assert!(
        wait_for(WAIT, || logged(agent, "timed_out") == 5),
        "timeouts not counted:\n{}",
        agent.log_text()
    );
    invoke_works(&fleet, "after-the-deadline");
}

#[test]
fn handshake_caps_and_deadlines_of_zero_are_refused() {
    for (flag, value) in [
        ("--max-handshakes", "0"),
        ("--max-handshakes-per-source", "0"),
        ("--handshake-timeout", "0s"),
        ("--handshake-log-interval", "0s"),
    ] {
        let out = ran(Command::new(rjob_tests::bin("rjob-agent")).args([
            "--cert",
            "/nonexistent",
            "--key",
            "/nonexistent",
            "--client-ca",
            "/nonexistent",
            "--config",
            "/dev/null",
            flag,
            value,
        ]));
        assert_eq!(out.code, 2, "{flag} {value}: {out}");
        let name = flag.trim_start_matches("--").replace('-', "_");
        assert!(
            out.stderr.contains(&format!("{name} must be")),
            "{flag} {value}: the error does not name it: {out}"
        );
    }
}

#[test]
fn audit_records_are_kept_when_the_log_is_quieted() {
    let fleet = Fleet::start_with(1, |cmd: &mut Command| {
        cmd.env("RJOB_LOG", "warn");
    })
    .expect("fleet");
    invoke_works(&fleet, "quiet-log");
    let log = fleet.agents[0].log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("audit") && l.contains("run started")),
        "RJOB_LOG=warn dropped the audit record:\n{log}"
    );
    assert!(
        !log.contains("rjob-agent ready"),
        "RJOB_LOG=warn still logs info lines:\n{log}"
    );
}
