//! Nothing of a run outlives it (issue 11, point 6), under both mechanisms: each run in a
//! cgroup v2 of its own (killed with `cgroup.kill`), or the agent as a child subreaper. The
//! agent's spool dir and run records cannot be planted (point 13), and the spool has a total
//! quota (point 12).
//!
//! Processes are found by a unique marker in their command line (`exec -a MARKER sleep`),
//! written in the scripts so that the script text itself never holds the marker whole (the
//! `rjob` command line carries the script).
//!
//! These tests run as root on a machine with cgroup2 mounted: the cgroup tests force
//! `--containment cgroup`, so an agent that cannot have cgroups refuses to start and the test
//! fails with its reason; nothing is skipped.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use rjob_tests::{bin, process_alive, ran, wait_for, Daemon, Fleet, WAIT};

const CGROUP: &str = "cgroup";
const SUBREAPER: &str = "subreaper";

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}{}x{nanos}", std::process::id())
}

/// Pids of live processes whose command line holds `marker`.
fn marked(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                && process_alive(*pid)
        })
        .collect()
}

/// A script that leaves three processes outside its process group or parentage, each with
/// `marker` in its command line: a `setsid` child, a double-forked grandchild, and a
/// double-forked `setsid` one. Then it runs `tail`.
fn escaping_script(marker: &str, tail: &str) -> String {
    let (head, rest) = marker.split_at(3);
    format!(
        "m=\"{head}\"'{rest}'\n\
         setsid bash -c 'exec -a \"$0\" sleep 1000' \"$m-setsid\" &\n\
         ( ( exec -a \"$m-double\" sleep 1000 ) & )\n\
         ( setsid bash -c 'exec -a \"$0\" sleep 1000' \"$m-both\" & )\n\
         echo started\n\
         {tail}\n"
    )
}

fn fleet(mode: &str) -> Fleet {
    let fleet = Fleet::start_with(1, |cmd| {
        cmd.args(["--containment", mode]);
    })
    .expect("an agent with this containment (cgroup needs root and cgroup2 mounted)");
    let log = fleet.agents[0].log_text();
    let expected = if mode == CGROUP {
        "containment: cgroup v2"
    } else {
        "containment: child subreaper"
    };
    assert!(log.contains(expected), "the agent logs its mechanism: {log}");
    fleet
}

/// Under the cgroup mechanism, every marked process is in a run's cgroup.
fn assert_in_run_cgroups(mode: &str, marker: &str) {
    if mode != CGROUP {
        return;
    }
    for pid in marked(marker) {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let v2 = cgroup.lines().find(|l| l.starts_with("0::")).unwrap_or_default();
        assert!(
            v2.contains("/rjob-runs/"),
            "{pid} is in its run's cgroup: {cgroup}"
        );
    }
}

fn all_three_running(marker: &str) -> bool {
    wait_for(WAIT, || marked(marker).len() >= 3)
}

fn none_left(marker: &str) -> bool {
    wait_for(WAIT, || marked(marker).is_empty())
}

fn spawn_invoke(fleet: &Fleet, script: &str, extra: &[&str]) -> Child {
    fleet
        .rjob()
        .args([
            "invoke",
            "-H",
            &fleet.hosts(),
            "--shell",
            "bash",
            "--script",
            script,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rjob invoke")
}

fn finish(child: Child) -> rjob_tests::Ran {
    rjob_tests::Ran::of(child.wait_with_output().expect("rjob invoke output"))
}

// --- a timeout -------------------------------------------------------------------------

fn timeout_kills_everything(mode: &str) {
    let fleet = fleet(mode);
    let marker = unique("rjc-timeout-");
    let invoke = spawn_invoke(
        &fleet,
        &escaping_script(&marker, "sleep 1000"),
        &["--timeout", "3s"],
    );
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    let out = finish(invoke);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("timed out"), "{out}");
    assert!(none_left(&marker), "survived the timeout: {:?}", marked(&marker));
}

#[test]
fn cgroup_a_timeout_kills_setsid_and_double_forked_processes() {
    timeout_kills_everything(CGROUP);
}

#[test]
fn subreaper_a_timeout_kills_setsid_and_double_forked_processes() {
    timeout_kills_everything(SUBREAPER);
}

/// The user runs switch to (created once; prefix `rjc`).
const RUN_USER: &str = "rjcrun";

fn run_user_fleet(mode: &str) -> Fleet {
    assert!(
        nix::unistd::geteuid().is_root(),
        "runs as another user need a root agent: run these tests as root (CI does)"
    );
    static USER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    USER.get_or_init(|| {
        let out = ran(Command::new("sh").args([
            "-c",
            &format!("id {RUN_USER} >/dev/null 2>&1 || useradd -m -s /bin/sh {RUN_USER}"),
        ]));
        assert_eq!(out.code, 0, "{out}");
    });
    let policy = format!(
        "[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"{RUN_USER}\"]\ndefault = \"{RUN_USER}\"\n"
    );
    Fleet::start_policy(1, &policy, |cmd| {
        cmd.args(["--containment", mode]);
    })
    .expect("an agent with this containment")
}

/// A run as another user moves into its cgroup before it drops root's privileges.
fn another_users_timeout_kills_everything(mode: &str) {
    let fleet = run_user_fleet(mode);
    let marker = unique("rjc-user-");
    let invoke = spawn_invoke(
        &fleet,
        &escaping_script(&marker, "sleep 1000"),
        &["--user", RUN_USER, "--timeout", "3s"],
    );
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    assert_in_run_cgroups(mode, &marker);
    let uid = ran(Command::new("id").args(["-u", RUN_USER]))
        .stdout
        .trim()
        .to_string();
    for pid in marked(&marker) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.split_whitespace().skip(1).all(|id| id == uid),
            "{pid} runs as {RUN_USER}: {line}"
        );
    }
    let out = finish(invoke);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("timed out"), "{out}");
    assert!(none_left(&marker), "survived the timeout: {:?}", marked(&marker));
}

#[test]
fn cgroup_a_run_as_another_user_leaves_nothing_behind() {
    another_users_timeout_kills_everything(CGROUP);
}

#[test]
fn subreaper_a_run_as_another_user_leaves_nothing_behind() {
    another_users_timeout_kills_everything(SUBREAPER);
}

// --- a plain rjob invoke that ends -----------------------------------------------------

fn end_kills_everything(mode: &str) {
    let fleet = fleet(mode);
    let marker = unique("rjc-end-");
    let flag = fleet.scratch().join("go");
    let tail = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo ending",
        flag.display()
    );
    let invoke = spawn_invoke(&fleet, &escaping_script(&marker, &tail), &[]);
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    std::fs::write(&flag, "").expect("flag");
    let out = finish(invoke);
    assert_eq!(out.code, 0, "{out}");
    let lines = out.lines_of(&fleet.agents[0].host());
    assert_eq!(lines, ["started", "ending"], "{out}");
    assert!(
        none_left(&marker),
        "survived the run's end: {:?}",
        marked(&marker)
    );
}

#[test]
fn cgroup_the_end_of_an_invoke_kills_what_the_script_left_running() {
    end_kills_everything(CGROUP);
}

#[test]
fn subreaper_the_end_of_an_invoke_kills_what_the_script_left_running() {
    end_kills_everything(SUBREAPER);
}

// --- rjob stop of a job ----------------------------------------------------------------

fn stop_kills_everything(mode: &str) {
    let fleet = fleet(mode);
    let daemon = Daemon::start(&fleet).expect("daemon");
    let marker = unique("rjc-stop-");
    let out = daemon.invoke_job(
        &fleet.hosts(),
        "escaper",
        &escaping_script(&marker, "sleep 1000"),
        &["--shell", "bash"],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    let out = ran(daemon.rjob().args(["stop", "escaper"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("escaper", "Stopped"),
        "{}",
        daemon.job("escaper")
    );
    assert!(none_left(&marker), "survived the stop: {:?}", marked(&marker));
}

#[test]
fn cgroup_stopping_a_job_kills_setsid_and_double_forked_processes() {
    stop_kills_everything(CGROUP);
}

#[test]
fn subreaper_stopping_a_job_kills_setsid_and_double_forked_processes() {
    stop_kills_everything(SUBREAPER);
}

/// In a cgroup, a stop's SIGTERM reaches the processes that left the run's process group
/// too, and they get the rest of `kill_grace` to clean up even when the main process ends at
/// once; each process gets the signal once.
#[test]
fn cgroup_a_stop_sends_one_sigterm_to_every_process_of_the_run() {
    let fleet = fleet(CGROUP);
    let daemon = Daemon::start(&fleet).expect("daemon");
    let log = fleet.scratch().join("terms");
    let log = log.display();
    let script = format!(
        "trap 'echo main >> {log}; exit 0' TERM\n\
         setsid bash -c 'trap \"echo setsid >> {log}; exit 0\" TERM; echo ready >> {log}; while :; do sleep 0.05; done' &\n\
         while :; do sleep 0.05; done\n"
    );
    let out = daemon.invoke_job(&fleet.hosts(), "terms", &script, &["--shell", "bash"]);
    assert_eq!(out.code, 0, "{out}");
    let read = || std::fs::read_to_string(fleet.scratch().join("terms")).unwrap_or_default();
    assert!(wait_for(WAIT, || read().contains("ready")), "{}", read());
    assert_eq!(ran(daemon.rjob().args(["stop", "terms"])).code, 0);
    assert!(daemon.wait_state("terms", "Stopped"), "{}", daemon.job("terms"));
    let text = read();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["main", "ready", "setsid"], "one SIGTERM each: {text}");
}

/// Local jobs (`rjob start`) run in the daemon's embedded agent, with the same containment
/// (auto: cgroup here, as root with cgroup2).
#[test]
fn stopping_a_local_job_kills_what_left_its_process_group() {
    let fleet = Fleet::start(0).expect("pki");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let marker = unique("rjc-local-");
    let out = ran(daemon.rjob().args([
        "start",
        "--name",
        "local-escaper",
        "--shell",
        "bash",
        "--script",
        &escaping_script(&marker, "sleep 1000"),
    ]));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    assert_eq!(ran(daemon.rjob().args(["stop", "local-escaper"])).code, 0);
    assert!(
        daemon.wait_state("local-escaper", "Stopped"),
        "{}",
        daemon.job("local-escaper")
    );
    assert!(none_left(&marker), "survived the stop: {:?}", marked(&marker));
    assert!(
        daemon.log_text().contains("containment: cgroup v2"),
        "{}",
        daemon.log_text()
    );
}

/// A daemon that is not root has no cgroup of its own to delegate: its local jobs are
/// contained by the subreaper (the daemon is multi-threaded, unlike the agent).
#[test]
fn a_daemon_that_is_not_root_contains_local_jobs_as_a_subreaper() {
    let _ = run_user_fleet(SUBREAPER); // creates the user
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let out = ran(Command::new("chown").arg(RUN_USER).arg(tmp.path()));
    assert_eq!(out.code, 0, "{out}");
    let home = format!("/home/{RUN_USER}");
    let rjob = |args: &[&str]| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", RUN_USER, "--", "env"])
            .arg(format!("HOME={home}"))
            .arg(format!("RJOB_STATE_DIR={}", state.display()))
            .arg(bin("rjob"))
            .args(args)
            .stdin(Stdio::null());
        ran(&mut cmd)
    };
    let marker = unique("rjc-nonroot-");
    let out = rjob(&[
        "start",
        "--name",
        "escaper",
        "--shell",
        "bash",
        "--script",
        &escaping_script(&marker, "sleep 1000"),
    ]);
    assert_eq!(out.code, 0, "{out}");
    let daemon = marked(&state.display().to_string());
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    let out = rjob(&["stop", "escaper"]);
    assert_eq!(out.code, 0, "{out}");
    let stopped = wait_for(WAIT, || rjob(&["jobs", "escaper"]).stdout.contains("Stopped"));
    let left = none_left(&marker);
    let log = std::fs::read_to_string(state.join("daemon.log")).unwrap_or_default();
    for pid in daemon {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(stopped, "{log}");
    assert!(left, "survived the stop: {:?}", marked(&marker));
    assert!(log.contains("containment: child subreaper"), "{log}");
}

// --- the spool directory and forged run records (point 13) ------------------------------

/// Starts an agent on `spool` and expects it to refuse, with a one-line reason.
fn agent_refuses(spool: &Path) -> String {
    let fleet = Fleet::start(0).expect("pki");
    let dir = fleet.tmp.path().join("agent");
    fleet.pki.issue_agent("agent", "127.0.0.2", &dir).expect("cert");
    std::fs::write(dir.join("policy.toml"), rjob_tests::test_policy()).expect("policy");
    let out = Command::new(bin("rjob-agent"))
        .args(["--listen", "127.0.0.2:0", "--cert"])
        .arg(dir.join("agent.crt"))
        .arg("--key")
        .arg(dir.join("agent.key"))
        .arg("--client-ca")
        .arg(dir.join("ca.crt"))
        .arg("--policy")
        .arg(dir.join("policy.toml"))
        .arg("--spool-dir")
        .arg(spool)
        .stdin(Stdio::null())
        .output()
        .expect("rjob-agent");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the agent started on {}: {stderr}",
        spool.display()
    );
    let reason: Vec<&str> = stderr.lines().filter(|l| l.starts_with("rjob-agent: ")).collect();
    assert_eq!(reason.len(), 1, "one line of reason: {stderr}");
    reason[0].to_string()
}

#[test]
fn a_spool_dir_others_can_read_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).expect("spool");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let reason = agent_refuses(&spool);
    assert!(
        reason.contains("mode 0755") && reason.contains("0700"),
        "{reason}"
    );
}

#[test]
fn a_symlinked_spool_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let real = tmp.path().join("elsewhere");
    std::fs::create_dir(&real).expect("dir");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let spool = tmp.path().join("spool");
    std::os::unix::fs::symlink(&real, &spool).expect("symlink");
    let reason = agent_refuses(&spool);
    assert!(reason.contains("symbolic link"), "{reason}");
}

/// `seq 0 | kind 0x80 | len | data`: a meta record of the agent's spool format.
fn meta_record(json: &str) -> Vec<u8> {
    let mut rec = 0u64.to_le_bytes().to_vec();
    rec.push(0x80);
    rec.extend_from_slice(&u32::try_from(json.len()).unwrap_or(0).to_le_bytes());
    rec.extend_from_slice(json.as_bytes());
    rec
}

fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn forged_record_kills_nothing(mode: &str) {
    // The victim: an unrelated process in a process group of its own.
    let mut victim = Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .expect("sleep");
    let pid = victim.id();
    let fields = stat_fields(pid);
    let (sid, start) = (fields[3].clone(), fields[19].clone());
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let hex = format!("{:032x}", nanos ^ (u128::from(pid) << 64));
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    // As good a forgery as anyone who reads /proc can write: the right boot, start time and
    // session, and no outcome (a run "still going").
    let json = format!(
        "{{\"id\":\"{id}\",\"label\":\"\",\"run_as\":\"root\",\"client\":\"x\",\"script_sha256\":\"\",\
         \"pid\":{pid},\"boot_id\":\"{}\",\"pid_start_time\":{start},\"sid\":{sid},\
         \"containment\":\"\",\"started_at_ms\":1,\"ended_at_ms\":null,\"outcome\":null}}",
        boot.trim()
    );
    let fleet = Fleet::start_with(1, |cmd| {
        cmd.args(["--containment", mode]);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let spool = args
            .iter()
            .position(|a| a == "--spool-dir")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .expect("--spool-dir");
        std::fs::create_dir_all(&spool).expect("spool");
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::write(spool.join(format!("{id}.run")), meta_record(&json)).expect("record");
    })
    .expect("agent");
    // The agent is listening: it has loaded the spool.
    let alive = process_alive(i32::try_from(pid).unwrap_or(0));
    let log = fleet.agents[0].log_text();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        alive,
        "a forged run record got an unrelated process killed: {log}"
    );
    assert!(log.contains("not provably the run's"), "{log}");
    // The forged run itself is listed as lost, like any run an agent found unfinished.
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "--script", "true"]));
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn cgroup_a_forged_run_record_does_not_get_an_unrelated_process_killed() {
    forged_record_kills_nothing(CGROUP);
}

#[test]
fn subreaper_a_forged_run_record_does_not_get_an_unrelated_process_killed() {
    forged_record_kills_nothing(SUBREAPER);
}

/// What a killed agent's run left is still killed by the next agent, through the run's
/// cgroup (auto: cgroup here).
#[test]
fn a_restarted_agent_kills_what_is_left_in_its_runs_cgroups() {
    let mut fleet = Fleet::start(1).expect("agent");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let marker = unique("rjc-restart-");
    let out = daemon.invoke_job(
        &fleet.hosts(),
        "orphaned",
        &escaping_script(&marker, "sleep 1000"),
        &["--shell", "bash"],
    );
    assert_eq!(out.code, 0, "{out}");
    assert!(
        all_three_running(&marker),
        "the escapes started: {:?}",
        marked(&marker)
    );
    fleet.restart_agent(0).expect("restart");
    assert!(
        none_left(&marker),
        "survived the agent's restart: {:?}",
        marked(&marker)
    );
}

// --- the spool quota (point 12) ---------------------------------------------------------

#[test]
fn a_full_spool_refuses_new_runs_and_never_cuts_one_going() {
    let fleet = Fleet::start_with(1, |cmd| {
        cmd.args(["--max-spool-bytes", "4096"]);
    })
    .expect("agent");
    let flag = fleet.scratch().join("go");
    // 8 KiB of output, then it waits: its spool holds more than the quota while it goes.
    let script = format!(
        "head -c 8192 /dev/zero | tr '\\0' x; echo; while [ ! -e {} ]; do sleep 0.05; done; echo after-the-limit",
        flag.display()
    );
    let first = spawn_invoke(&fleet, &script, &[]);
    let spool = fleet.agents[0].spool.clone();
    let spool_bytes = || -> u64 {
        std::fs::read_dir(&spool)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    };
    assert!(
        wait_for(WAIT, || spool_bytes() > 8192),
        "the first run's output is spooled"
    );

    let refused = ran(fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "--script", "echo no"]));
    assert_eq!(refused.code, 1, "{refused}");
    assert!(
        refused.stderr.contains("max_spool_bytes = 4096"),
        "the refusal names the limit: {refused}"
    );
    assert!(!refused.stdout.contains("no"), "{refused}");

    std::fs::write(&flag, "").expect("flag");
    let out = finish(first);
    assert_eq!(out.code, 0, "the run going was not cut: {out}");
    let lines = out.lines_of(&fleet.agents[0].host());
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0].len(), 8192, "{out}");
    assert_eq!(lines[1], "after-the-limit", "{out}");

    // Received and acknowledged: the spool is empty again and runs are accepted.
    let again = ran(fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "--script", "echo yes"]));
    assert_eq!(again.code, 0, "{again}");
    assert_eq!(again.lines_of(&fleet.agents[0].host()), ["yes"], "{again}");
}
