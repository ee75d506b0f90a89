//! Issue 11, reviewed as a hostile peer and a careless operator would: what the merged points
//! missed between them. Real daemon, real agents, real pipes. A full disk and a password
//! guesser: `trust_review_system.rs`.

use std::process::Command;

use rjob_tests::{ran, Daemon, Fleet, Ran};

/// Runs `cmd` with its stdout a pipe whose reader has already gone (as under `head` that
/// has read what it wanted).
fn into_closed_pipe(cmd: &mut Command) -> Ran {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    ran(cmd.stdout(writer))
}

fn assert_quiet_pipe_close(what: &str, out: &Ran) {
    assert_eq!(out.code, 141, "{what}: a closed stdout ends it with 141\n{out}");
    assert!(
        !out.stderr.contains("panicked"),
        "{what} panicked on a closed stdout\n{out}"
    );
}

#[test]
fn job_commands_end_quietly_when_their_reader_goes_away_and_still_do_their_work() {
    let fleet = Fleet::start(0).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    for name in ["slow-a", "slow-b"] {
        let out = into_closed_pipe(
            daemon
                .rjob()
                .args(["start", "--name", name, "--script", "sleep 60"]),
        );
        assert_quiet_pipe_close("rjob start", &out);
    }
    assert!(daemon.wait_state("slow-a", "Running"), "{}", daemon.job("slow-a"));
    assert!(daemon.wait_state("slow-b", "Running"), "{}", daemon.job("slow-b"));
    assert_quiet_pipe_close("rjob jobs", &into_closed_pipe(daemon.rjob().arg("jobs")));
    assert_quiet_pipe_close(
        "rjob jobs -o json",
        &into_closed_pipe(daemon.rjob().args(["jobs", "-o", "json"])),
    );
    assert_quiet_pipe_close(
        "rjob wait --timeout",
        &into_closed_pipe(daemon.rjob().args(["wait", "slow-a", "--timeout", "10ms"])),
    );
    // Both jobs are stopped, though the first line already found the pipe closed.
    assert_quiet_pipe_close(
        "rjob stop",
        &into_closed_pipe(daemon.rjob().args(["stop", "slow-a", "slow-b"])),
    );
    assert!(daemon.wait_state("slow-a", "Stopped"), "{}", daemon.job("slow-a"));
    assert!(daemon.wait_state("slow-b", "Stopped"), "{}", daemon.job("slow-b"));
    assert_quiet_pipe_close(
        "rjob remove",
        &into_closed_pipe(daemon.rjob().args(["remove", "slow-a", "slow-b"])),
    );
    let left = ran(daemon.rjob().args(["jobs", "-o", "json"]));
    assert_eq!(left.stdout.trim(), "[]", "both jobs removed\n{left}");
}

mod hostile {
    //! Requests `rjob` never sends, from a raw gRPC client with the controller's identity.

    use std::path::Path;

    use rjob_proto::v1 as pb;
    use rjob_proto::v1::agent_client::AgentClient;
    use rjob_tests::{Agent, Fleet};
    use tonic::transport::Channel;
    use tonic::Code;

    pub async fn client(agent: &Agent, dir: &Path) -> AgentClient<Channel> {
        rjob_tests::raw::agent_client(agent, dir).await
    }

    pub fn request(script: &str) -> pb::StartRunRequest {
        pb::StartRunRequest {
            script: script.into(),
            ..Default::default()
        }
    }

    /// Each request is refused with a one-line INVALID_ARGUMENT (never INTERNAL), and the
    /// agent still runs a good request afterwards.
    pub fn refused_as_invalid(fleet: &Fleet, cases: Vec<(&str, pb::StartRunRequest)>) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let mut c = client(&fleet.agents[0], &fleet.pki.dir).await;
            for (what, req) in cases {
                let got = c.start_run(req).await;
                let status = match got {
                    Ok(r) => panic!("{what}: accepted (run {})", r.into_inner().run_id),
                    Err(s) => s,
                };
                assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
                let m = status.message();
                assert!(!m.contains('\n') && m.len() < 400, "{what}: not one line: {m:?}");
            }
            let ok = c.start_run(request("echo fine")).await;
            assert!(ok.is_ok(), "the agent no longer runs a good request: {ok:?}");
        });
    }
}

#[test]
fn arguments_the_system_cannot_pass_are_invalid_argument_not_internal() {
    let fleet = Fleet::start(1).expect("fleet");
    let big = "x".repeat(120 * 1024);
    let mut many = hostile::request("echo $#");
    many.args = vec![big.clone(); 25];
    let mut env_and_args = hostile::request("true");
    env_and_args.args = vec![big.clone(); 16];
    env_and_args.env = (0..2)
        .map(|i| (format!("V{i}"), big[..100 * 1024].to_string()))
        .collect();
    hostile::refused_as_invalid(
        &fleet,
        vec![
            ("25 arguments of 120 KiB", many),
            ("16 arguments of 120 KiB and 2 variables of 100 KiB", env_and_args),
        ],
    );
}

#[test]
fn malformed_fields_of_a_start_request_are_refused_one_line_and_the_agent_keeps_serving() {
    let fleet = Fleet::start_with(1, |c| {
        c.args(["--containment", "subreaper"]);
    })
    .expect("fleet");
    let with = |f: &dyn Fn(&mut rjob_proto::v1::StartRunRequest)| {
        let mut r = hostile::request("true");
        f(&mut r);
        r
    };
    let big = "x".repeat(120 * 1024);
    hostile::refused_as_invalid(
        &fleet,
        vec![
            (
                "arguments past the system's limit (posix_spawn)",
                with(&|r| r.args = vec![big.clone(); 25]),
            ),
            (
                "a NUL in the working directory",
                with(&|r| r.working_dir = "/tmp\0x".into()),
            ),
            (
                "a relative working directory",
                with(&|r| r.working_dir = "../etc".into()),
            ),
            ("a NUL in run_as", with(&|r| r.run_as = "root\0".into())),
            (
                "a NUL in an env value",
                with(&|r| {
                    r.env.insert("A".into(), "b\0c".into());
                }),
            ),
            (
                "'=' in an env name",
                with(&|r| {
                    r.env.insert("A=B".into(), "c".into());
                }),
            ),
            (
                "an empty env name",
                with(&|r| {
                    r.env.insert(String::new(), "c".into());
                }),
            ),
            (
                "a NUL in the script",
                with(&|r| r.script = "true\0rm -rf /".into()),
            ),
            (
                "a 1 MiB interpreter name",
                with(&|r| r.interpreter = "x".repeat(1 << 20)),
            ),
            ("a 1 MiB label", with(&|r| r.label = "x".repeat(1 << 20))),
            ("a timeout past max_timeout", with(&|r| r.timeout_ms = u64::MAX)),
        ],
    );
}

#[test]
fn a_refused_name_is_shown_escaped_once_not_twice() {
    let fleet = Fleet::start(0).expect("fleet");
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "invoke",
                "-H",
                "h1",
                "--as-job",
                "--job-name",
                "ev\u{1b}]0;x\u{7}il",
                "-s",
                "true",
            ],
            r#"job name "ev\e]0;x\x07il" holds control characters"#,
        ),
        (
            &["invoke", "-H", "h1", "-e", "A\u{1b}B=1", "-s", "true"],
            r#"environment variable name "A\eB" is invalid"#,
        ),
        (
            &["invoke", "-H", "h1", "--cwd", "a\u{1b}", "-s", "true"],
            r#"--cwd "a\e" must be an absolute path"#,
        ),
    ];
    for (args, expected) in cases {
        let out = ran(fleet.rjob().args(args));
        assert_eq!(out.code, 2, "{out}");
        assert_eq!(out.stderr.lines().count(), 1, "{out}");
        assert!(out.stderr.contains(expected), "{expected:?} not in\n{out}");
    }
}

#[test]
fn a_receive_of_a_running_job_never_splits_the_line_still_being_written() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let go = fleet.scratch().join("go");
    let script = format!(
        "echo one; printf start-; printf err- >&2; while [ ! -e {} ]; do sleep 0.02; done; echo end; echo two; echo e2 >&2",
        go.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "partial", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    let host = fleet.hosts();
    // Wait until both unfinished lines are in the store.
    let stored = rjob_tests::wait_for(rjob_tests::WAIT, || {
        let kept = ran(daemon.rjob().args(["receive", "partial", "--keep"]));
        kept.stdout.contains("start-") && kept.stdout.contains("err-")
    });
    assert!(stored, "the unfinished lines never reached the store");
    let first = ran(daemon.rjob().args(["receive", "partial"]));
    assert_eq!(first.code, 0, "{first}");
    assert_eq!(
        first.stdout,
        format!("{host}: one\n"),
        "only whole lines\n{first}"
    );
    std::fs::write(&go, b"").expect("go");
    assert!(
        daemon.wait_state("partial", "Completed"),
        "{}",
        daemon.job("partial")
    );
    let second = ran(daemon.rjob().args(["receive", "partial"]));
    assert_eq!(second.code, 0, "{second}");
    let mut lines: Vec<&str> = second.stdout.lines().collect();
    lines.sort_unstable();
    let stderr_line = format!("{host} [stderr]: err-e2");
    let mut expected = vec![format!("{host}: start-end"), format!("{host}: two"), stderr_line];
    expected.sort_unstable();
    assert_eq!(lines, expected, "the held lines whole, once\n{second}");
    let third = ran(daemon.rjob().args(["receive", "partial"]));
    assert_eq!(third.stdout, "", "nothing twice\n{third}");
}

#[test]
fn output_dir_force_never_writes_through_a_planted_symlink_and_keeps_files_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let fleet = Fleet::start(1).expect("fleet");
    let host = fleet.hosts();
    let dir = fleet.scratch().join("out");
    std::fs::create_dir_all(&dir).expect("dir");
    let victim = fleet.scratch().join("victim");
    std::fs::write(&victim, b"precious\n").expect("victim");
    let stem = host.replace(':', "%3A");
    std::os::unix::fs::symlink(&victim, dir.join(format!("{stem}.out"))).expect("plant");
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host, "--script", "echo owned"])
        .arg("--output-dir")
        .arg(&dir)
        .arg("--force"));
    assert_eq!(
        std::fs::read(&victim).expect("victim"),
        b"precious\n",
        "written through the symlink\n{out}"
    );
    assert_eq!(out.code, 1, "a file it cannot write fails the run\n{out}");
    assert!(out.stderr.contains("--output-dir"), "{out}");
    // A clean directory: the files are written, readable by their owner only.
    let clean = fleet.scratch().join("clean");
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host, "--script", "echo fine"])
        .arg("--output-dir")
        .arg(&clean));
    assert_eq!(out.code, 0, "{out}");
    let file = clean.join(format!("{stem}.out"));
    assert_eq!(std::fs::read_to_string(&file).expect("out file"), "fine\n");
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
}
