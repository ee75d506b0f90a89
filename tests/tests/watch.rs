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
        Tmux::start_sized(name, command, 200, 50)
    }

    fn start_sized(name: &str, command: &str, columns: u16, lines: u16) -> Tmux {
        // A socket per server, never reused: a server being killed still holds its name.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("rjw-{name}-{}-{n}", std::process::id());
        let shell = format!("{command}; echo \"[exit $?]\"; exec sleep 3600");
        let status = Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "t"])
            .args(["-x", &columns.to_string(), "-y", &lines.to_string()])
            .args(["sh", "-c", &shell])
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

/// A script that prints `begin`, waits until `gate` exists, then prints `end`.
fn gated_script(gate: &std::path::Path) -> String {
    format!(
        "echo begin; while [ ! -e {} ]; do sleep 0.05; done; echo end",
        gate.display()
    )
}

/// Opens the gate of [`gated_script`] and waits for the command's end: the progress line is
/// gone and each of the `hosts` printed its two lines whole. Returns the last screen.
fn open_gate_and_expect_whole_output(
    tmux: &Tmux,
    gate: &std::path::Path,
    what: &str,
    hosts: usize,
) -> String {
    std::fs::write(gate, "").expect("open the gate");
    let (ok, screen) = tmux.wait_screen(|s| s.contains("[exit 0]"));
    assert!(ok, "{what} did not finish:\n{screen}");
    assert!(
        progress_line(&screen).is_none(),
        "the progress line stayed:\n{screen}"
    );
    let output: Vec<&str> = screen
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("rjob: ") && !l.starts_with("[exit"))
        .collect();
    assert_eq!(output.len(), hosts * 2, "{hosts} hosts × 2 lines:\n{screen}");
    for l in &output {
        assert!(
            whole_output_line(l, &["begin", "end"]),
            "split or mixed line {l:?}:\n{screen}"
        );
    }
    screen
}

#[test]
fn invoke_shows_a_progress_line_while_hosts_run_and_clears_it_before_output_and_at_the_end() {
    let fleet = Fleet::start(6).expect("fleet");
    let gate = fleet.scratch().join("gate");
    let script = gated_script(&gate);
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

    let screen = open_gate_and_expect_whole_output(&tmux, &gate, "invoke", 6);
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("rjob: 6 hosts: 6 Completed")),
        "{screen}"
    );
}

#[test]
fn no_progress_line_with_quiet_or_json_or_into_a_pipe() {
    let fleet = Fleet::start(2).expect("fleet");
    let hosts = fleet.hosts();
    for (extra, pipe) in [
        (&["--quiet"][..], ""),
        (&["--output", "json"][..], ""),
        // A pipe's reader writes to the terminal whenever it likes: no line beside it.
        (&[][..], " | cat"),
    ] {
        let mut args = vec!["invoke", "-H", &hosts, "--script", "echo hi; sleep 1"];
        args.extend_from_slice(extra);
        let line = rjob_line(&[("RJOB_IDENTITY", &fleet.pki.dir)], &args) + pipe;
        let tmux = Tmux::start("quiet", &line);
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
    let script = gated_script(&gate);
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
    open_gate_and_expect_whole_output(&tmux, &gate, "receive --follow", 3);
}

/// Host rows of `rjob watch` on a screen: lines that start with an agent's address.
fn host_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.trim_start().starts_with("127.0.0."))
        .collect()
}

#[test]
fn watch_shows_64_hosts_filters_follows_one_and_quits_with_q() {
    const HOSTS: usize = 64;
    let fleet = Fleet::start(HOSTS).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let dir = fleet.scratch();
    let gate = dir.join("gate");
    // Every host says it started and waits for the gate; then the first four to take a
    // token fail with exit status 3, the others finish.
    let script = format!(
        "echo started; while [ ! -e {gate} ]; do sleep 0.05; done; \
         for k in 1 2 3 4; do if mkdir {dir}/token$k 2>/dev/null; then echo failing; exit 3; fi; done; \
         echo finished",
        gate = gate.display(),
        dir = dir.display()
    );
    let out = daemon.invoke_job(&fleet.hosts(), "watched", &script, &["--throttle-limit", "64"]);
    assert_eq!(out.code, 0, "{out}");
    let line = rjob_line(
        &[
            ("RJOB_IDENTITY", &fleet.pki.dir),
            ("RJOB_STATE_DIR", &daemon.state_dir),
        ],
        &["watch", "watched"],
    );
    let tmux = Tmux::start_sized("watch", &line, 160, 80);

    // All 64 rows, Running, each with its last line.
    let (ok, screen) = tmux.wait_screen(|s| {
        s.contains("Running 64")
            && host_rows(s).len() == HOSTS
            && host_rows(s)
                .iter()
                .all(|r| r.contains("Running") && r.ends_with("started"))
    });
    assert!(ok, "not 64 running hosts with their last line:\n{screen}");
    assert!(screen.contains("throttle 64"), "{screen}");
    assert!(screen.contains("Job 1 watched · Running · 64 hosts"), "{screen}");

    std::fs::write(&gate, "").expect("open the gate");
    let (ok, screen) = tmux.wait_screen(|s| {
        s.contains("Completed 60 · Failed 4")
            && host_rows(s)
                .iter()
                .all(|r| r.ends_with("finished") || r.ends_with("failing"))
    });
    assert!(ok, "the job did not end as it should:\n{screen}");

    // f: only the failed hosts, with their exit status.
    tmux.keys(&["f"]);
    let (ok, screen) = tmux.wait_screen(|s| {
        let rows = host_rows(s);
        rows.len() == 4 && rows.iter().all(|r| r.contains("Failed") && r.contains(" 3 "))
    });
    assert!(ok, "f did not show the 4 failed hosts:\n{screen}");
    tmux.keys(&["f"]);

    // /: a filter on one host's address.
    let target = fleet.agents[30].host();
    let address = target.split(':').next().unwrap_or_default().to_string();
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &format!("{address}:")]);
    tmux.keys(&["Enter"]);
    let (ok, screen) = tmux.wait_screen(|s| {
        let rows = host_rows(s);
        rows.len() == 1 && rows[0].trim_start().starts_with(&format!("{address}:"))
    });
    assert!(ok, "the filter did not leave one host:\n{screen}");

    // Enter: that host's output, whole.
    tmux.keys(&["Enter"]);
    let (ok, screen) = tmux.wait_screen(|s| {
        s.contains("· following")
            && s.lines().any(|l| l.trim() == "started")
            && s.lines().any(|l| l.trim() == "finished" || l.trim() == "failing")
    });
    assert!(ok, "Enter did not follow the host:\n{screen}");

    // Esc back to the table, q quits and the terminal is as it was.
    tmux.keys(&["Escape"]);
    let (ok, screen) = tmux.wait_screen(|s| host_rows(s).len() == 1 && !s.contains("following"));
    assert!(ok, "Esc did not go back to the table:\n{screen}");
    tmux.keys(&["q"]);
    let (ok, screen) = tmux.wait_screen(|s| s.contains("[exit 0]"));
    assert!(ok, "q did not quit:\n{screen}");
    assert!(
        host_rows(&screen).is_empty(),
        "the view stayed on screen:\n{screen}"
    );

    // Watching consumed nothing: a receive still gets every host's output.
    let received = rjob_tests::ran(daemon.rjob().args(["receive", "watched"]));
    assert_eq!(received.code, 0, "{received}");
    assert_eq!(
        received
            .stdout
            .lines()
            .filter(|l| l.ends_with(": started"))
            .count(),
        HOSTS,
        "{received}"
    );
}

#[test]
fn watch_without_a_terminal_is_a_one_line_usage_error() {
    let out = rjob_tests::ran(Command::new(bin("rjob")).args(["watch", "anything"]));
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stderr.contains("rjob watch needs a terminal"), "{out}");
}

/// `ReceiveJob` with `keep` and `after_seq` (what `rjob watch` reads a host's last line with):
/// only the chunks after that sequence number, and nothing is marked received.
#[test]
fn a_kept_receive_after_a_sequence_number_reads_only_the_last_chunks() {
    use rjob_proto::v1 as pb;
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    // Ten chunks: a line, then a pause long enough that the agent sends it on its own.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; sleep 0.2; done";
    let out = daemon.invoke_job(&fleet.hosts(), "chunks", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state("chunks", "Completed"),
        "{}",
        daemon.job("chunks")
    );
    let job = daemon.job("chunks");
    let host = job["children"][0]["host"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let received = runtime.block_on(async {
        let mut client = rjob_tests::raw::daemon_client(&daemon).await;
        let listed = client
            .list_jobs(pb::ListJobsRequest {
                jobs: vec!["chunks".into()],
            })
            .await
            .expect("list")
            .into_inner();
        let last_seq = listed.jobs[0].children[0].last_seq;
        assert!(last_seq >= 3, "too few chunks to tell: {last_seq}");
        // One request, then the request stream stays open (a closed one ends the receive).
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::ReceiveJobMessage {
            message: Some(pb::receive_job_message::Message::Request(pb::ReceiveJobRequest {
                job: "chunks".into(),
                keep: true,
                host: host.clone(),
                follow: false,
                after_seq: last_seq - 2,
            })),
        })
        .await
        .expect("queue the request");
        let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut stream = client.receive_job(requests).await.expect("receive").into_inner();
        let mut seqs = Vec::new();
        let mut data = Vec::new();
        while let Some(out) = stream.message().await.expect("message") {
            if out.end {
                break;
            }
            seqs.push(out.seq);
            data.extend_from_slice(&out.data);
        }
        assert_eq!(seqs, vec![last_seq - 1, last_seq], "{last_seq}");
        String::from_utf8_lossy(&data).into_owned()
    });
    assert!(received.ends_with("line10\n"), "{received:?}");
    assert!(!received.contains("line1\n"), "{received:?}");
    // Nothing was marked received: a receive still gets all ten lines.
    let all = rjob_tests::ran(daemon.rjob().args(["receive", "chunks"]));
    assert_eq!(all.stdout.lines().count(), 10, "{all}");
}

#[test]
fn watch_shows_the_true_last_line_of_a_long_output_and_follows_it_from_its_end() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let out = daemon.invoke_job(&fleet.hosts(), "long", "seq 1 200000", &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("long", "Completed"), "{}", daemon.job("long"));
    let line = rjob_line(
        &[
            ("RJOB_IDENTITY", &fleet.pki.dir),
            ("RJOB_STATE_DIR", &daemon.state_dir),
        ],
        &["watch", "long"],
    );
    let tmux = Tmux::start("long", &line);
    let (ok, screen) = tmux.wait_screen(|s| {
        let rows = host_rows(s);
        rows.len() == 2 && rows.iter().all(|r| r.ends_with(" 200000"))
    });
    assert!(ok, "the last line is not 200000:\n{screen}");
    tmux.keys(&["Enter"]);
    let (ok, screen) = tmux.wait_screen(|s| {
        let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        s.contains("· following")
            && lines.last() == Some(&"200000")
            && lines.iter().rev().nth(1) == Some(&"199999")
    });
    assert!(ok, "following does not end with the last lines:\n{screen}");
    tmux.keys(&["q"]);
    let (ok, screen) = tmux.wait_screen(|s| s.contains("[exit 0]"));
    assert!(ok, "q did not quit:\n{screen}");
}
