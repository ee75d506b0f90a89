//! `rjob invoke` against real agents on distinct loopback addresses: output, the throttle,
//! timeouts, arguments, bad input and Ctrl-C. Who may reach a run, and what a run inherits of
//! the agent: `isolation.rs`.

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rjob_tests::{process_alive, ran, wait_for, Fleet, WAIT};
use sha2::{Digest, Sha256};

#[test]
fn five_agents_output_arrives_complete_in_order_and_labelled() {
    let fleet = Fleet::start(5).expect("fleet");
    let script = "for i in $(seq 1 200); do echo \"line $i of $(hostname -I 2>/dev/null | wc -c) $1\"; done; echo oops >&2";
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "--script", script, "--", "arg1"]));
    assert_eq!(out.code, 0, "{out}");
    for agent in &fleet.agents {
        let lines = out.lines_of(&agent.host());
        assert_eq!(lines.len(), 200, "{}: {out}", agent.host());
        for (i, line) in lines.iter().enumerate() {
            assert!(line.starts_with(&format!("line {} of ", i + 1)), "{line}");
            assert!(line.ends_with(" arg1"), "{line}");
        }
        assert!(
            out.stdout.contains(&format!("{} [stderr]: oops\n", agent.host())),
            "{out}"
        );
    }
    assert!(out.stderr.contains("5 hosts: 5 Completed"), "{out}");

    // The JSON form holds the same content.
    let json = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--output",
        "json",
        "--script",
        script,
        "--",
        "arg1",
    ]));
    assert_eq!(json.code, 0, "{json}");
    let records: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
        .collect();
    for agent in &fleet.agents {
        let host = agent.host();
        let mine: Vec<_> = records.iter().filter(|r| r["host"] == host.as_str()).collect();
        let stdout: Vec<String> = mine
            .iter()
            .filter(|r| r["type"] == "output" && r["stream"] == "stdout")
            .map(|r| r["data"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(stdout, out.lines_of(&host), "JSON and text differ for {host}");
        let seqs: Vec<u64> = mine
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .filter(|s| *s > 0)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "sequence numbers go back: {seqs:?}"
        );
        let result = mine
            .iter()
            .find(|r| r["type"] == "result")
            .expect("a result record");
        assert_eq!(result["state"], "Completed");
        assert_eq!(result["exit_code"], 0);
        assert!(result["duration_ms"].is_u64());
    }
}

#[test]
fn agents_drop_the_output_once_the_controller_has_it() {
    let fleet = Fleet::start(2).expect("fleet");
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--script",
        "seq 1 1000; echo done >&2",
    ]));
    assert_eq!(out.code, 0, "{out}");
    for agent in &fleet.agents {
        assert_eq!(out.lines_of(&agent.host()).len(), 1000, "{out}");
        // The acknowledgement came on the run's own stream before `rjob invoke` exited: the
        // agent has removed the run, and its emptied file waits for the next one.
        let files: Vec<(String, u64)> = std::fs::read_dir(&agent.spool)
            .expect("spool dir")
            .filter_map(Result::ok)
            .map(|e| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        assert!(!files.is_empty(), "{}: no run file at all", agent.host());
        assert!(
            files
                .iter()
                .all(|(name, len)| name.ends_with(".run") && *len == 0),
            "{}: output left behind: {files:?}",
            agent.host()
        );
    }
}

#[test]
fn throttle_limit_bounds_how_many_runs_overlap() {
    let fleet = Fleet::start(6).expect("fleet");
    let log = fleet.scratch().join("intervals");
    // Each run records when it started and ended, measured on the agents' side.
    let script = format!(
        "s=$(date +%s%N); sleep 1; e=$(date +%s%N); echo \"$s $e\" >> {}",
        log.display()
    );
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--throttle-limit",
        "2",
        "--script",
        &script,
    ]));
    assert_eq!(out.code, 0, "{out}");
    let text = std::fs::read_to_string(&log).expect("interval log");
    let intervals: Vec<(u128, u128)> = text
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace().map(|v| v.parse::<u128>().expect("a number"));
            (it.next().expect("start"), it.next().expect("end"))
        })
        .collect();
    assert_eq!(intervals.len(), 6, "all 6 hosts ran: {text}");
    let max_overlap = intervals
        .iter()
        .map(|(s, _)| intervals.iter().filter(|(s2, e2)| s2 <= s && s < e2).count())
        .max()
        .unwrap_or(0);
    assert!(
        max_overlap <= 2,
        "{max_overlap} runs overlapped with --throttle-limit 2: {intervals:?}"
    );
    assert_eq!(max_overlap, 2, "the throttle limit should still allow 2 at once");
}

#[test]
fn an_unreachable_host_fails_alone_within_the_connect_timeout() {
    let fleet = Fleet::start(2).expect("fleet");
    // A port nobody listens on.
    let closed = format!(
        "127.0.0.9:{}",
        rjob_tests::free_port("127.0.0.9".parse().expect("ip"))
    );
    let started = Instant::now();
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &format!("{},{closed}", fleet.hosts()),
        "--connect-timeout",
        "3s",
        "--script",
        "echo ok",
    ]));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 4, "unreachable, and nothing failed otherwise: {out}");
    for agent in &fleet.agents {
        assert_eq!(out.lines_of(&agent.host()), ["ok"], "{out}");
    }
    let reason = out
        .stderr
        .lines()
        .find(|l| l.contains(&closed))
        .unwrap_or_else(|| panic!("no line for {closed}: {out}"));
    assert!(
        reason.contains("Failed") && reason.contains("refused"),
        "{reason}"
    );
    assert!(out.stderr.contains("2 Completed, 1 Failed"), "{out}");
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let fleet = Fleet::start(1).expect("fleet");
    let pids = fleet.scratch().join("pids");
    let script = format!(
        "sleep 300 & echo $! > {p}; (sleep 301 & echo $! >> {p}; wait) & echo $$ >> {p}; sleep 302",
        p = pids.display()
    );
    let started = Instant::now();
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--timeout",
        "1s",
        "--script",
        &script,
    ]));
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("timed out after 1s"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let text = std::fs::read_to_string(&pids).expect("pid file");
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert_eq!(pids.len(), 3, "{text}");
    assert!(
        wait_for(WAIT, || pids.iter().all(|p| !process_alive(*p))),
        "processes of the run survived its timeout: {pids:?}"
    );
}

#[test]
fn arguments_reach_the_script_verbatim() {
    let fleet = Fleet::start(1).expect("fleet");
    let args = [
        "two words",
        "it's \"quoted\"",
        "$(id)",
        "`id`",
        "; rm -rf /tmp/nothing",
        "",
        "*",
    ];
    let mut cmd = fleet.rjob();
    cmd.args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--script",
        "for a in \"$@\"; do printf '[%s]\\n' \"$a\"; done",
        "--",
    ]);
    cmd.args(args);
    let out = ran(&mut cmd);
    assert_eq!(out.code, 0, "{out}");
    let expected: Vec<String> = args.iter().map(|a| format!("[{a}]")).collect();
    assert_eq!(out.lines_of(&fleet.agents[0].host()), expected, "{out}");
}

#[test]
fn ten_megabytes_arrive_intact_while_agent_memory_stays_bounded() {
    let fleet = Fleet::start(1).expect("fleet");
    let agent = &fleet.agents[0];
    let host = agent.host();
    // About 10 MB of distinct lines.
    let script = "seq 1 1500000";
    let expected = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("local seq")
        .stdout;
    assert!(expected.len() > 10_000_000);

    let idle_rss = agent.rss_kib();
    let mut child = fleet
        .rjob()
        .args(["invoke", "-H", &host, "--script", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rjob");
    let mut stdout = child.stdout.take().expect("stdout");
    // Read slowly: the agent must keep the output on disk, not in memory.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut peak_rss = idle_rss;
    let mut reads = 0u32;
    loop {
        let n = stdout.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(5));
            peak_rss = peak_rss.max(agent.rss_kib());
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "rjob failed");

    let prefix = format!("{host}: ");
    let mut body = Vec::with_capacity(expected.len());
    for line in received.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line = line
            .strip_prefix(prefix.as_bytes())
            .expect("every line is labelled");
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    assert_eq!(body.len(), expected.len());
    assert_eq!(
        hex::encode(Sha256::digest(&body)),
        hex::encode(Sha256::digest(&expected))
    );
    let growth = peak_rss.saturating_sub(idle_rss);
    eprintln!("agent RSS idle {idle_rss} KiB, peak {peak_rss} KiB while a slow reader took 10 MB");
    assert!(
        growth < 8 * 1024,
        "agent memory grew by {growth} KiB for 10 MB of output"
    );
}

#[test]
fn bad_input_gets_one_line_and_the_usage_status() {
    let fleet = Fleet::start(1).expect("fleet");
    let big = fleet.scratch().join("big.sh");
    std::fs::write(&big, "#".repeat(2 << 20)).expect("big script");
    let hosts = fleet.hosts();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["invoke", "-H", "", "--script", "true"], "no hosts"),
        (vec!["invoke", "--script", "true"], "no hosts"),
        (
            vec!["invoke", "-H", "web[03-01]", "--script", "true"],
            "web[01-03]",
        ),
        (
            vec!["invoke", "-H", &hosts, "--file", "/nonexistent/check.sh"],
            "/nonexistent/check.sh",
        ),
        (
            vec!["invoke", "-H", &hosts, "--shell", "fish", "--script", "true"],
            "fish",
        ),
        (
            vec!["invoke", "-H", &hosts, "--file", big.to_str().unwrap_or_default()],
            "bytes",
        ),
        (
            vec![
                "invoke",
                "-H",
                &hosts,
                "--throttle-limit",
                "100001",
                "--script",
                "true",
            ],
            "throttle-limit",
        ),
        (
            vec![
                "invoke",
                "-H",
                &hosts,
                "--connect-timeout",
                "soon",
                "--script",
                "true",
            ],
            "duration",
        ),
    ];
    for (args, needle) in cases {
        let out = ran(fleet.rjob().args(&args));
        assert_eq!(out.code, 2, "{args:?}: {out}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out}");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(needle),
            "{args:?}: error should name {needle:?}: {out}"
        );
        let error_lines = out.stderr.lines().filter(|l| l.contains("error")).count();
        assert_eq!(error_lines, 1, "{args:?}: one error line expected: {out}");
        assert!(out.stdout.is_empty(), "{args:?}: {out}");
    }
}

#[test]
fn ctrl_c_stops_the_remote_runs_and_still_prints_the_summary() {
    let fleet = Fleet::start(2).expect("fleet");
    let pids = fleet.scratch();
    let script = format!(
        "echo started; echo $$ > {}/$(date +%s%N).pid; sleep 600",
        pids.display()
    );
    let child = fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "--script", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rjob");
    assert!(
        wait_for(WAIT, || std::fs::read_dir(&pids).map(|d| d.count()).unwrap_or(0)
            == 2),
        "the runs did not start"
    );
    let rjob_pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(rjob_pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = rjob_tests::Ran::of(child.wait_with_output().expect("wait"));
    assert_eq!(out.code, 130, "{out}");
    assert!(out.stderr.contains("2 Stopped"), "{out}");
    let run_pids: Vec<i32> = std::fs::read_dir(&pids)
        .expect("pids")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    assert_eq!(run_pids.len(), 2);
    assert!(
        wait_for(WAIT, || run_pids.iter().all(|p| !process_alive(*p))),
        "runs survived Ctrl-C"
    );
}
