//! `rjob receive` delivers every chunk once: through readers that stop, clients and daemons
//! that are killed, and two receivers at once. Real daemon, real agent, real pipes.

use std::io::Read;
use std::process::{Child, ChildStdout};

use rjob_tests::{ran, wait_for, Daemon, Fleet, WAIT};

/// Lines of the test job (numbered 1..=LINES, one per line).
const LINES: u64 = 300_000;

/// The daemon's window: output sent and not confirmed, per receive (README).
const WINDOW: u64 = 256 * 1024;

/// A fleet of one agent and a daemon with a completed job `name` printing 1..=LINES.
fn big_job(name: &str) -> (Fleet, Daemon) {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let out = daemon.invoke_job(&fleet.hosts(), name, &format!("seq 1 {LINES}"), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        daemon.wait_state(name, "Completed"),
        "never Completed: {}",
        daemon.job(name)
    );
    (fleet, daemon)
}

/// Reads until at least `n` bytes came (or EOF), and hands the pipe back; a receive that
/// stalls on the way is killed and fails the test.
fn read_at_least(child: &mut Child, mut out: ChildStdout, n: usize) -> (Vec<u8>, ChildStdout) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < n {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        let _ = tx.send((got, out));
    });
    match rx.recv_timeout(WAIT) {
        Ok(read) => read,
        Err(_) => {
            let _ = child.kill();
            panic!("rjob receive stalled before it had written {n} bytes");
        }
    }
}

/// The numbers of the whole lines of `host` in text output (a last line without its newline
/// was not read whole and does not count).
fn numbers(bytes: &[u8], host: &str) -> Vec<u64> {
    let text = String::from_utf8_lossy(bytes);
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let prefix = format!("{host}: ");
    whole
        .lines()
        .map(|l| {
            l.strip_prefix(&prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a whole numbered line of {host}: {l:?}"))
        })
        .collect()
}

/// Bytes of the job's own output for lines `from..=to` (`N\n` each).
fn source_bytes(from: u64, to: u64) -> u64 {
    if from > to {
        return 0;
    }
    (from..=to).map(|n| n.to_string().len() as u64 + 1).sum()
}

/// Asserts `first` is 1..=a and `second` is b+1..=LINES with b <= a (a line boundary, no
/// line lost); returns the duplicated lines' bytes of output.
fn assert_union(first: &[u64], second: &[u64]) -> u64 {
    let a = first.len() as u64;
    assert!(
        first.iter().copied().eq(1..=a),
        "the first receive is not 1..={a} in order"
    );
    let b = second.first().map_or(LINES, |s| s - 1);
    assert!(b <= a, "lines {}..={b} were never delivered", a + 1);
    assert!(
        second.iter().copied().eq(b + 1..=LINES),
        "the second receive is not {}..={LINES} in order (starts {:?}, {} lines)",
        b + 1,
        second.first(),
        second.len()
    );
    source_bytes(b + 1, a)
}

#[test]
fn a_reader_that_closes_its_pipe_loses_nothing_and_the_next_receive_resumes_on_the_next_line() {
    let (fleet, daemon) = big_job("closed");
    let host = fleet.agents[0].host();
    let mut first = daemon.spawn_receive(&["closed"]);
    let pipe = first.stdout.take().expect("stdout");
    let (got, pipe) = read_at_least(&mut first, pipe, 700_000);
    drop(pipe); // the reader goes away, mid-line most likely
    let status = first.wait().expect("wait");
    let mut stderr = String::new();
    let _ = first.stderr.take().expect("stderr").read_to_string(&mut stderr);
    assert_eq!(
        status.code(),
        Some(141),
        "exit status on a closed pipe; stderr: {stderr}"
    );
    assert_eq!(stderr, "", "a closed pipe is not an error to report");

    let second = ran(daemon.rjob().args(["receive", "closed"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let dup = assert_union(&numbers(&got, &host), &numbers(second.stdout.as_bytes(), &host));
    assert_eq!(dup, 0, "what the reader read whole was delivered again");
    assert_eq!(daemon.job("closed")["has_more_data"], false);
}

#[test]
fn receive_into_head_then_receive_again_misses_only_what_head_read_and_threw_away() {
    let (fleet, daemon) = big_job("head");
    let host = fleet.agents[0].host();
    let file = fleet.scratch().join("head.txt");
    let pipeline = format!(
        "{} receive head | head -n 100000 > {}; echo ${{PIPESTATUS[0]}}",
        rjob_tests::bin("rjob").display(),
        file.display()
    );
    let piped = ran(std::process::Command::new("bash")
        .args(["-c", &pipeline])
        .env("RJOB_IDENTITY", &fleet.pki.dir)
        .env("RJOB_STATE_DIR", &daemon.state_dir));
    assert_eq!(
        piped.stdout.trim(),
        "141",
        "rjob's exit status under head: {piped}"
    );
    assert_eq!(piped.stderr, "", "{piped}");
    let head = std::fs::read(&file).expect("head's output");
    let head = numbers(&head, &host);
    assert_eq!(head.len(), 100_000);

    let second = ran(daemon.rjob().args(["receive", "head"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let second = numbers(second.stdout.as_bytes(), &host);
    // head reads a block past its last line and drops it; rjob can see only that head read
    // it. Nothing head printed comes again, and the second receive starts on a line.
    let resumed = second.first().copied().expect("a second receive with output");
    assert!(
        resumed > 100_000,
        "head's lines were delivered again from {resumed}"
    );
    assert!(second.iter().copied().eq(resumed..=LINES));
    let skipped = source_bytes(100_001, resumed - 1) + (resumed - 100_001) * (host.len() as u64 + 2);
    eprintln!(
        "head read and dropped {} lines ({skipped} bytes of output)",
        resumed - 100_001
    );
    assert!(
        skipped <= 64 * 1024,
        "more went missing than head can read ahead: {skipped} bytes"
    );
}

#[test]
fn a_client_killed_mid_stream_loses_nothing_and_repeats_at_most_the_window() {
    let (fleet, daemon) = big_job("killed");
    let host = fleet.agents[0].host();
    let mut first = daemon.spawn_receive(&["killed"]);
    let pipe = first.stdout.take().expect("stdout");
    let (mut got, mut pipe) = read_at_least(&mut first, pipe, 900_000);
    let _ = first.kill(); // SIGKILL
    let _ = first.wait();
    // What it wrote before it died reaches the reader too.
    let _ = pipe.read_to_end(&mut got);

    let second = ran(daemon.rjob().args(["receive", "killed"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let dup = assert_union(&numbers(&got, &host), &numbers(second.stdout.as_bytes(), &host));
    eprintln!("a killed client: {dup} bytes of output delivered twice");
    assert!(dup <= WINDOW, "{dup} bytes delivered twice, more than the window");
}

#[test]
fn a_second_consuming_receive_is_refused_while_keep_readers_always_get_in() {
    let (fleet, daemon) = big_job("busy");
    let host = fleet.agents[0].host();
    let mut first = daemon.spawn_receive(&["busy"]);
    let pipe = first.stdout.take().expect("stdout");
    let (got, pipe) = read_at_least(&mut first, pipe, 1); // it is receiving; its reader now stops reading

    let second = ran(daemon.rjob().args(["receive", "busy"]));
    assert_eq!(second.code, 2, "{second}");
    assert_eq!(second.stdout, "");
    let message = second.stderr.trim_end();
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(
        message.contains("job busy") && message.contains("--keep"),
        "the refusal names the job and --keep: {message}"
    );

    let kept = ran(daemon.rjob().args(["receive", "busy", "--keep"]));
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    let kept = numbers(kept.stdout.as_bytes(), &host);
    assert_eq!(
        kept.last(),
        Some(&LINES),
        "--keep gets the output the first has not confirmed"
    );

    // The first receiver is killed: its exclusion ends with its stream.
    let _ = first.kill();
    let _ = first.wait();
    drop(pipe);
    let mut third = None;
    assert!(
        wait_for(WAIT, || {
            let r = ran(daemon.rjob().args(["receive", "busy"]));
            let ok = r.code == 0;
            third = Some(r);
            ok
        }),
        "a consuming receive stays refused after the first was killed: {}",
        third.map(|r| r.to_string()).unwrap_or_default()
    );
    let third = third.expect("ran");
    let third = numbers(third.stdout.as_bytes(), &host);
    assert_eq!(third.last(), Some(&LINES));
    assert!(third
        .first()
        .is_some_and(|f| *f <= numbers(&got, &host).len() as u64 + 1));
}

#[test]
fn a_daemon_killed_mid_receive_loses_nothing_and_repeats_at_most_the_window() {
    let (fleet, mut daemon) = big_job("crash");
    let host = fleet.agents[0].host();
    let mut first = daemon.spawn_receive(&["crash"]);
    let pipe = first.stdout.take().expect("stdout");
    let (mut got, mut pipe) = read_at_least(&mut first, pipe, 800_000);
    daemon.kill9();
    // Everything the client had goes out to the reader; then it reports the lost daemon.
    let _ = pipe.read_to_end(&mut got);
    let status = first.wait().expect("wait");
    assert_ne!(status.code(), Some(0), "a receive whose daemon died succeeded");

    daemon.restart().expect("restart the daemon");
    let second = ran(daemon.rjob().args(["receive", "crash"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let dup = assert_union(&numbers(&got, &host), &numbers(second.stdout.as_bytes(), &host));
    eprintln!("a killed daemon: {dup} bytes of output delivered twice");
    assert!(dup <= WINDOW, "{dup} bytes delivered twice, more than the window");
}

#[test]
fn follow_keeps_the_guarantees_when_its_reader_closes() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let host = fleet.agents[0].host();
    // Output that goes on while the receive follows it.
    let script = format!("seq 1 150000; sleep 1; seq 150001 {LINES}");
    let out = daemon.invoke_job(&fleet.hosts(), "live", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    let mut first = daemon.spawn_receive(&["live", "--follow"]);
    let pipe = first.stdout.take().expect("stdout");
    let (got, pipe) = read_at_least(&mut first, pipe, 500_000);
    drop(pipe);
    let status = first.wait().expect("wait");
    assert_eq!(status.code(), Some(141));
    assert!(daemon.wait_state("live", "Completed"), "{}", daemon.job("live"));
    let second = ran(daemon.rjob().args(["receive", "live", "--follow"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let dup = assert_union(&numbers(&got, &host), &numbers(second.stdout.as_bytes(), &host));
    assert_eq!(dup, 0);
}

/// Numbers per (host, stream) of whole lines in text output.
fn numbers_by_stream(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u64>> {
    let text = String::from_utf8_lossy(bytes);
    let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
    let mut map: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for line in whole.lines() {
        let (label, n) = line
            .rsplit_once(": ")
            .unwrap_or_else(|| panic!("no label: {line:?}"));
        let n = n.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        map.entry(label.to_string()).or_default().push(n);
    }
    map
}

#[test]
fn stdout_and_stderr_of_two_hosts_in_turns_are_delivered_once_when_the_reader_closes() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let n: u64 = 100_000;
    // Both streams in turns of about 35 KB each: their chunks interleave and end mid-line.
    let script = "for b in $(seq 0 19); do seq $((b*5000+1)) $((b*5000+5000)); seq $((b*5000+1)) $((b*5000+5000)) >&2; done";
    let out = daemon.invoke_job(&fleet.hosts(), "mixed", script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("mixed", "Completed"), "{}", daemon.job("mixed"));
    let mut first = daemon.spawn_receive(&["mixed"]);
    let pipe = first.stdout.take().expect("stdout");
    let (got, pipe) = read_at_least(&mut first, pipe, 1_500_000);
    drop(pipe);
    assert_eq!(first.wait().expect("wait").code(), Some(141));
    let second = ran(daemon.rjob().args(["receive", "mixed"]));
    assert_eq!(second.code, 0, "{}", second.stderr);
    let (first, second) = (
        numbers_by_stream(&got),
        numbers_by_stream(second.stdout.as_bytes()),
    );
    let mut dup = 0;
    for agent in &fleet.agents {
        for label in [agent.host(), format!("{} [stderr]", agent.host())] {
            let a = first.get(&label).cloned().unwrap_or_default();
            let b = second.get(&label).cloned().unwrap_or_default();
            let a_n = a.len() as u64;
            assert!(
                a.iter().copied().eq(1..=a_n),
                "{label}: the first receive is not 1..={a_n}"
            );
            let from = b.first().map_or(n + 1, |f| *f);
            assert!(
                from <= a_n + 1,
                "{label}: lines {}..{from} never delivered",
                a_n + 1
            );
            assert!(
                b.iter().copied().eq(from..=n),
                "{label}: the second is not {from}..={n}"
            );
            dup += source_bytes(from, a_n);
        }
    }
    assert_eq!(dup, 0, "{dup} bytes delivered twice");
}

#[test]
fn both_streams_at_full_speed_neither_stall_a_receive_nor_repeat_a_line_when_the_reader_closes() {
    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let host = fleet.agents[0].host();
    let n: u64 = 100_000;
    // One stream may run far ahead of the other, which sits mid-line meanwhile: each stream
    // has its own received mark, so neither holds the other back.
    let script = format!("seq 1 {n} >&2 & seq 1 {n}; wait");
    let out = daemon.invoke_job(&fleet.hosts(), "race", &script, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("race", "Completed"), "{}", daemon.job("race"));
    let mut first = daemon.spawn_receive(&["race"]);
    let pipe = first.stdout.take().expect("stdout");
    let (got, pipe) = read_at_least(&mut first, pipe, 1_000_000);
    drop(pipe);
    assert_eq!(first.wait().expect("wait").code(), Some(141));
    let mut second = daemon.spawn_receive(&["race"]);
    let pipe = second.stdout.take().expect("stdout");
    let (rest, _pipe) = read_at_least(&mut second, pipe, usize::MAX);
    assert_eq!(second.wait().expect("wait").code(), Some(0));
    let (first, second) = (numbers_by_stream(&got), numbers_by_stream(&rest));
    for label in [host.clone(), format!("{host} [stderr]")] {
        let a = first.get(&label).cloned().unwrap_or_default();
        let b = second.get(&label).cloned().unwrap_or_default();
        let all: Vec<u64> = a.into_iter().chain(b).collect();
        assert!(
            all.iter().copied().eq(1..=n),
            "{label}: the two receives together are not 1..={n} once each ({} lines)",
            all.len()
        );
    }
    assert_eq!(daemon.job("race")["has_more_data"], false);
}
