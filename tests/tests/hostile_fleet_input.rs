//! Hostile and careless input to the fleet features (issue 15 points 1, 2, 7): inventory and
//! config files, `rjob hosts` expressions and `rjob pki issue-agent --hosts`. Each must give
//! one line naming what was wrong, exit 2, and no panic; sizes are checked before reading.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rjob_tests::{bin, ran, Ran};

/// `rjob` with a config directory of its own and no stray settings, in `dir`.
fn rjob(dir: &Path) -> Command {
    let mut cmd = Command::new(bin("rjob"));
    cmd.current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("RJOB_IDENTITY", dir.join("pki"))
        .env_remove("RJOB_CONFIG")
        .env_remove("RJOB_INVENTORY")
        .env_remove("RJOB_PORT")
        .stdin(Stdio::null());
    cmd
}

/// One line on stderr containing every one of `wanted`, exit 2, nothing on stdout.
fn refused(out: &Ran, wanted: &[&str]) {
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "one line: {out}");
    assert!(out.stderr.starts_with("rjob: error: "), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    for w in wanted {
        assert!(out.stderr.contains(w), "{w:?} missing: {out}");
    }
    assert_eq!(out.stdout, "", "{out}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

/// `rjob --inventory FILE hosts EXPR`.
fn hosts_with(dir: &Path, inventory: &Path, expr: &str) -> Ran {
    ran(rjob(dir).arg("--inventory").arg(inventory).args(["hosts", expr]))
}

#[test]
fn hostile_inventory_files_are_one_line_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let cases: &[(&str, &[u8], &str, &[&str])] = &[
        (
            "cyc.toml",
            b"[groups.a]\nchildren=[\"b\"]\n[groups.b]\nchildren=[\"a\"]\n",
            "@a",
            &["contains itself"],
        ),
        (
            "self.toml",
            b"[groups.a]\nchildren=[\"a\"]\n",
            "@a",
            &["@a", "contains itself"],
        ),
        (
            "unknown.toml",
            b"[groups.a]\nhosts=[\"x\"]\nbogus=1\n",
            "@a",
            &["unknown field `bogus`", "line 3"],
        ),
        (
            "port.toml",
            b"[groups.a]\nhosts=[\"x\"]\nport=70000\n",
            "@a",
            &["70000"],
        ),
        (
            "hostport.toml",
            b"[groups.a]\nhosts=[\"x:99999\"]\n",
            "@a",
            &["bad port \"99999\""],
        ),
        (
            "nul.toml",
            b"[groups.a]\nhosts=[\"x\0y\"]\n",
            "@a",
            &["nul.toml", "line 2"],
        ),
        (
            "latin1.toml",
            b"[groups.a]\nhosts=[\"\xff\xfe\"]\n",
            "@a",
            &["not UTF-8"],
        ),
        (
            "empty.toml",
            b"[groups.a]\nhosts=[\"\"]\n",
            "@a",
            &["group a", "empty host"],
        ),
        (
            "range.toml",
            b"[groups.a]\nhosts=[\"h[1-9999999]\"]\n",
            "@a",
            &["too many hosts"],
        ),
        (
            "square.toml",
            b"[groups.a]\nhosts=[\"h[1-2000][1-2000]\"]\n",
            "@a",
            &["too many hosts"],
        ),
        (
            "range.ini",
            b"[web]\nweb[01:9999999].example.com\n",
            "@web",
            &["too many hosts"],
        ),
        (
            "cyc.ini",
            b"[a:children]\nb\n[b:children]\na\n",
            "@a",
            &["contains itself"],
        ),
        ("self.ini", b"[a:children]\na\n", "@a", &["contains itself"]),
        (
            "port.ini",
            b"[web]\nh1 ansible_port=abc\n",
            "@web",
            &["line 2", "ansible_port"],
        ),
        (
            "ansible.yaml",
            b"all:\n  children:\n    a:\n      hosts: {h1: {}}\n",
            "@a",
            &["Ansible YAML"],
        ),
        (
            "flat.yaml",
            b"a: \"@b\"\nb: \"@a\"\n",
            "@a",
            &["must hold groups"],
        ),
        ("anchor.yaml", b"a: &x [*x]\n", "@a", &["anchor.yaml"]),
    ];
    for (name, text, expr, wanted) in cases {
        let path = write(dir, name, text);
        refused(&hosts_with(dir, &path, expr), wanted);
    }
    // Groups nested deeper than the limit.
    let mut deep = String::new();
    for i in 0..500 {
        deep.push_str(&format!("[groups.g{i}]\nchildren=[\"g{}\"]\n", i + 1));
    }
    deep.push_str("[groups.g500]\nhosts=[\"x\"]\n");
    let path = write(dir, "deep.toml", deep.as_bytes());
    refused(&hosts_with(dir, &path, "@g0"), &["nested more than"]);
    // Not a file, an endless one, a missing one, a huge one: refused before reading all.
    std::fs::create_dir(dir.join("adir")).expect("dir");
    refused(
        &hosts_with(dir, &dir.join("adir"), "@a"),
        &["cannot read inventory", "adir"],
    );
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).expect("symlink");
    refused(&hosts_with(dir, &dir.join("zero.toml"), "@a"), &["larger than"]);
    refused(
        &hosts_with(dir, &dir.join("missing.toml"), "@a"),
        &["missing.toml"],
    );
    let big = std::fs::File::create(dir.join("big.toml")).expect("big");
    big.set_len(1 << 30).expect("sparse 1 GiB");
    refused(&hosts_with(dir, &dir.join("big.toml"), "@a"), &["larger than"]);
}

#[test]
fn hostile_config_files_are_one_line_exit_2_naming_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let cases: &[(&str, &[&str])] = &[
        ("port = \"abc\"\n", &["port:", "line 1"]),
        ("port = [1]\n", &["port:"]),
        ("port =\n", &["port:"]),
        ("bogus = 1\n", &["bogus:", "unknown field"]),
        ("throttle_limit = -1\n", &["throttle_limit:"]),
        ("color = 3\n", &["color:"]),
        ("output = \"xml\"\n", &["output:", "xml"]),
        ("connect_timeout = \"forever\"\n", &["connect_timeout:"]),
        ("[hosts.\"[\"]\nport = 1\n", &["hosts.\"[\"", "closing ']'"]),
        ("[hosts.\"web[1-\"]\nuser = \"x\"\n", &["closing ']'"]),
        ("[hosts.\"\"]\nport = 1\n", &["empty pattern"]),
        ("[hosts.\"*\"]\nfoo = 1\n", &["hosts.\"*\"", "foo"]),
        ("[hosts.\"web*\"]\nport = 0\n", &["port 0"]),
    ];
    for (i, (text, wanted)) in cases.iter().enumerate() {
        let path = write(dir, &format!("c{i}.toml"), text.as_bytes());
        let out = ran(rjob(dir).arg("--config").arg(&path).args(["hosts", "web1"]));
        refused(&out, wanted);
        assert!(
            out.stderr.contains(&format!("c{i}.toml")),
            "names the file: {out}"
        );
    }
    write(dir, "bin.toml", b"\xff\xfe");
    refused(
        &ran(rjob(dir).args(["--config", "bin.toml", "hosts", "web1"])),
        &["not UTF-8"],
    );
    std::fs::create_dir(dir.join("adir")).expect("dir");
    refused(
        &ran(rjob(dir).args(["--config", "adir", "hosts", "web1"])),
        &["config file adir"],
    );
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).expect("symlink");
    refused(
        &ran(rjob(dir).args(["--config", "zero.toml", "hosts", "web1"])),
        &["larger than"],
    );
    // A good pattern with a class still works.
    write(dir, "ok.toml", b"[hosts.\"web[0-9]*\"]\nport = 2\n");
    let out = ran(rjob(dir).args(["--config", "ok.toml", "hosts", "web1"]));
    assert_eq!((out.code, out.stdout.as_str()), (0, "web1:2\n"), "{out}");
}

#[test]
fn hostile_host_expressions_and_pki_hosts_are_one_line_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let cases: &[(&str, &[&str])] = &[
        ("", &["no hosts given"]),
        (",,,", &["no hosts given"]),
        ("h[1-", &["unbalanced brackets"]),
        ("h[1-99999999]", &["too many hosts"]),
        ("h[5-1]", &["counts down"]),
        ("a b", &["' '"]),
        ("a\u{1b}b", &["a\\eb"]),
        ("h:0", &["bad port \"0\""]),
        ("@web", &["no inventory"]),
    ];
    for (expr, wanted) in cases {
        refused(&ran(rjob(dir).args(["hosts", expr])), wanted);
    }
    let out = ran(rjob(dir).args(["pki", "init", "pki"]));
    assert_eq!(out.code, 0, "{out}");
    for (hosts, wanted) in [
        ("", "no hosts given"),
        ("../x", "'/'"),
        ("a/b", "'/'"),
        ("..", "bad host name"),
        ("*", "bad host name"),
        ("h[1-999999]", "too many hosts"),
    ] {
        let out = ran(rjob(dir)
            .args(["pki", "issue-agent", "--ca-dir", "pki"])
            .arg(format!("--hosts={hosts}")));
        refused(&out, &[wanted]);
    }
    assert!(
        !dir.join("pki/agents").exists() && !dir.join("x").exists(),
        "nothing written"
    );
    write(dir, "hosts", b"a\0b\n");
    refused(
        &ran(rjob(dir).args(["pki", "issue-agent", "--ca-dir", "pki", "--hosts-file", "hosts"])),
        &["\\x00"],
    );
    refused(
        &ran(rjob(dir).args([
            "pki",
            "issue-agent",
            "--ca-dir",
            "pki",
            "--hosts-file",
            "/dev/zero",
        ])),
        &["larger than"],
    );
}
