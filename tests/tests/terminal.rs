//! At the terminal: gathered output (`-b`), folded host sets in the summary, `--output-dir`,
//! `--sort`, colour, and `--slowest`, against real agents.

use rjob_tests::{free_port, ran, Fleet, Ran};

/// Sets `$me` to the address of the agent running the script (its parent's `--listen`).
const WHOAMI: &str =
    "me=$(tr '\\0' '\\n' < /proc/$PPID/cmdline | sed -n '/^--listen$/{n;p;}'); me=${me%:*}; ";

fn invoke(fleet: &Fleet, script: &str, extra: &[&str]) -> Ran {
    let script = format!("{WHOAMI}{script}");
    ran(fleet
        .rjob()
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .args(["invoke", "-H", &fleet.hosts(), "--script", &script])
        .args(extra))
}

/// Compares `text` with `tests/snapshots/NAME`; `RJOB_UPDATE_SNAPSHOTS=1` rewrites it.
fn snapshot(name: &str, text: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(name);
    if std::env::var_os("RJOB_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        text == expected,
        "{name} changed; if that is meant, run RJOB_UPDATE_SNAPSHOTS=1 cargo test --test terminal\n--- now\n{text}\n--- snapshot\n{expected}"
    );
}

fn has_escapes(text: &str) -> bool {
    text.contains('\u{1b}')
}

/// Text without its SGR colour sequences.
fn strip_colour(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn gathered_output_of_12_hosts_where_3_differ_is_2_folded_groups() {
    let fleet = Fleet::start_one_port(12).expect("fleet");
    let script = "case $me in 127.0.0.3|127.0.0.7|127.0.0.8) echo different;; *) echo same; echo line two; echo warn >&2;; esac";
    let out = invoke(&fleet, script, &["-b"]);
    assert_eq!(out.code, 0, "{out}");
    let block = |title: &str, body: &str| {
        let rule = "-".repeat(title.len());
        format!("{rule}\n{title}\n{rule}\n{body}")
    };
    let want = block("127.0.0.[2,4-6,9-13] (9)", "same\nline two\n[stderr] warn\n")
        + &block("127.0.0.[3,7-8] (3)", "different\n");
    assert_eq!(out.stdout, want, "{out}");
    snapshot("terminal-gathered.txt", &out.stdout);
    assert!(out.stderr.contains("rjob: 12 hosts: 12 Completed in "), "{out}");

    // JSON: the usual records, plus one group record per set, only with -b.
    let json = invoke(&fleet, script, &["-b", "--output", "json"]);
    assert_eq!(json.code, 0, "{json}");
    let records: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let of = |kind: &str| records.iter().filter(|r| r["type"] == kind).count();
    assert_eq!(of("result"), 12, "{json}");
    assert_eq!(of("output"), 9 * 3 + 3, "{json}");
    let groups: Vec<&serde_json::Value> = records.iter().filter(|r| r["type"] == "group").collect();
    assert_eq!(groups.len(), 2, "{json}");
    assert_eq!(groups[0]["folded"], "127.0.0.[2,4-6,9-13]");
    assert_eq!(groups[0]["stdout"], "same\nline two\n");
    assert_eq!(groups[0]["stderr"], "warn\n");
    assert_eq!(groups[0]["hosts"].as_array().map(Vec::len), Some(9));
    assert_eq!(
        groups[0]["exit_codes"],
        serde_json::json!([0, 0, 0, 0, 0, 0, 0, 0, 0])
    );
    assert_eq!(groups[1]["folded"], "127.0.0.[3,7-8]");
    assert_eq!(
        groups[1]["hosts"],
        serde_json::json!(["127.0.0.3", "127.0.0.7", "127.0.0.8"])
    );
    let plain = invoke(&fleet, script, &["--output", "json"]);
    assert!(!plain.stdout.contains("\"group\""), "{plain}");

    // Live output on one port is labelled without the port: `dshbak -c` splits it right.
    let live = invoke(&fleet, "echo hi", &[]);
    assert_eq!(live.code, 0, "{live}");
    for agent in &fleet.agents {
        let ip = agent.addr.ip().to_string();
        assert_eq!(live.lines_of(&ip), ["hi"], "{live}");
    }
    assert!(!live.stdout.contains(&format!(":{}", fleet.port())), "{live}");
}

#[test]
fn a_hundred_unreachable_hosts_are_one_summary_line() {
    let fleet = Fleet::start_one_port(1).expect("fleet");
    let port = free_port(std::net::Ipv4Addr::new(127, 0, 9, 1));
    let hosts = format!("127.0.9.[1-100]:{port},{}", fleet.hosts());
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &hosts,
        "--connect-timeout",
        "2s",
        "-t",
        "100",
        "--slowest",
        "3",
        "--script",
        "echo up",
    ]));
    assert_eq!(out.code, 4, "unreachable, and nothing failed otherwise: {out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    let about_them: Vec<&&str> = lines.iter().filter(|l| l.contains("127.0.9.")).collect();
    // Hosts on two ports: labels and sets show the ports.
    let set = format!("rjob: 127.0.9.[1-100]:{port} (100): Failed: ");
    assert!(
        about_them.iter().filter(|l| l.starts_with(&set)).count() == 1,
        "{out}"
    );
    let summary = lines
        .iter()
        .find(|l| l.starts_with("rjob: 101 hosts: "))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    assert!(summary.contains("1 Completed, 100 Failed in "), "{out}");
    // The summary line ends with the wall time.
    let time = summary.rsplit(" in ").next().unwrap_or_default();
    assert!(
        time.ends_with('s') && time.trim_end_matches('s').parse::<f64>().is_ok(),
        "{summary}"
    );
    // The summary as users read it, with the port and the time written as placeholders.
    let shown: Vec<String> = lines
        .iter()
        .filter(|l| !l.starts_with("rjob: slowest: "))
        .map(|l| {
            let l = l.replace(&format!(":{port}"), ":PORT");
            match l.rsplit_once(" in ") {
                Some((head, _)) if l.starts_with("rjob: 101 hosts") => format!("{head} in T"),
                _ => l,
            }
        })
        .collect();
    snapshot("terminal-summary.txt", &(shown.join("\n") + "\n"));
    // --slowest 3 lists three hosts with their durations.
    let slowest: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("rjob: slowest: "))
        .collect();
    assert_eq!(slowest.len(), 3, "{out}");
    for line in slowest {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(
            fields[3].ends_with('s') && fields[3].trim_end_matches('s').parse::<f64>().is_ok(),
            "{line}"
        );
    }
}

#[test]
fn output_dir_holds_each_hosts_output_and_result_and_is_never_overwritten() {
    let fleet = Fleet::start_one_port(3).expect("fleet");
    let dir = fleet.scratch().join("out");
    let dir_arg = dir.to_string_lossy().into_owned();
    let script =
        "echo \"out $me\"; printf 'no newline'; echo \"err $me\" >&2; [ $me != 127.0.0.3 ] || exit 3";
    let out = invoke(&fleet, script, &["--output-dir", &dir_arg]);
    assert_eq!(out.code, 1, "{out}");
    // Live output goes on as usual.
    assert_eq!(
        out.lines_of("127.0.0.2"),
        ["out 127.0.0.2", "no newline"],
        "{out}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("output dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (2..=4)
        .flat_map(|o| ["err", "json", "out"].map(|s| format!("127.0.0.{o}.{s}")))
        .collect();
    want.sort();
    assert_eq!(names, want);
    for o in 2..=4 {
        let ip = format!("127.0.0.{o}");
        let read = |s: &str| std::fs::read_to_string(dir.join(format!("{ip}.{s}"))).expect("file");
        assert_eq!(read("out"), format!("out {ip}\nno newline"));
        assert_eq!(read("err"), format!("err {ip}\n"));
        let record: serde_json::Value = serde_json::from_str(read("json").trim()).expect("result JSON");
        assert_eq!(record["type"], "result");
        assert_eq!(record["host"], ip.as_str());
        let (state, code) = if o == 3 { ("Failed", 3) } else { ("Completed", 0) };
        assert_eq!(record["state"], state, "{record}");
        assert_eq!(record["exit_code"], code, "{record}");
    }

    // Again: refused before any host runs, the files untouched.
    let again = invoke(&fleet, "echo second", &["--output-dir", &dir_arg]);
    assert_eq!(again.code, 2, "{again}");
    assert!(again.stderr.contains("--force"), "{again}");
    assert!(!again.stdout.contains("second"), "{again}");
    let kept = std::fs::read_to_string(dir.join("127.0.0.2.out")).expect("file");
    assert_eq!(kept, "out 127.0.0.2\nno newline");
    let forced = invoke(&fleet, "echo second", &["--output-dir", &dir_arg, "--force"]);
    assert_eq!(forced.code, 0, "{forced}");
    let now = std::fs::read_to_string(dir.join("127.0.0.2.out")).expect("file");
    assert_eq!(now, "second\n");
}

#[test]
fn sort_prints_host_by_host_in_host_order() {
    let fleet = Fleet::start_one_port(10).expect("fleet");
    // Later hosts answer first, so arrival order is not host order.
    let script = "o=${me##*.}; sleep 0.$((12 - o)); echo \"a $me\"; echo \"e $me\" >&2; echo \"b $me\"";
    let out = invoke(&fleet, script, &["--sort"]);
    assert_eq!(out.code, 0, "{out}");
    let want: Vec<String> = (2..=11)
        .flat_map(|o| {
            let ip = format!("127.0.0.{o}");
            [
                format!("{ip}: a {ip}"),
                format!("{ip}: b {ip}"),
                format!("{ip} [stderr]: e {ip}"),
            ]
        })
        .collect();
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, want, "{out}");
}

#[test]
fn colour_only_on_demand_and_never_in_a_pipe() {
    let fleet = Fleet::start_one_port(2).expect("fleet");
    let script = "echo hi; echo oops >&2; [ $me = 127.0.0.2 ] || exit 1";
    let plain = invoke(&fleet, script, &[]);
    assert_eq!(plain.code, 1, "{plain}");
    assert!(
        !has_escapes(&plain.stdout) && !has_escapes(&plain.stderr),
        "a pipe has no escapes: {plain}"
    );

    let always = invoke(&fleet, script, &["--color", "always"]);
    assert_eq!(always.code, 1, "{always}");
    assert!(has_escapes(&always.stdout), "{always}");
    // Same text under the colour; Completed green, Failed red, the failed host marked.
    assert_eq!(
        strip_colour(&always.stdout).lines().count(),
        plain.stdout.lines().count()
    );
    assert!(
        always.stderr.contains("\u{1b}[32m1 Completed"),
        "{:?}",
        always.stderr
    );
    assert!(always.stderr.contains("31m1 Failed"), "{:?}", always.stderr);
    assert!(
        always.stderr.contains("31m127.0.0.3\u{1b}[0m: Failed"),
        "{:?}",
        always.stderr
    );
    assert!(always.stdout.contains("31m[stderr]"), "{:?}", always.stdout);
    // A host's colour is the same on every run.
    let label_of = |text: &str, ip: &str| {
        text.lines()
            .find(|l| l.contains(&format!("{ip}\u{1b}[0m: hi")))
            .map(|l| l[..l.find(ip).unwrap_or(0)].to_string())
    };
    let again = invoke(&fleet, script, &["--color", "always"]);
    assert!(
        label_of(&always.stdout, "127.0.0.2").is_some(),
        "{:?}",
        always.stdout
    );
    assert_eq!(
        label_of(&always.stdout, "127.0.0.2"),
        label_of(&again.stdout, "127.0.0.2")
    );

    // CLICOLOR_FORCE colours a pipe; NO_COLOR wins over it; --color never wins over both.
    let script = format!("{WHOAMI}{script}");
    let run = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = fleet.rjob();
        cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ran(cmd
            .args(["invoke", "-H", &fleet.hosts(), "--script", &script])
            .args(extra))
    };
    let forced = run(&[("CLICOLOR_FORCE", "1")], &[]);
    assert!(
        has_escapes(&forced.stdout) && has_escapes(&forced.stderr),
        "{forced}"
    );
    let no_color = run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &[]);
    assert!(
        !has_escapes(&no_color.stdout) && !has_escapes(&no_color.stderr),
        "{no_color}"
    );
    let never = run(&[("CLICOLOR_FORCE", "1")], &["--color", "never"]);
    assert!(
        !has_escapes(&never.stdout) && !has_escapes(&never.stderr),
        "{never}"
    );
    // JSON is never coloured.
    let json = run(&[], &["--color", "always", "--output", "json"]);
    assert!(!has_escapes(&json.stdout), "{json}");
}

#[test]
fn gathered_output_past_the_memory_budget_is_kept_whole() {
    let fleet = Fleet::start_one_port(4).expect("fleet");
    // About 600 KB per host: past the 64 KiB a host stream keeps in memory.
    let script = "seq 1 100000; [ $me != 127.0.0.4 ] || echo last";
    let out = invoke(&fleet, script, &["--gather"]);
    assert_eq!(out.code, 0, "exit {}: {}", out.code, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let titles: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.ends_with(')') && l.starts_with("127.0.0."))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(titles.len(), 2, "{}", out.stderr);
    assert_eq!(lines[titles[0]], "127.0.0.[2-3,5] (3)");
    assert_eq!(lines[titles[1]], "127.0.0.4 (1)");
    // Each block: the rule, then 100000 lines (and "last" for the second).
    let first: Vec<&str> = lines[titles[0] + 2..titles[1] - 1].to_vec();
    assert_eq!(first.len(), 100_000);
    assert!(first.iter().enumerate().all(|(i, l)| *l == (i + 1).to_string()));
    let second = &lines[titles[1] + 2..];
    assert_eq!(second.len(), 100_001);
    assert_eq!(second[100_000], "last");
}

#[test]
fn receive_gathers_and_writes_an_output_dir_too() {
    let fleet = Fleet::start_one_port(4).expect("fleet");
    let daemon = rjob_tests::Daemon::start(&fleet).expect("daemon");
    let script = format!("{WHOAMI}echo hello; [ $me != 127.0.0.5 ] || {{ echo odd; exit 4; }}");
    let started = daemon.invoke_job(&fleet.hosts(), "term-recv", &script, &[]);
    assert_eq!(started.code, 0, "{started}");
    assert!(daemon.wait_state("term-recv", "Failed"), "{}", daemon.log_text());
    let port = fleet.port();
    let gathered = ran(daemon.rjob().args(["receive", "term-recv", "--keep", "-b"]));
    assert_eq!(gathered.code, 0, "{gathered}");
    let titles: Vec<&str> = gathered
        .stdout
        .lines()
        .filter(|l| l.starts_with("127."))
        .collect();
    assert_eq!(
        titles,
        [
            format!("127.0.0.[2-4]:{port} (3)"),
            format!("127.0.0.5:{port} (1)")
        ],
        "{gathered}"
    );
    let json = ran(daemon
        .rjob()
        .args(["receive", "term-recv", "--keep", "-b", "-o", "json"]));
    let groups: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "group")
        .collect();
    assert_eq!(groups.len(), 2, "{json}");
    assert_eq!(groups[1]["exit_codes"], serde_json::json!([4]), "{json}");
    assert_eq!(groups[1]["stdout"], "hello\nodd\n", "{json}");

    let dir = fleet.scratch().join("recv");
    let dir_arg = dir.to_string_lossy().into_owned();
    let written = ran(daemon
        .rjob()
        .args(["receive", "term-recv", "--output-dir", &dir_arg]));
    assert_eq!(written.code, 0, "{written}");
    let label = format!("127.0.0.5:{port}");
    let stem = label.replace(':', "%3A");
    let out = std::fs::read_to_string(dir.join(format!("{stem}.out"))).expect("out file");
    assert_eq!(out, "hello\nodd\n");
    let record: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join(format!("{stem}.json")))
            .expect("json")
            .trim(),
    )
    .expect("record");
    assert_eq!(record["state"], "Failed", "{record}");
    assert_eq!(record["exit_code"], 4, "{record}");
    assert_eq!(record["host"], label.as_str());
}

#[test]
fn auto_colours_a_real_terminal_unless_no_color() {
    let fleet = Fleet::start_one_port(2).expect("fleet");
    assert!(
        std::path::Path::new("/usr/bin/script").is_file(),
        "this test needs script(1) from util-linux for a pseudo-terminal"
    );
    let rjob = rjob_tests::bin("rjob");
    let command = format!(
        "{} invoke -q -H {} --script 'echo hi; echo oops >&2'",
        rjob.display(),
        fleet.hosts()
    );
    let under_pty = |no_color: bool| {
        let mut cmd = std::process::Command::new("/usr/bin/script");
        cmd.args(["-qefc", &command, "/dev/null"])
            .env("RJOB_IDENTITY", &fleet.pki.dir)
            .env("TERM", "xterm")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("NO_COLOR");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        ran(&mut cmd)
    };
    let tty = under_pty(false);
    assert_eq!(tty.code, 0, "{tty}");
    assert!(tty.stdout.contains("127.0.0.2"), "{tty}");
    assert!(
        tty.stdout.contains("\u{1b}[32m2 Completed"),
        "a terminal is coloured: {tty}"
    );
    assert!(tty.stdout.contains("31m[stderr]"), "{tty}");
    let plain = under_pty(true);
    assert_eq!(plain.code, 0, "{plain}");
    assert!(plain.stdout.contains("2 Completed"), "{plain}");
    assert!(!has_escapes(&plain.stdout), "NO_COLOR: {plain}");
}
