//! The published JSON schema (issue 15 point 9): `rjob schema` describes every
//! `--output json` record, and the real output of each command validates against it.

use std::process::Command;

use rjob_tests::{ran, Daemon, Fleet, Ran};

/// `rjob schema [RECORD]`, parsed.
fn schema(fleet: &Fleet, record: Option<&str>) -> serde_json::Value {
    let out = ran(fleet.rjob().arg("schema").args(record));
    assert_eq!(out.code, 0, "{out}");
    serde_json::from_str(&out.stdout).expect("the schema is JSON")
}

/// Every stdout line of `out` (one JSON value each) validates against the whole document,
/// and each record of it of type RECORD (or without a type) against `rjob schema RECORD`;
/// returns the lines.
fn valid_lines(fleet: &Fleet, record: &str, out: &Ran) -> Vec<serde_json::Value> {
    let one = jsonschema::validator_for(&schema(fleet, Some(record))).expect("a schema");
    let all = jsonschema::validator_for(&schema(fleet, None)).expect("the document");
    let mut lines = Vec::new();
    for line in out.stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let errors: Vec<String> = all.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "document: {value}: {errors:?}");
        let items = match &value {
            serde_json::Value::Array(items) => items.clone(),
            _ => vec![value.clone()],
        };
        for item in &items {
            if item.get("type").is_none() || item["type"] == record {
                let errors: Vec<String> = one.iter_errors(item).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{record}: {item}: {errors:?}");
            }
        }
        lines.push(value);
    }
    assert!(!lines.is_empty(), "no {record} output: {out}");
    lines
}

fn of_type<'a>(lines: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

#[test]
fn the_schema_names_every_record_and_an_unknown_one_is_a_usage_error() {
    let fleet = Fleet::start(0).expect("fleet");
    let doc = schema(&fleet, None);
    for def in [
        "OutputRecord",
        "ResultRecord",
        "StateRecord",
        "GroupRecord",
        "HostRecord",
    ] {
        assert!(doc["$defs"][def].is_object(), "{def}");
    }
    for def in ["JobRecord", "WaitRecord", "StartedRecord", "Listed"] {
        assert!(doc["$defs"][def].is_object(), "{def}");
    }
    jsonschema::validator_for(&doc).expect("a valid schema");
    let out = ran(fleet.rjob().args(["schema", "nope"]));
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(out.stderr.contains("no record named \"nope\""), "{out}");
}

#[test]
fn invoke_output_results_and_groups_validate_with_null_for_what_is_absent() {
    let fleet = Fleet::start(3).expect("fleet");
    let script = "echo out; echo err >&2; printf '\\377\\n'; [ $(hostname) ] && exit 3";
    let out = ran(fleet
        .rjob()
        .args(["invoke", "-H", &fleet.hosts(), "-o", "json", "-s", script]));
    assert_eq!(out.code, 1, "{out}");
    let lines = valid_lines(&fleet, "output", &out);
    let _ = valid_lines(&fleet, "result", &out);
    let outputs = of_type(&lines, "output");
    assert_eq!(outputs.len(), 9, "{}", out.stdout);
    assert!(
        outputs.iter().any(|o| o["data_base64"] == "/w=="),
        "{}",
        out.stdout
    );
    let results = of_type(&lines, "result");
    assert_eq!(results.len(), 3);
    for r in results {
        assert_eq!(r["exit_code"], 3, "{r}");
        assert!(r["signal"].is_null(), "null, not \"\" or 0: {r}");
    }

    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "-o",
        "json",
        "--gather",
        "-s",
        "echo same",
    ]));
    assert_eq!(out.code, 0, "{out}");
    let lines = valid_lines(&fleet, "group", &out);
    let groups = of_type(&lines, "group");
    assert_eq!(groups.len(), 1, "{}", out.stdout);
    assert_eq!(groups[0]["exit_codes"], serde_json::json!([0, 0, 0]));
    for r in of_type(&lines, "result") {
        assert!(r["error"].is_null(), "a completed host has no error: {r}");
    }
}

#[test]
fn jobs_wait_started_and_receive_records_validate_and_counts_are_numbers() {
    let fleet = Fleet::start(2).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let out = daemon.invoke_job(&fleet.hosts(), "schema-job", "echo hi", &["-o", "json"]);
    assert_eq!(out.code, 0, "{out}");
    let started = valid_lines(&fleet, "started", &out);
    assert_eq!(started[0]["children"], 2, "{out}");

    let out = ran(daemon.rjob().args(["wait", "schema-job", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let waited = valid_lines(&fleet, "wait", &out);
    assert_eq!(waited[0]["timed_out"], false);

    let out = ran(daemon.rjob().args(["jobs", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let jobs = valid_lines(&fleet, "job", &out);
    let job = &jobs[0][0];
    assert_eq!((&job["done"], &job["total"]), (&2.into(), &2.into()), "{job}");
    assert!(job["ended_at"].is_string(), "{job}");
    assert!(job["location"].is_string(), "{job}");
    for child in job["children"].as_array().expect("children") {
        assert!(child["reason"].is_null(), "null, never \"\": {child}");
        assert_eq!(child["exit_code"], 0, "{child}");
    }

    let out = ran(daemon
        .rjob()
        .args(["receive", "schema-job", "--keep", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let lines = valid_lines(&fleet, "output", &out);
    assert_eq!(of_type(&lines, "output").len(), 2, "{}", out.stdout);
    let out = ran(daemon
        .rjob()
        .args(["receive", "schema-job", "--follow", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let lines = valid_lines(&fleet, "result", &out);
    let _ = valid_lines(&fleet, "state", &out);
    assert_eq!(of_type(&lines, "result").len(), 2, "{}", out.stdout);
}

#[test]
fn hosts_and_pki_list_records_validate() {
    let fleet = Fleet::start(1).expect("fleet");
    let config = fleet.scratch().join("config");
    std::fs::create_dir_all(config.join("rjob")).expect("config dir");
    std::fs::write(
        config.join("rjob/inventory.toml"),
        "[groups.web]\nhosts = [\"web[1-2]\"]\nuser = \"deploy\"\n[groups.db]\nhosts = [\"db1\"]\n",
    )
    .expect("inventory");
    let mut cmd: Command = fleet.rjob();
    cmd.env("XDG_CONFIG_HOME", &config)
        .env_remove("RJOB_CONFIG")
        .env_remove("RJOB_INVENTORY")
        .args(["hosts", "@web,@db", "-o", "json"]);
    let out = ran(&mut cmd);
    assert_eq!(out.code, 0, "{out}");
    let hosts = valid_lines(&fleet, "host", &out);
    assert_eq!(hosts.len(), 3, "{out}");
    assert_eq!(hosts[0]["user"], "deploy", "{out}");
    let db = hosts.iter().find(|h| h["name"] == "db1").expect("db1");
    assert!(db["user"].is_null(), "null, never \"\": {db}");

    let out = ran(fleet.rjob().args(["pki", "list", "-o", "json"]));
    assert_eq!(out.code, 0, "{out}");
    let listed = valid_lines(&fleet, "certificate", &out);
    assert!(listed.iter().any(|c| c["kind"] == "ca"), "{out}");
}
