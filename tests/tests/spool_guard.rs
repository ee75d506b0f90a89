//! The agent's spool: its directory and run records cannot be planted (issue 11, point 13),
//! a killed agent's leftovers are killed by the next one through its runs' cgroups, and the
//! spool has a total quota (point 12). Runs as root with cgroup2 mounted, as
//! `containment.rs` does, with the same helpers.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use rjob_tests::{bin, process_alive, ran, wait_for, Daemon, Fleet, WAIT};

#[path = "containment/support.rs"]
mod support;
use support::*;

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
    start_escaping_job(&daemon, &fleet, "orphaned", &marker);
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
