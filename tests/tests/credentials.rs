//! Running as other users: real users, real PAM, real agents. These tests create users and a
//! PAM service file, so they need root (CI has it); without root they fail, loudly.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rjob_tests::{ran, users, Daemon, Fleet};

const ALICE: &str = "rjobt_alice";
const BOB: &str = "rjobt_bob";
const GROUP: &str = "rjobt_grp";
const PASSWORD: &str = "Tr0ub4dor-&-3-rjob-secret";
const PAM_SERVICE: &str = "rjob-test";

/// Creates the test users (once per test binary) and the PAM service file.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        users::require_root("the credential tests create users");
        users::sh(&format!("getent group {GROUP} >/dev/null || groupadd {GROUP}"));
        for user in [ALICE, BOB] {
            users::ensure_user(user, Some(PASSWORD));
        }
        users::sh(&format!("usermod -a -G {GROUP} {ALICE}"));
        users::pam_service(PAM_SERVICE, "credentials");
    });
}

fn fleet_with(n: usize, policy: &str) -> Fleet {
    setup();
    Fleet::start_policy(n, policy, |cmd| {
        cmd.args(["--pam-service", PAM_SERVICE]);
    })
    .expect("fleet")
}

fn password_file(fleet: &Fleet, password: &str) -> String {
    let path = fleet.scratch().join("password");
    std::fs::write(&path, format!("{password}\n")).expect("password file");
    path.display().to_string()
}

fn uid_of(user: &str) -> String {
    ran(Command::new("id").args(["-u", user]))
        .stdout
        .trim()
        .to_string()
}

#[test]
fn runs_as_the_requested_user_with_its_groups_on_three_agents() {
    let fleet = fleet_with(
        3,
        &format!("[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"{ALICE}\"]\n"),
    );
    let script = "id -un; id -Gn; grep -E '^(Uid|Gid):' /proc/self/status | tr -s '\\t ' ' '; \
                  echo \"home=$HOME user=$USER pwd=$(pwd)\"; touch created; stat -c %U created";
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--user",
        ALICE,
        "--script",
        script,
    ]));
    assert_eq!(out.code, 0, "{out}");
    let uid = uid_of(ALICE);
    for agent in &fleet.agents {
        let lines = out.lines_of(&agent.host());
        assert_eq!(lines.first().map(String::as_str), Some(ALICE), "{out}");
        assert!(
            lines[1].split_whitespace().any(|g| g == GROUP),
            "groups: {}",
            lines[1]
        );
        assert!(
            !lines[1].split_whitespace().any(|g| g == "root"),
            "root's groups kept: {}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            format!("Uid: {uid} {uid} {uid} {uid}"),
            "real, effective, saved ids: {out}"
        );
        assert!(
            lines[4].contains(&format!("home=/home/{ALICE} user={ALICE} pwd=/home/{ALICE}")),
            "{out}"
        );
        assert_eq!(
            lines[5], ALICE,
            "a file created by the run belongs to the target user"
        );
        // The audit trail: who ran what as whom, and how it ended.
        let log = agent.log_text();
        for needle in [
            "run started",
            "run ended",
            "client=rjob-controller",
            &format!("run_as={ALICE}"),
            "script_sha256=",
        ] {
            assert!(
                log.contains(needle),
                "{needle:?} missing from the agent's audit log:\n{log}"
            );
        }
    }
}

#[test]
fn a_wrong_password_and_an_unknown_user_fail_the_same_way_run_nothing_and_get_slower() {
    let fleet = fleet_with(
        1,
        "[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"*\"]\npassword = true\n",
    );
    let marker = fleet.scratch().join("ran");
    let script = format!("touch {}", marker.display());
    let host = fleet.hosts();
    let good = password_file(&fleet, PASSWORD);
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &host,
        "--user",
        ALICE,
        "--password-file",
        &good,
        "--script",
        "id -un",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of(&host), [ALICE]);

    let bad = fleet.scratch().join("bad");
    std::fs::write(&bad, "not-the-password\n").expect("bad password file");
    let bad = bad.display().to_string();
    let attempt = |user: &str| {
        let began = Instant::now();
        let out = ran(fleet.rjob().args([
            "invoke",
            "-H",
            &host,
            "--user",
            user,
            "--password-file",
            &bad,
            "--script",
            &script,
        ]));
        (began.elapsed(), out)
    };
    let (_, wrong) = attempt(ALICE);
    let (_, unknown) = attempt("rjobt_nosuchuser");
    assert_eq!(wrong.code, 1, "{wrong}");
    assert!(
        wrong
            .stderr
            .contains(&format!("authentication failed for {ALICE} on ")),
        "{wrong}"
    );
    let normalise = |s: &str, user: &str| {
        s.replace(user, "USER")
            .lines()
            .filter(|l| l.contains("authentication"))
            .collect::<String>()
    };
    let (w, u) = (
        normalise(&wrong.stderr, ALICE),
        normalise(&unknown.stderr, "rjobt_nosuchuser"),
    );
    let strip_time = |s: &str| s.split(" in ").next().unwrap_or_default().to_string();
    assert_eq!(
        strip_time(&w),
        strip_time(&u),
        "the two failures must look the same"
    );
    assert!(!marker.exists(), "a script ran without a valid password");

    // ALICE's failures 2, 3, 4, 5 in a row (the unknown user's is counted apart: failures
    // count per client and target user) are answered later and later.
    let mut took = Vec::new();
    for _ in 0..4 {
        let (elapsed, out) = attempt(ALICE);
        assert_eq!(out.code, 1, "{out}");
        took.push(elapsed);
    }
    eprintln!("failures 2..5 took {took:?}");
    assert!(
        took[3] >= Duration::from_millis(1500),
        "the fifth failure in a row was not slowed down: {took:?}"
    );
    assert!(took[3] > took[0], "{took:?}");
    assert!(!marker.exists());
}

#[test]
fn root_needs_a_rule_that_names_it_and_unknown_identities_are_refused() {
    let fleet = fleet_with(
        1,
        &format!("[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"*\"]\ngroups = [\"root\"]\ndefault = \"{ALICE}\"\n"),
    );
    let host = fleet.hosts();
    let out = ran(fleet.rjob().args(["invoke", "-H", &host, "--script", "id -un"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of(&host), [ALICE], "the policy's default user");
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &host, "--user", "root", "--script", "id -un"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("may not run as root"), "{out}");
    assert!(out.stdout.is_empty(), "{out}");

    let stranger = fleet_with(1, "[[allow]]\nidentity = \"someone-else\"\nusers = [\"root\"]\n");
    let out = ran(stranger
        .rjob()
        .args(["invoke", "-H", &stranger.hosts(), "--script", "id -un"]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("is not in this agent's policy"), "{out}");
}

#[test]
fn the_password_appears_nowhere() {
    let fleet = fleet_with(
        2,
        "[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"*\"]\npassword = true\n",
    );
    let daemon = Daemon::start(&fleet).expect("daemon");
    let good = password_file(&fleet, PASSWORD);
    // While the runs go on, no process shows the password in its environment or command line.
    let out = daemon.invoke_job(
        &fleet.hosts(),
        "secret",
        "sleep 2; id -un",
        &["--user", ALICE, "--password-file", &good],
    );
    assert_eq!(out.code, 0, "{out}");
    let local = ran(daemon.rjob().args([
        "start",
        "--name",
        "secret-local",
        "--user",
        BOB,
        "--password-file",
        &good,
        "--script",
        "sleep 2; id -un",
    ]));
    assert_eq!(local.code, 0, "{local}");
    assert!(daemon.wait_state("secret", "Running"));
    std::thread::sleep(Duration::from_millis(500));
    let mut scanned = 0;
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        for file in ["environ", "cmdline"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                scanned += 1;
                assert!(
                    !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                    "the password is in {}/{file}",
                    entry.path().display()
                );
            }
        }
    }
    assert!(scanned > 10);
    assert_eq!(
        ran(daemon.rjob().args(["wait", "secret", "secret-local"])).code,
        0
    );
    let received = ran(daemon.rjob().args(["receive", "secret"]));
    assert_eq!(
        received
            .stdout
            .lines()
            .filter(|l| l.ends_with(&format!(": {ALICE}")))
            .count(),
        2,
        "{received}"
    );
    let received = ran(daemon.rjob().args(["receive", "secret-local"]));
    assert_eq!(
        received.stdout.trim(),
        format!("localhost: {BOB}"),
        "rjob start --user: {received}"
    );

    // Nor in any log or in the job store (its WAL included).
    let mut files = vec![daemon.state_dir.join("test-daemon.log")];
    files.extend(fleet.agents.iter().map(|a| a.log.clone()));
    for entry in std::fs::read_dir(&daemon.state_dir).expect("state dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("jobs.db") {
            files.push(entry.path());
        }
    }
    assert!(files.iter().any(|f| f.ends_with("jobs.db")));
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
            "the password is in {}",
            file.display()
        );
    }
}

#[test]
fn local_jobs_run_as_another_user_only_with_its_password() {
    let fleet = fleet_with(0, "");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let bad = password_file(&fleet, "wrong");
    let out = ran(daemon.rjob().args([
        "start",
        "--name",
        "as-alice",
        "--user",
        ALICE,
        "--password-file",
        &bad,
        "--script",
        "id -un",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran(daemon.rjob().args(["wait", "as-alice"])).code, 1);
    let job = daemon.job("as-alice");
    assert_eq!(job["state"], "Failed");
    let reason = job["children"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains(&format!("authentication failed for {ALICE}")),
        "{job}"
    );
    let out = ran(daemon.rjob().args([
        "start",
        "--name",
        "no-password",
        "--user",
        ALICE,
        "--script",
        "id -un",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran(daemon.rjob().args(["wait", "no-password"])).code, 1);
    let reason = daemon.job("no-password")["children"][0]["reason"].to_string();
    assert!(reason.contains("needs a password"), "{reason}");
}

/// `rjob rerun --ask-password` names the user the password is for, at a real terminal.
#[test]
fn a_rerun_asks_for_the_password_of_the_user_by_name() {
    let fleet = fleet_with(0, "");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let bad = password_file(&fleet, "wrong");
    let out = ran(daemon.rjob().args([
        "start",
        "--name",
        "alice-once",
        "--user",
        ALICE,
        "--password-file",
        &bad,
        "--script",
        "id -un",
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran(daemon.rjob().args(["wait", "alice-once"])).code, 1);
    // `script` gives the rerun a terminal; the password is typed once it asks.
    let rjob = daemon.rjob();
    let line = format!(
        "{} rerun alice-once --all --job-name alice-again --ask-password",
        rjob.get_program().to_string_lossy()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("(sleep 2; printf '%s\\n' \"$PW\") | script -qec \"$LINE\" /dev/null")
        .env("PW", PASSWORD)
        .env("LINE", &line);
    for (k, v) in rjob.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = ran(&mut cmd);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!("password for {ALICE}: ")),
        "the prompt names the user: {out}"
    );
    assert_eq!(ran(daemon.rjob().args(["wait", "alice-again"])).code, 0);
    let got = ran(daemon.rjob().args(["receive", "alice-again"]));
    assert!(got.stdout.contains(ALICE), "{got}");
}
