//! The agent under hostile requests: bad run-as names, failed user lookups, uid-0 aliases,
//! run quotas, oversized environments, password guessing and attach positions past the end.
//! Raw gRPC clients (rjob-proto's generated client) send what `rjob` never would; real users
//! and real PAM; needs root (CI has it). TLS clients that are not what they claim: `agent_tls.rs`.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_client::AgentClient;
use rjob_tests::{process_alive, ran, test_policy, users, Agent, Fleet, WAIT};
use tonic::transport::Channel;
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
        users::require_root("these tests create users");
        users::sh(&format!(
            "id {ROOT_ALIAS} >/dev/null 2>&1 || useradd -o -u 0 -g 0 -M -s /bin/sh {ROOT_ALIAS}"
        ));
        for user in [BOB, MINE] {
            users::ensure_user(user, Some(PASSWORD));
        }
        users::pam_service(PAM_SERVICE, "agent_guard");
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
