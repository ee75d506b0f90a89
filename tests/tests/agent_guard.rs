//! The agent under hostile requests: bad run-as names, failed user lookups, uid-0 aliases,
//! run quotas, oversized environments, password guessing, attach positions past the end,
//! and TLS clients that are not what they claim. Raw gRPC clients (rjob-proto's generated
//! client) send what `rjob` never would; real users and real PAM; needs root (CI has it).

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_client::AgentClient;
use rjob_tests::{process_alive, ran, test_policy, Agent, Fleet, WAIT};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const ROOT_ALIAS: &str = "rjgroot";
const BOB: &str = "rjgbob";
const MINE: &str = "rjgmine";
const PASSWORD: &str = "Gu4rd-rjob-test-secret";
const PAM_SERVICE: &str = "rjob-guard-test";

/// Creates the test users (once per test binary) and the PAM service file.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests create users and need root: run them as root (CI does)"
        );
        let sh = |script: &str| {
            let out = ran(Command::new("sh").args(["-c", script]));
            assert_eq!(out.code, 0, "{script}: {out}");
        };
        sh(&format!(
            "id {ROOT_ALIAS} >/dev/null 2>&1 || useradd -o -u 0 -g 0 -M -s /bin/sh {ROOT_ALIAS}"
        ));
        for user in [BOB, MINE] {
            sh(&format!("id {user} >/dev/null 2>&1 || useradd -m -s /bin/sh {user}"));
            sh(&format!("echo '{user}:{PASSWORD}' | chpasswd"));
        }
        std::fs::write(
            Path::new("/etc/pam.d").join(PAM_SERVICE),
            "# rjob integration tests (agent_guard)\nauth required pam_unix.so nodelay\naccount required pam_unix.so\n",
        )
        .expect("write the PAM service file");
    });
}

/// The test controller may run as the tests' own user (the default), and as anyone but
/// root under `users = ["*"]`, with a password when `password`.
fn star_policy(password: bool) -> String {
    format!(
        "{}[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"*\"]\npassword = {password}\n",
        test_policy()
    )
}

fn fleet(policy: &str, flags: &[&str]) -> Fleet {
    setup();
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    Fleet::start_policy(1, policy, |cmd| {
        cmd.args(["--pam-service", PAM_SERVICE]).args(&flags);
    })
    .expect("fleet")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// A raw gRPC client of `agent` with the identity in `dir`.
async fn client(agent: &Agent, dir: &Path) -> AgentClient<Channel> {
    rjob_tests::raw::agent_client(agent, dir).await
}

fn start_request(script: &str, run_as: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        script: script.into(),
        run_as: run_as.into(),
        ..Default::default()
    }
}

/// `rjob invoke` of `script` on the fleet's agent, which must succeed and print `expected`.
fn invoke_ok(fleet: &Fleet, extra: &[&str], script: &str, expected: &str) {
    let host = fleet.hosts();
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host])
        .args(extra)
        .args(["--script", script]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of(&host), [expected], "{out}");
}

fn assert_one_line(status: &tonic::Status, code: Code, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let message = status.message();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
    assert!(
        !message.contains('\n') && message.len() < 300,
        "not one short line: {message:?}"
    );
}

#[test]
fn bad_run_as_names_are_refused_before_any_lookup_and_the_agent_keeps_serving() {
    let fleet = fleet(&star_policy(false), &[]);
    let agent = &fleet.agents[0];
    runtime().block_on(async {
        let mut c = client(agent, &fleet.pki.dir).await;
        let huge = "a".repeat(4 << 20);
        let refused = c
            .start_run(start_request("true", &huge))
            .await
            .expect_err("4 MiB run_as");
        assert_one_line(
            &refused,
            Code::InvalidArgument,
            "run_as is 4194304 bytes; a user name has at most 32",
        );
        for bad in [
            "-rf",
            "a b",
            "../etc",
            "r\u{e9}mi",
            "x\ny",
            "a:b",
            "$(id)",
            &"b".repeat(33),
        ] {
            let refused = c.start_run(start_request("true", bad)).await.expect_err(bad);
            assert_one_line(&refused, Code::InvalidArgument, "run_as");
        }
    });
    assert!(
        process_alive(agent.pid() as i32),
        "the agent died: {}",
        agent.log_text()
    );
    invoke_ok(&fleet, &[], "echo still-serving", "still-serving");
}

#[test]
fn a_uid_0_alias_is_refused_under_a_star_rule() {
    let fleet = fleet(&star_policy(false), &[]);
    let host = fleet.hosts();
    let marker = fleet.scratch().join("ran-as-root");
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &host,
        "--user",
        ROOT_ALIAS,
        "--script",
        &format!("touch {}", marker.display()),
    ]));
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains(&format!("may not run as {ROOT_ALIAS}")),
        "{out}"
    );
    assert!(!marker.exists(), "a uid-0 alias ran under users = [\"*\"]");
    // A non-root user under the same rule runs.
    invoke_ok(&fleet, &["--user", BOB], "id -un", BOB);
}

/// The lowest descriptor number `pid` does not use: with RLIMIT_NOFILE there, the process
/// can open no descriptor at all.
fn lowest_free_fd(pid: u32) -> u32 {
    let used: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's descriptors")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

fn set_nofile(pid: u32, soft: &str) {
    let out = ran(Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:")));
    assert_eq!(out.code, 0, "prlimit (util-linux) is needed: {out}");
}

#[test]
fn a_failed_user_lookup_refuses_the_run_and_says_it_was_a_lookup_failure() {
    let fleet = fleet(&star_policy(false), &[]);
    let agent = &fleet.agents[0];
    let pid = agent.pid();
    let soft = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .expect("limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .expect("the agent's descriptor limit");
    let marker = fleet.scratch().join("ran");
    runtime().block_on(async {
        // The connection is open first; then the agent can open no file, so the user database
        // cannot be read (EMFILE), as under descriptor exhaustion.
        let mut c = client(agent, &fleet.pki.dir).await;
        c.get_agent_info(pb::GetAgentInfoRequest {})
            .await
            .expect("agent info");
        set_nofile(pid, &lowest_free_fd(pid).to_string());
        for user in [BOB, ROOT_ALIAS] {
            let refused = c
                .start_run(start_request(&format!("touch {}", marker.display()), user))
                .await
                .expect_err("a run despite a failed lookup");
            assert_one_line(
                &refused,
                Code::Unavailable,
                &format!("cannot look up the user to run as: {user}"),
            );
            assert!(!refused.message().contains("no user"), "{refused:?}");
        }
        set_nofile(pid, &soft);
    });
    assert!(
        !marker.exists(),
        "a run started although its user could not be looked up"
    );
    invoke_ok(&fleet, &["--user", BOB], "id -un", BOB);
}

#[test]
fn one_client_gets_at_most_max_runs_per_identity_and_others_still_run() {
    let policy = format!(
        "{}\n[[allow]]\nidentity = \"other-client\"\nusers = [\"{BOB}\"]\ndefault = \"{BOB}\"\n",
        test_policy()
    );
    let fleet = fleet(&policy, &["--max-runs-per-identity", "2"]);
    let other = fleet.tmp.path().join("other-client");
    let out = ran(fleet
        .rjob()
        .args(["pki", "issue-client", "other-client", "--ca-dir"])
        .arg(&fleet.pki.dir)
        .arg("--out")
        .arg(&other));
    assert_eq!(out.code, 0, "{out}");
    let agent = &fleet.agents[0];
    runtime().block_on(async {
        let mut mine = client(agent, &fleet.pki.dir).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let started = mine
                .start_run(start_request("sleep 60", ""))
                .await
                .expect("within the quota");
            ids.push(started.into_inner().run_id);
        }
        let refused = mine
            .start_run(start_request("sleep 60", ""))
            .await
            .expect_err("over the quota");
        assert_one_line(&refused, Code::ResourceExhausted, "max_runs_per_identity = 2");
        let mut theirs = client(agent, &other).await;
        theirs
            .start_run(start_request("true", ""))
            .await
            .expect("another client still runs");
        // Once one of the two has ended, the client may start another.
        mine.stop_run(pb::RunControlRequest {
            run_id: ids[0].clone(),
        })
        .await
        .expect("stop");
        let deadline = Instant::now() + WAIT;
        loop {
            match mine.start_run(start_request("true", "")).await {
                Ok(_) => break,
                Err(e) if e.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no new run after one ended: {e:?}"),
            }
        }
        mine.stop_run(pb::RunControlRequest {
            run_id: ids[1].clone(),
        })
        .await
        .expect("stop");
    });
}

#[test]
fn environment_limits_are_checked_first_and_refused_as_invalid_argument() {
    let fleet = fleet(&star_policy(true), &[]);
    let agent = &fleet.agents[0];
    runtime().block_on(async {
        let mut c = client(agent, &fleet.pki.dir).await;
        let with_env = |env: Vec<(String, String)>, run_as: &str, password: &str| pb::StartRunRequest {
            env: env.into_iter().collect(),
            password: password.into(),
            ..start_request("true", run_as)
        };
        // Too many entries, with a wrong password for a password rule: refused for the
        // environment, before PAM is asked.
        let many: Vec<_> = (0..1025).map(|i| (format!("V{i}"), "x".to_string())).collect();
        let refused = c
            .start_run(with_env(many, BOB, "wrong"))
            .await
            .expect_err("1025 entries");
        assert_one_line(&refused, Code::InvalidArgument, "at most 1024 (max_env_entries)");
        // 300,000 entries are refused from the raw message, before it is decoded (decoding
        // them kept the agent's one thread from every other client for seconds).
        let flood: Vec<_> = (0..300_000).map(|i| (format!("V{i}"), "x".to_string())).collect();
        let refused = c
            .start_run(with_env(flood, "", ""))
            .await
            .expect_err("300k entries");
        assert_one_line(
            &refused,
            Code::InvalidArgument,
            "more than 1024 environment variables",
        );
        let big: Vec<_> = (0..100).map(|i| (format!("V{i}"), "y".repeat(3000))).collect();
        let refused = c
            .start_run(with_env(big, BOB, "wrong"))
            .await
            .expect_err("300 kB");
        assert_one_line(&refused, Code::InvalidArgument, "at most 262144 (max_env_bytes)");
        // One variable longer than exec passes on, for a run that would otherwise start.
        let one = vec![("BIG".to_string(), "z".repeat(200 << 10))];
        let refused = c
            .start_run(with_env(one, "", ""))
            .await
            .expect_err("a 200 KiB variable");
        assert_one_line(
            &refused,
            Code::InvalidArgument,
            "environment variable \"BIG\" is 204804 bytes",
        );
        // Arguments each under the limit but together more than exec takes (ARG_MAX: a
        // quarter of the stack limit, 2 MiB under the usual 8 MiB).
        let args = pb::StartRunRequest {
            args: (0..24).map(|_| "a".repeat(120 << 10)).collect(),
            ..start_request("true", "")
        };
        let refused = c.start_run(args).await.expect_err("2.9 MB of arguments");
        assert_one_line(
            &refused,
            Code::InvalidArgument,
            "the arguments and environment together are more than the system passes to a program",
        );
        // Within the limits it runs.
        let fine: Vec<_> = (0..1000).map(|i| (format!("V{i}"), "w".repeat(200))).collect();
        c.start_run(with_env(fine, "", ""))
            .await
            .expect("within the limits");
    });
    let log = agent.log_text();
    assert!(
        !log.contains("authentication failed"),
        "PAM was asked before the environment was checked:\n{log}"
    );
}

/// `rjob invoke --user USER --password-file` with `password`; returns its exit code.
fn login(fleet: &Fleet, user: &str, password: &str) -> i32 {
    let file = fleet.scratch().join(format!("pw-{user}-{}", password.len()));
    std::fs::write(&file, format!("{password}\n")).expect("password file");
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--user",
        user,
        "--password-file",
        &file.display().to_string(),
        "--script",
        "true",
    ]));
    out.code
}

/// The failure counts the agent's audit log gives for `user`, in order.
fn failure_counts(agent: &Agent, user: &str) -> Vec<String> {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains("authentication failed") && l.contains(&format!("run_as=\"{user}\"")))
        .filter_map(|l| {
            l.split("failures=")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn only_a_success_for_the_same_user_resets_the_password_slow_down() {
    let fleet = fleet(&star_policy(true), &[]);
    let agent = &fleet.agents[0];
    // Two guesses at BOB's password, then a valid login of the client's own account (MINE):
    // BOB's failures go on counting.
    assert_eq!(login(&fleet, BOB, "guess-1"), 1);
    assert_eq!(login(&fleet, BOB, "guess-2"), 1);
    assert_eq!(login(&fleet, MINE, PASSWORD), 0);
    assert_eq!(login(&fleet, BOB, "guess-3"), 1);
    assert_eq!(
        failure_counts(agent, BOB),
        ["1", "2", "3"],
        "{}",
        agent.log_text()
    );
    let third = agent
        .log_text()
        .lines()
        .rfind(|l| l.contains("audit: authentication failed"))
        .unwrap_or_default()
        .to_string();
    assert!(
        third.contains("delay_ms=500"),
        "the third failure in a row is slowed down: {third}"
    );
    // A success for BOB itself starts BOB's count again.
    assert_eq!(login(&fleet, BOB, PASSWORD), 0);
    assert_eq!(login(&fleet, BOB, "guess-4"), 1);
    assert_eq!(
        failure_counts(agent, BOB),
        ["1", "2", "3", "1"],
        "{}",
        agent.log_text()
    );
}

#[test]
fn attach_after_the_last_possible_seq_sends_no_output_only_the_result() {
    let fleet = fleet(&test_policy(), &[]);
    let agent = &fleet.agents[0];
    runtime().block_on(async {
        let mut c = client(agent, &fleet.pki.dir).await;
        let run_id = c
            .start_run(start_request("echo one; echo two >&2; echo three", ""))
            .await
            .expect("start")
            .into_inner()
            .run_id;
        let events = |after_seq: u64| {
            let mut c = c.clone();
            let run_id = run_id.clone();
            async move {
                let mut stream = c
                    .attach_run(pb::AttachRunRequest { run_id, after_seq })
                    .await
                    .expect("attach")
                    .into_inner();
                let (mut seqs, mut result) = (Vec::new(), None);
                while let Some(event) = stream.message().await.expect("event") {
                    match event.event {
                        Some(pb::run_event::Event::Chunk(chunk)) => seqs.push(chunk.seq),
                        Some(pb::run_event::Event::Result(r)) => result = Some(r),
                        _ => {}
                    }
                }
                (seqs, result)
            }
        };
        let (all, result) = events(0).await;
        let last = result.expect("a result").last_seq;
        assert_eq!(all, (1..=last).collect::<Vec<_>>());
        assert!(last >= 2, "{all:?}");
        let (rest, _) = events(1).await;
        assert_eq!(rest, (2..=last).collect::<Vec<_>>());
        let (none, result) = events(u64::MAX).await;
        assert_eq!(none, Vec::<u64>::new(), "after_seq 2^64-1 replayed the run");
        assert_eq!(result.map(|r| r.last_seq), Some(last));
    });
}

/// A TLS 1.3 client of `agent` with this identity and cipher order; returns the suite the
/// agent chose and whether it then served (sent HTTP/2's opening) or refused.
fn tls_probe(
    agent: &Agent,
    ca_pem: &[u8],
    chain_pem: &[u8],
    key_pem: &[u8],
    suites: Vec<rustls::SupportedCipherSuite>,
) -> (Option<rustls::CipherSuite>, Result<usize, String>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::io::Read;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem)
        .map(|c| c.expect("pem"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::from(agent.addr.ip());
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tcp = TcpStream::connect(agent.addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return (
                conn.negotiated_cipher_suite().map(|s| s.suite()),
                Err(e.to_string()),
            );
        }
    }
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let mut buf = [0u8; 64];
    let served = rustls::Stream::new(&mut conn, &mut tcp)
        .read(&mut buf)
        .map_err(|e| e.to_string());
    (suite, served)
}

struct CaKeys {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn test_ca(fleet: &Fleet) -> CaKeys {
    let ca_pem = std::fs::read_to_string(fleet.pki.dir.join("ca.crt")).expect("ca.crt");
    let key = std::fs::read_to_string(fleet.pki.dir.join("ca.key")).expect("ca.key");
    let key = rcgen::KeyPair::from_pem(&key).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, key).expect("issuer");
    CaKeys { ca_pem, issuer }
}

/// A certificate for `rjob-controller` with these purposes, signed by `issuer`.
fn leaf(
    issuer: &rcgen::Issuer<'_, impl rcgen::SigningKey>,
    ekus: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ca: bool,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        if ca {
            "rogue intermediate"
        } else {
            "rjob-controller"
        },
    );
    params.extended_key_usages = ekus;
    params.is_ca = if ca {
        rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        rcgen::IsCa::ExplicitNoCa
    };
    if ca {
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert, key)
}

#[test]
fn tls_the_agent_picks_its_cipher_order_and_refuses_chains_the_ca_did_not_mean() {
    use rustls::crypto::ring::cipher_suite as cs;
    use rustls::CipherSuite;
    let fleet = fleet(&test_policy(), &[]);
    let agent = &fleet.agents[0];
    let marker = fleet.scratch().join("ran");
    let ca = test_ca(&fleet);
    let read = |f: &str| std::fs::read(fleet.pki.dir.join(f)).expect("identity file");

    // ChaCha20 offered first: the agent still picks AES-128-GCM, and serves.
    let (suite, served) = tls_probe(
        agent,
        ca.ca_pem.as_bytes(),
        &read("client.crt"),
        &read("client.key"),
        vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
        ],
    );
    assert_eq!(suite, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
    assert!(
        served.is_ok(),
        "the controller's own certificate was refused: {served:?}"
    );

    let suites = || vec![cs::TLS13_AES_128_GCM_SHA256];
    // Signed by the CA, but with no extended key usage, or for servers only.
    for ekus in [vec![], vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]] {
        let (cert, key) = leaf(&ca.issuer, ekus.clone(), false);
        let (_, served) = tls_probe(
            agent,
            ca.ca_pem.as_bytes(),
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            suites(),
        );
        assert!(
            served.is_err(),
            "a client certificate with EKU {ekus:?} was accepted"
        );
    }
    // A client certificate under an intermediate CA, below a CA with pathlen 0.
    let (inter, inter_key) = leaf(&ca.issuer, vec![], true);
    let inter_issuer = rcgen::Issuer::from_ca_cert_pem(&inter.pem(), inter_key).expect("intermediate");
    let (cert, key) = leaf(
        &inter_issuer,
        vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
        false,
    );
    let chain = format!("{}{}", cert.pem(), inter.pem());
    let (_, served) = tls_probe(
        agent,
        ca.ca_pem.as_bytes(),
        chain.as_bytes(),
        key.serialize_pem().as_bytes(),
        suites(),
    );
    assert!(
        served.is_err(),
        "a chain through an intermediate under a pathlen-0 CA was accepted"
    );
    // And through gRPC: nothing runs for such a client.
    let dir = fleet.scratch().join("rogue");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("ca.crt"), &ca.ca_pem).expect("write");
    std::fs::write(dir.join("client.crt"), &chain).expect("write");
    std::fs::write(dir.join("client.key"), key.serialize_pem()).expect("write");
    let result = runtime().block_on(async {
        let read = |f: &str| std::fs::read(dir.join(f)).expect("identity file");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.crt")))
            .identity(Identity::from_pem(read("client.crt"), read("client.key")))
            .domain_name(agent.addr.ip().to_string());
        let channel = Endpoint::from_shared(format!("https://{}", agent.addr))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        AgentClient::new(channel)
            .start_run(start_request(&format!("touch {}", marker.display()), ""))
            .await
            .map_err(|e| e.to_string())
    });
    assert!(result.is_err(), "the rogue client was served");
    assert!(!marker.exists(), "a script ran for the rogue client");
    // The controller's own identity is still served.
    invoke_ok(&fleet, &[], "echo fine", "fine");
}
