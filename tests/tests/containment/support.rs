//! What the containment tests (`containment.rs`) and the spool tests (`spool_guard.rs`)
//! share: scripts whose processes escape their process group, `rjob invoke` of them, and
//! finding those processes by a marker in their command line.

use std::process::{Child, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use rjob_tests::{process_alive, wait_for, Daemon, Fleet, WAIT};

pub const CGROUP: &str = "cgroup";
pub const SUBREAPER: &str = "subreaper";

pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}{}x{nanos}", std::process::id())
}

/// Pids of live processes whose command line holds `marker`.
pub fn marked(marker: &str) -> Vec<i32> {
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
pub fn escaping_script(marker: &str, tail: &str) -> String {
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

/// Waits until the three escapes of [`escaping_script`] run.
pub fn assert_escapes_running(marker: &str) {
    assert!(
        wait_for(WAIT, || marked(marker).len() >= 3),
        "the escapes started: {:?}",
        marked(marker)
    );
}

pub fn none_left(marker: &str) -> bool {
    wait_for(WAIT, || marked(marker).is_empty())
}

pub fn spawn_invoke(fleet: &Fleet, script: &str, extra: &[&str]) -> Child {
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

pub fn finish(child: Child) -> rjob_tests::Ran {
    rjob_tests::Ran::of(child.wait_with_output().expect("rjob invoke output"))
}

/// Starts job `name`, the escaping script, on the fleet's agents, and waits until its three
/// escapes run.
pub fn start_escaping_job(daemon: &Daemon, fleet: &Fleet, name: &str, marker: &str) {
    let out = daemon.invoke_job(
        &fleet.hosts(),
        name,
        &escaping_script(marker, "sleep 1000"),
        &["--shell", "bash"],
    );
    assert_eq!(out.code, 0, "{out}");
    assert_escapes_running(marker);
}
