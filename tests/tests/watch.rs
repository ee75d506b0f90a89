//! At the terminal, under a real pseudo-terminal (tmux): the progress line of `rjob invoke`
//! and `rjob wait`, and the live view `rjob watch`. Screens are read with
//! `tmux capture-pane -p`, as a user would see them.

use std::path::Path;
use std::process::Command;

use rjob_tests::{bin, wait_for, Daemon, Fleet, WAIT};

/// A tmux server of our own (its own socket), one session running one shell command in a
/// 200x50 pane; killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let socket = format!("rjw-{name}-{}", std::process::id());
        let shell = format!("{command}; echo \"[exit $?]\"; exec sleep 3600");
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "t"])
            .args(["-x", "200", "-y", "50", "sh", "-c", &shell])
            .status()
            .unwrap_or_else(|e| panic!("cannot run tmux (apt-get install -y tmux): {e}"));
        assert!(status.success(), "tmux new-session failed: {status}");
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows what `cond` looks for; the last screen either way.
    fn wait_screen(&self, mut cond: impl FnMut(&str) -> bool) -> (bool, String) {
        let mut last = String::new();
        let ok = wait_for(WAIT, || {
            last = self.screen();
            cond(&last)
        });
        (ok, last)
    }

    #[allow(dead_code)] // used by the watch tests
    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// `'text'` for sh.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The `rjob` command line for the pane, with the environment it needs.
fn rjob_line(env: &[(&str, &Path)], args: &[&str]) -> String {
    let mut line = String::from("env");
    for (k, v) in env {
        line.push_str(&format!(" {k}={}", quoted(&v.display().to_string())));
    }
    line.push(' ');
    line.push_str(&quoted(&bin("rjob").display().to_string()));
    for a in args {
        line.push(' ');
        line.push_str(&quoted(a));
    }
    line
}

/// `[ 3/8 done · 0 failed · 2 running · 1.2s ]`
fn progress_line(screen: &str) -> Option<&str> {
    screen
        .lines()
        .find(|l| l.starts_with("[ ") && l.contains(" done · ") && l.contains(" running · "))
}

/// A host-labelled output line, whole: `127.0.0.N[:PORT]: WORD` with WORD one of `words`.
fn whole_output_line(line: &str, words: &[&str]) -> bool {
    let Some((label, text)) = line.split_once(": ") else {
        return false;
    };
    let host = label.split(':').next().unwrap_or_default();
    host.starts_with("127.0.0.") && words.contains(&text)
}

#[test]
fn invoke_shows_a_progress_line_while_hosts_run_and_clears_it_before_output_and_at_the_end() {
    let fleet = Fleet::start(6).expect("fleet");
    let gate = fleet.scratch().join("gate");
    let script = format!(
        "echo begin; while [ ! -e {} ]; do sleep 0.05; done; echo end",
        gate.display()
    );
    let hosts = fleet.hosts();
    let line = rjob_line(
        &[("RJOB_IDENTITY", &fleet.pki.dir)],
        &[
            "invoke",
            "-H",
            &hosts,
            "--throttle-limit",
            "3",
            "--script",
            &script,
        ],
    );
    let tmux = Tmux::start("invoke", &line);

    // Three hosts in flight, their first lines printed whole, the line under them.
    let (ok, screen) = tmux.wait_screen(|s| {
        s.lines().filter(|l| whole_output_line(l, &["begin"])).count() == 3
            && progress_line(s).is_some_and(|p| p.contains("0/6 done · 0 failed · 3 running"))
    });
    assert!(ok, "no progress line with 3 running:\n{screen}");
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        progress_line(lines.last().copied().unwrap_or_default()).is_some(),
        "the progress line is not the last line:\n{screen}"
    );

    std::fs::write(&gate, "").expect("open the gate");
    let (ok, screen) = tmux.wait_screen(|s| s.contains("[exit 0]"));
    assert!(ok, "invoke did not finish:\n{screen}");
    assert!(
        progress_line(&screen).is_none(),
        "the progress line stayed:\n{screen}"
    );
    let output: Vec<&str> = screen
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("rjob: ") && !l.starts_with("[exit"))
        .collect();
    assert_eq!(output.len(), 12, "6 hosts × 2 lines:\n{screen}");
    for l in &output {
        assert!(
            whole_output_line(l, &["begin", "end"]),
            "split or mixed line {l:?}:\n{screen}"
        );
    }
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("rjob: 6 hosts: 6 Completed")),
        "{screen}"
    );
}

#[test]
fn no_progress_line_with_quiet_or_json() {
    let fleet = Fleet::start(2).expect("fleet");
    let hosts = fleet.hosts();
    for extra in [&["--quiet"][..], &["--output", "json"][..]] {
        let mut args = vec!["invoke", "-H", &hosts, "--script", "echo hi; sleep 1"];
        args.extend_from_slice(extra);
        let tmux = Tmux::start("quiet", &rjob_line(&[("RJOB_IDENTITY", &fleet.pki.dir)], &args));
        let mut seen = false;
        let (ok, screen) = tmux.wait_screen(|s| {
            seen |= progress_line(s).is_some();
            s.contains("[exit 0]")
        });
        assert!(ok, "{extra:?} did not finish:\n{screen}");
        assert!(!seen, "{extra:?} showed a progress line:\n{screen}");
    }
}

#[test]
fn wait_shows_the_progress_line_until_the_job_ends() {
    let fleet = Fleet::start(3).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let gate = fleet.scratch().join("gate");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
    let out = daemon.invoke_job(&fleet.hosts(), "gated", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    let line = rjob_line(
        &[
            ("RJOB_IDENTITY", &fleet.pki.dir),
            ("RJOB_STATE_DIR", &daemon.state_dir),
        ],
        &["wait", "gated"],
    );
    let tmux = Tmux::start("wait", &line);
    let (ok, screen) =
        tmux.wait_screen(|s| progress_line(s).is_some_and(|p| p.contains("0/3 done · 0 failed · 3 running")));
    assert!(ok, "no progress line while waiting:\n{screen}");
    std::fs::write(&gate, "").expect("open the gate");
    let (ok, screen) = tmux.wait_screen(|s| s.contains("[exit 0]"));
    assert!(ok, "wait did not finish:\n{screen}");
    assert!(
        progress_line(&screen).is_none(),
        "the progress line stayed:\n{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("1 ") && l.contains("gated") && l.contains("Completed")),
        "{screen}"
    );
}

#[test]
fn receive_follow_shows_the_progress_line_beside_whole_output_lines() {
    let fleet = Fleet::start(3).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let gate = fleet.scratch().join("gate");
    let script = format!(
        "echo begin; while [ ! -e {} ]; do sleep 0.05; done; echo end",
        gate.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "followed", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    let line = rjob_line(
        &[
            ("RJOB_IDENTITY", &fleet.pki.dir),
            ("RJOB_STATE_DIR", &daemon.state_dir),
        ],
        &["receive", "followed", "--follow"],
    );
    let tmux = Tmux::start("follow", &line);
    let (ok, screen) = tmux.wait_screen(|s| {
        s.lines().filter(|l| whole_output_line(l, &["begin"])).count() == 3
            && progress_line(s).is_some_and(|p| p.contains("0/3 done · 0 failed · 3 running"))
    });
    assert!(ok, "no progress line while following:\n{screen}");
    std::fs::write(&gate, "").expect("open the gate");
    let (ok, screen) = tmux.wait_screen(|s| s.contains("[exit 0]"));
    assert!(ok, "receive --follow did not finish:\n{screen}");
    assert!(
        progress_line(&screen).is_none(),
        "the progress line stayed:\n{screen}"
    );
    let output: Vec<&str> = screen
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("rjob: ") && !l.starts_with("[exit"))
        .collect();
    assert_eq!(output.len(), 6, "3 hosts × 2 lines:\n{screen}");
    for l in &output {
        assert!(
            whole_output_line(l, &["begin", "end"]),
            "split or mixed line {l:?}:\n{screen}"
        );
    }
}
