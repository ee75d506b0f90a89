//! The controller's config file (issue 15 point 2): each level of file < RJOB_* < flags, seen
//! in what `rjob invoke` does against real agents and in `rjob config show`.

use std::path::Path;
use std::process::Command;

use rjob_tests::{bin, ran, Fleet};

/// `rjob` with no identity, config or inventory but the ones a test gives.
fn bare(config_home: &Path) -> Command {
    let mut cmd = Command::new(bin("rjob"));
    cmd.env("XDG_CONFIG_HOME", config_home)
        .env("HOME", config_home)
        .env_remove("RJOB_IDENTITY")
        .env_remove("RJOB_CONFIG")
        .env_remove("RJOB_INVENTORY")
        .env_remove("RJOB_PORT")
        .env_remove("RJOB_OUTPUT")
        .env_remove("RJOB_THROTTLE_LIMIT")
        .env_remove("RJOB_CONNECT_TIMEOUT")
        .env_remove("RJOB_COLOR")
        .stdin(std::process::Stdio::null());
    cmd
}

fn is_json(stdout: &str) -> bool {
    !stdout.is_empty()
        && stdout
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
}

#[test]
fn file_then_environment_then_flags_decide_what_invoke_does() {
    let fleet = Fleet::start_one_port(2).expect("fleet");
    let home = fleet.scratch().join("home");
    let dir = home.join("rjob");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The default place, $XDG_CONFIG_HOME/rjob/config.toml: the port, the identity, the output.
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "port = {}\nidentity = {:?}\noutput = \"json\"\nthrottle_limit = 5\n",
            fleet.port(),
            fleet.pki.dir.display().to_string()
        ),
    )
    .expect("write config");
    let invoke = |cmd: &mut Command, extra: &[&str]| {
        ran(cmd
            .args(["invoke", "-H", "127.0.0.2,127.0.0.3", "-s", "echo hi", "-q"])
            .args(extra))
    };

    // File: the port and identity reach the agents, the output is JSON.
    let out = invoke(&mut bare(&home), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(is_json(&out.stdout), "output = json from the file: {out}");

    // Environment beats the file.
    let out = invoke(bare(&home).env("RJOB_OUTPUT", "text"), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of("127.0.0.2"), vec!["hi"], "RJOB_OUTPUT=text: {out}");
    // A wrong port in RJOB_PORT beats the file's right one: nothing answers there.
    let out = invoke(bare(&home).env("RJOB_PORT", "1"), &["--connect-timeout", "2s"]);
    assert_ne!(out.code, 0, "RJOB_PORT=1 is dialled: {out}");

    // Flags beat the environment.
    let out = invoke(bare(&home).env("RJOB_OUTPUT", "text"), &["-o", "json"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(is_json(&out.stdout), "-o json beats RJOB_OUTPUT: {out}");
    let port = fleet.port().to_string();
    let out = ran(bare(&home).env("RJOB_PORT", "1").args([
        "invoke",
        "-H",
        &format!("127.0.0.2:{port}"),
        "-s",
        "echo hi",
        "-o",
        "text",
    ]));
    assert_eq!(out.code, 0, "a port in -H beats RJOB_PORT: {out}");
}

#[test]
fn config_show_says_where_each_setting_came_from() {
    let fleet = Fleet::start(0).expect("fleet");
    let home = fleet.scratch();
    let file = home.join("my.toml");
    std::fs::write(
        &file,
        "throttle_limit = 5\nconnect_timeout = \"3s\"\nport = 8000\n[hosts.\"web*\"]\nport = 9000\nuser = \"deploy\"\n",
    )
    .expect("write");
    let show = |cmd: &mut Command, extra: &[&str]| {
        let out = ran(cmd
            .arg("--config")
            .arg(&file)
            .args(["config", "show"])
            .args(extra));
        assert_eq!(out.code, 0, "{out}");
        out.stdout
    };
    let line = |text: &str, key: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let text = show(&mut bare(&home), &[]);
    assert!(
        line(&text, "throttle_limit").starts_with("throttle_limit 5 (file "),
        "{text}"
    );
    assert!(
        line(&text, "connect_timeout").starts_with("connect_timeout 3s (file "),
        "{text}"
    );
    assert_eq!(line(&text, "output"), "output text (default)", "{text}");
    assert!(
        line(&text, "hosts.\"web*\"").contains("port=9000 user=deploy"),
        "{text}"
    );
    let text = show(
        bare(&home)
            .env("RJOB_THROTTLE_LIMIT", "7")
            .env("RJOB_PORT", "8100"),
        &[],
    );
    assert_eq!(
        line(&text, "throttle_limit"),
        "throttle_limit 7 (env RJOB_THROTTLE_LIMIT)",
        "{text}"
    );
    assert_eq!(line(&text, "port"), "port 8100 (env RJOB_PORT)", "{text}");
    let text = show(bare(&home).env("RJOB_THROTTLE_LIMIT", "7"), &["-t", "9"]);
    assert_eq!(
        line(&text, "throttle_limit"),
        "throttle_limit 9 (flag --throttle-limit)",
        "{text}"
    );

    // The [hosts."pattern"] port and user apply to the hosts they match.
    let out = ran(bare(&home)
        .arg("--config")
        .arg(&file)
        .args(["hosts", "-v", "web1,db1"]));
    assert_eq!(
        out.stdout, "web1:9000  port=9000  user=deploy\ndb1:8000  port=8000\n",
        "{out}"
    );
}

#[test]
fn a_bad_config_file_is_one_line_naming_the_file_and_the_key() {
    let fleet = Fleet::start(0).expect("fleet");
    let home = fleet.scratch();
    for (text, key) in [
        ("throtle_limit = 5\n", "throtle_limit"),
        ("connect_timeout = \"soon\"\n", "connect_timeout"),
        ("color = \"purple\"\n", "color"),
        ("port = 0\n", "port"),
    ] {
        let file = home.join("bad.toml");
        std::fs::write(&file, text).expect("write");
        let out = ran(bare(&home).arg("--config").arg(&file).args(["hosts", "a"]));
        assert_eq!(out.code, 2, "{text}: {out}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{text}: {out}");
        let start = format!("rjob: error: config file {}: {key}", file.display());
        assert!(lines[0].starts_with(&start), "{text}: {out}");
    }
    // --config names a file that must be there.
    let out = ran(bare(&home).args(["--config", "/nonexistent/rjob.toml", "hosts", "a"]));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("/nonexistent/rjob.toml"), "{out}");
}
