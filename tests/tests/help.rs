//! What users read first: the `--help` texts, compared with the committed snapshots in
//! `tests/snapshots/`. After a deliberate change, `RJOB_UPDATE_SNAPSHOTS=1 cargo test --test help`
//! rewrites them; review the diff like code.

use std::path::PathBuf;

use rjob_tests::{bin, ran};

fn check(binary: &str, args: &[&str], snapshot: &str) {
    let out = ran(std::process::Command::new(bin(binary))
        .args(args)
        .env("COLUMNS", "100"));
    assert_eq!(out.code, 0, "{out}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(snapshot);
    if std::env::var_os("RJOB_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &out.stdout).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        out.stdout == expected,
        "{binary} {args:?} changed; if that is meant, run RJOB_UPDATE_SNAPSHOTS=1 cargo test --test help\n--- now\n{}\n--- snapshot {}\n{expected}",
        out.stdout,
        path.display()
    );
}

#[test]
fn help_texts_match_their_snapshots() {
    check("rjob", &["--help"], "rjob.txt");
    for command in ["invoke", "start", "jobs", "wait", "receive", "remove", "serve"] {
        check("rjob", &[command, "--help"], &format!("rjob-{command}.txt"));
    }
    check(
        "rjob",
        &["pki", "issue-agent", "--help"],
        "rjob-pki-issue-agent.txt",
    );
    check("rjob-agent", &["--help"], "rjob-agent.txt");
}
