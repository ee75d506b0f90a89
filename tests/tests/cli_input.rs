//! What the CLI accepts: bad input is a one-line error with exit status 2, found before any
//! file is read past its limit, any memory is spent on it, or anything is contacted; what it
//! shows on a terminal never carries a remote peer's control characters raw.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use rjob_tests::{bin, ran, Daemon, Fleet, Pki, Ran};

/// Address space the CLI gets for a bad input: far below the gigabytes the unchecked reads
/// and expansions took, well above what a normal run needs (under 100 MiB).
const ADDRESS_SPACE: u64 = 256 << 20;

/// `rjob ARGS…` under `prlimit --as`, with an identity and a state dir of its own.
fn rjob_bounded(pki: &Path, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={ADDRESS_SPACE}"))
        .arg("--")
        .arg(bin("rjob"))
        .args(args)
        .env("RJOB_IDENTITY", pki)
        .env("RJOB_STATE_DIR", state)
        .stdin(Stdio::null());
    cmd
}

/// Exit status 2 and exactly one line on stderr, `rjob: error: …` naming the problem.
fn assert_usage_error(what: &str, out: &Ran, naming: &str) {
    assert_eq!(out.code, 2, "{what}: {out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line on stderr: {out}");
    assert!(lines[0].starts_with("rjob: error: "), "{what}: {out}");
    assert!(lines[0].contains(naming), "{what}: should name {naming:?}: {out}");
    assert!(lines[0].len() < 400, "{what}: a short line: {out}");
}

#[test]
fn bad_input_is_one_line_exit_2_in_bounded_memory_before_anything_is_contacted() {
    let tmp = tempfile::Builder::new()
        .prefix("rjob-test-cli-")
        .tempdir()
        .expect("tempdir");
    let pki = Pki::init(&tmp.path().join("pki")).expect("pki");
    let state = tmp.path().join("state");
    // A listener the CLI would dial: nothing may connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let host = listener.local_addr().expect("addr").to_string();
    let h = host.as_str();

    let wide = format!("a{}", "[1-99999]".repeat(340)); // 3 KB; once 1.65 GB
    let many = "x[1-99999]y[1-99999]z".to_string();
    let segments = format!("a{}", "[1]".repeat(12_000)); // once exit 134
    let long_name = "j".repeat(300);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["invoke", "-H", h, "--file", "/dev/zero"],
            "larger than 1 MiB",
        ),
        (
            vec!["invoke", "-H", h, "-s", "true", "--stdin-file", "/dev/zero"],
            "larger than 4 MiB",
        ),
        (
            vec!["invoke", "--hosts-file", "/dev/zero", "-s", "true"],
            "larger than 8 MiB",
        ),
        (
            vec![
                "invoke",
                "-H",
                h,
                "-s",
                "true",
                "--user",
                "nobody",
                "--password-file",
                "/dev/zero",
            ],
            "longer than 4096 bytes",
        ),
        (vec!["start", "--file", "/dev/zero"], "larger than 1 MiB"),
        (
            vec![
                "invoke",
                "-H",
                h,
                "--as-job",
                "-s",
                "true",
                "--stdin-file",
                "/dev/zero",
            ],
            "larger than 4 MiB",
        ),
        (
            vec!["invoke", "-H", &wide, "-s", "true"],
            "a host name has at most 253",
        ),
        (vec!["invoke", "-H", &many, "-s", "true"], "too many hosts"),
        (vec!["invoke", "-H", &segments, "-s", "true"], "12001 characters"),
        (
            vec!["invoke", "-H", h, "-s", "true", "-e", "A B=1"],
            "environment variable name \"A B\"",
        ),
        (
            vec!["invoke", "-H", h, "-s", "true", "--cwd", "../etc"],
            "absolute path",
        ),
        (
            vec!["invoke", "-H", h, "-s", "true", "--timeout", "1000years"],
            "longer than agents allow",
        ),
        (
            vec![
                "invoke",
                "-H",
                h,
                "-s",
                "true",
                "--timeout",
                "99999999999999999999999years",
            ],
            "--timeout",
        ),
        (
            vec!["invoke", "-H", "web_01!", "-s", "true"],
            "bad host name in web_01!",
        ),
        (
            vec!["invoke", "-H", h, "-s", "true", "--user", ""],
            "--user needs a user name",
        ),
        (vec!["invoke", "-H", "a,,b", "-s", "true"], "empty item"),
        (
            vec!["invoke", "-H", h, "-s", "true", "--connect-timeout", "0s"],
            "--connect-timeout",
        ),
        // `rjob start` and `invoke --as-job` share the checks, and job names are checked.
        (
            vec!["start", "-s", "true", "-e", "A B=1"],
            "environment variable name",
        ),
        (vec!["start", "-s", "true", "--cwd", "rel/dir"], "absolute path"),
        (
            vec!["start", "-s", "true", "--user", ""],
            "--user needs a user name",
        ),
        (vec!["start", "-s", "true", "--name", "1"], "is a number"),
        (vec!["start", "-s", "true", "--name", &long_name], "at most 256"),
        (
            vec!["invoke", "-H", h, "-s", "true", "--as-job", "--job-name", "007"],
            "is a number",
        ),
        (
            vec!["invoke", "-H", h, "-s", "true", "--as-job", "--timeout", "8d"],
            "longer than agents allow",
        ),
        (
            vec![
                "invoke",
                "-H",
                h,
                "-s",
                "true",
                "--as-job",
                "--connect-timeout",
                "0s",
            ],
            "--connect-timeout",
        ),
        (
            vec![
                "invoke",
                "-H",
                h,
                "-s",
                "true",
                "--as-job",
                "--job-name",
                "a\u{1b}]0;x\u{7}",
            ],
            "control characters",
        ),
    ];
    for (args, naming) in &cases {
        let out = ran(&mut rjob_bounded(&pki.dir, &state, args));
        assert_usage_error(&format!("{args:.200?}"), &out, naming);
    }

    // The password from standard input, /dev/zero behind it.
    let zero = File::open("/dev/zero").expect("/dev/zero");
    let out = ran(rjob_bounded(
        &pki.dir,
        &state,
        &[
            "invoke",
            "-H",
            h,
            "-s",
            "true",
            "--user",
            "nobody",
            "--password-stdin",
        ],
    )
    .stdin(Stdio::from(zero)));
    assert_usage_error("--password-stdin < /dev/zero", &out, "longer than 4096 bytes");

    assert!(
        listener
            .accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused command line must not dial any host"
    );
    assert!(
        !state.join("rjob.sock").exists() && !state.join("daemon.log").exists(),
        "a refused command line must not start a daemon"
    );
}

#[test]
fn a_cause_already_in_the_message_is_not_printed_twice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("no-ca-here");
    for args in [
        vec!["pki".to_string(), "init".into(), "/proc/rjl-nope/x".into()],
        vec![
            "pki".into(),
            "issue-agent".into(),
            "web1".into(),
            "--san".into(),
            "web1".into(),
            "--ca-dir".into(),
            ca.display().to_string(),
        ],
    ] {
        let out = ran(Command::new(bin("rjob")).args(&args).stdin(Stdio::null()));
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert_eq!(out.stderr.matches("(os error").count(), 1, "{args:?}: {out}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {out}");
    }
}

/// Output that tries to retitle the window, clear the screen and forge another host's line.
const EVIL: &str = r#"printf '\033]0;pwned\007title\n'
printf 'ok\r127.0.0.9: spoofed\n'
printf '\033[2Jtab\there\n'
"#;

/// Single-quoted for `sh -c`.
fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `rjob ARGS…` with its stdout and stderr on a pseudo-terminal (`script` from
/// util-linux) and returns what the terminal received.
fn on_a_terminal(env: &[(&str, &Path)], args: &[&str]) -> (i32, Vec<u8>) {
    let mut line = sh_quote(&bin("rjob").display().to_string());
    for arg in args {
        line.push(' ');
        line.push_str(&sh_quote(arg));
    }
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]).stdin(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run script (util-linux) for a pseudo-terminal: {e}"));
    (out.status.code().unwrap_or(-1), out.stdout)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_escaped(what: &str, terminal: &[u8]) {
    let shown = String::from_utf8_lossy(terminal);
    assert!(contains(terminal, br"\e]0;pwned\x07title"), "{what}: {shown:?}");
    assert!(
        contains(terminal, br"ok\r127.0.0.9: spoofed"),
        "{what}: {shown:?}"
    );
    assert!(
        contains(terminal, b"\\e[2Jtab\there"),
        "{what}: tab kept: {shown:?}"
    );
    assert!(!contains(terminal, b"\x1b]0;pwned"), "{what}: {shown:?}");
    assert!(!contains(terminal, b"\x1b[2J"), "{what}: {shown:?}");
    assert!(!contains(terminal, b"ok\r127"), "{what}: {shown:?}");
}

fn assert_raw(what: &str, out: &[u8]) {
    let shown = String::from_utf8_lossy(out);
    assert!(contains(out, b"\x1b]0;pwned\x07title"), "{what}: {shown:?}");
    assert!(contains(out, b"ok\r127.0.0.9: spoofed"), "{what}: {shown:?}");
    assert!(contains(out, b"\x1b[2Jtab\there"), "{what}: {shown:?}");
}

#[test]
fn control_characters_from_a_host_are_visible_on_a_terminal_raw_with_raw_or_piped() {
    let fleet = Fleet::start(1).expect("fleet");
    let host = fleet.agents[0].host();
    let script = fleet.scratch().join("evil.sh");
    std::fs::write(&script, EVIL).expect("write script");
    let script = script.display().to_string();
    let identity: &[(&str, &Path)] = &[("RJOB_IDENTITY", &fleet.pki.dir)];

    let (code, terminal) = on_a_terminal(identity, &["invoke", "-H", &host, "--file", &script]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&terminal));
    assert_escaped("invoke on a terminal", &terminal);

    let (code, terminal) = on_a_terminal(identity, &["invoke", "-H", &host, "--file", &script, "--raw"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&terminal));
    assert_raw("invoke --raw on a terminal", &terminal);

    let piped = fleet
        .rjob()
        .args(["invoke", "-H", &host, "--file", &script])
        .output()
        .expect("rjob invoke");
    assert_eq!(piped.status.code(), Some(0));
    assert_raw("invoke piped", &piped.stdout);

    // The same for a background job's output.
    let daemon = Daemon::start(&fleet).expect("daemon");
    let made = ran(daemon.rjob().args([
        "invoke",
        "-H",
        &host,
        "--as-job",
        "--job-name",
        "evil-file",
        "--file",
        &script,
    ]));
    assert_eq!(made.code, 0, "{made}");
    assert!(
        daemon.wait_state("evil-file", "Completed"),
        "{}",
        daemon.log_text()
    );
    let env: &[(&str, &Path)] = &[
        ("RJOB_IDENTITY", &fleet.pki.dir),
        ("RJOB_STATE_DIR", &daemon.state_dir),
    ];
    let (code, terminal) = on_a_terminal(env, &["receive", "evil-file", "--keep"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&terminal));
    assert_escaped("receive on a terminal", &terminal);
    let (code, terminal) = on_a_terminal(env, &["receive", "evil-file", "--keep", "--raw"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&terminal));
    assert_raw("receive --raw on a terminal", &terminal);
    let piped = daemon
        .rjob()
        .args(["receive", "evil-file"])
        .output()
        .expect("rjob receive");
    assert_eq!(piped.status.code(), Some(0));
    assert_raw("receive piped", &piped.stdout);
}

#[test]
fn the_daemon_refuses_what_the_cli_refuses_from_any_client_of_its_socket() {
    use rjob_proto::v1 as pb;
    let fleet = Fleet::start(0).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let request = |name: &str, host: &str| pb::CreateJobRequest {
        name: name.to_string(),
        hosts: vec![pb::HostAddr {
            name: host.to_string(),
            port: 7443,
        }],
        run: Some(pb::StartRunRequest {
            script: "true".into(),
            ..Default::default()
        }),
        throttle_limit: 1,
        connect_timeout_ms: 1000,
        command: "true".into(),
        max_errors: None,
        session: String::new(),
    };
    let long_host = "h".repeat(70_000);
    let long_name = "n".repeat(70_000);
    let cases = [
        (request("1", "127.0.0.1"), "is a number"),
        (request(&long_name, "127.0.0.1"), "at most 256"),
        (request("x", &long_host), "at most 253"),
        (request("x", "a\u{1b}]0;pwned\u{7}"), "bad host name"),
    ];
    runtime.block_on(async {
        let mut client = rjob_tests::raw::daemon_client(&daemon).await;
        for (request, naming) in cases {
            let status = match client.create_job(request).await {
                Ok(job) => panic!("should be refused: got job {:?}", job.into_inner().id),
                Err(status) => status,
            };
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(naming), "{naming}: {status:?}");
        }
    });
    let out = ran(daemon.rjob().args(["jobs", "--children"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.lines().count(), 1, "no job was made: {out}");
}
