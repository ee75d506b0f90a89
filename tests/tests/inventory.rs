//! Inventories (issue 15 point 1): `-H @group`, `-x`, `--list-hosts`, `rjob hosts`, against
//! real agents, from rjob's TOML, an Ansible INI inventory and a ClusterShell groups file.

use std::process::Command;

use rjob_tests::{ran, Fleet, Ran};

/// `rjob` with this fleet's identity and a config directory of its own (no stray config).
fn rjob(fleet: &Fleet) -> Command {
    let mut cmd = fleet.rjob();
    cmd.env("XDG_CONFIG_HOME", fleet.scratch().join("config"))
        .env_remove("RJOB_CONFIG")
        .env_remove("RJOB_INVENTORY")
        .env_remove("RJOB_PORT");
    cmd
}

fn hosts_ran(out: &Ran) -> Vec<String> {
    let mut hosts: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(h, _)| h.to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[test]
fn an_ansible_inventory_with_children_and_ansible_port_selects_and_excludes_real_agents() {
    let fleet = Fleet::start(3).expect("fleet");
    let [a, b, c] = [0, 1, 2].map(|i| fleet.agents[i].addr);
    let ini = format!(
        "# an Ansible inventory, as it is\n\
         [web]\n\
         front1 ansible_host={} ansible_port={}\n\
         front2 ansible_host={} ansible_port={} ansible_user=nobody\n\
         [db]\n\
         {} ansible_port={}   # by address\n\
         [canary]\n\
         front2\n\
         [prod:children]\n\
         web\n\
         db\n\
         [db:vars]\n\
         tier=back\n",
        a.ip(),
        a.port(),
        b.ip(),
        b.port(),
        c.ip(),
        c.port()
    );
    let path = fleet.scratch().join("hosts.ini");
    std::fs::write(&path, ini).expect("write inventory");

    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&path)
        .args(["invoke", "-H", "@prod", "-x", "@canary", "-s", "echo hi"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(hosts_ran(&out), vec![a.to_string(), c.to_string()], "{out}");
    assert!(
        !out.stdout.contains(&b.to_string()),
        "the canary is excluded: {out}"
    );

    // Excluding a host by its inventory name, and selecting through the implicit `all`.
    // front2's ansible_user (nobody) is not in the test policy: --user wins over it.
    let me = ran(Command::new("id").arg("-un")).stdout.trim().to_string();
    let out = ran(rjob(&fleet)
        .env("RJOB_INVENTORY", &path)
        .args(["invoke", "-H", "@all", "-x", "front1", "-u", &me, "-s", "echo hi"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(hosts_ran(&out), vec![b.to_string(), c.to_string()], "{out}");

    // rjob hosts -v shows what the inventory gives each host.
    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&path)
        .args(["hosts", "@prod", "-v"]));
    assert_eq!(out.code, 0, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].contains("name=front2") && lines[1].contains("user=nobody"),
        "{out}"
    );
    assert!(lines[2].contains("tier=back"), "{out}");
}

#[test]
fn list_hosts_prints_the_expanded_list_and_contacts_nothing() {
    let fleet = Fleet::start(0).expect("fleet");
    let path = fleet.scratch().join("inventory.toml");
    std::fs::write(
        &path,
        "[groups.web]\nhosts = [\"web[01-04]\"]\n[groups.canary]\nhosts = [\"web03\"]\n\
         [groups.prod]\nchildren = [\"web\"]\nhosts = [\"db1:8443\"]\n",
    )
    .expect("write");
    // The default place: inventory.toml in $XDG_CONFIG_HOME/rjob.
    let config_dir = fleet.scratch().join("config/rjob");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    std::fs::copy(&path, config_dir.join("inventory.toml")).expect("copy");

    // Nothing listens on these names: --list-hosts must not dial them, and needs no script.
    let out = ran(rjob(&fleet).args(["invoke", "-H", "@prod", "-x", "@canary", "--list-hosts"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "db1:8443\nweb01\nweb02\nweb04\n", "{out}");

    let out = ran(rjob(&fleet).args(["hosts", "@prod", "--fold"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "db1:8443,web[01-04]\n", "{out}");

    let out = ran(rjob(&fleet).args(["hosts", "@prod", "-o", "json"]));
    let first: serde_json::Value =
        serde_json::from_str(out.stdout.lines().next().unwrap_or("")).expect("json");
    assert_eq!(first["host"], "db1:8443", "{out}");
    assert_eq!(first["port"], 8443, "{out}");

    // Plain ranges need no inventory: nodeset -e.
    let out = ran(rjob(&fleet).args(["hosts", "n[1-3]", "-x", "n2"]));
    assert_eq!(out.stdout, "n1\nn3\n", "{out}");
}

#[test]
fn a_clustershell_groups_file_and_group_ports_reach_real_agents() {
    let fleet = Fleet::start_one_port(3).expect("fleet");
    let port = fleet.port();
    let yaml = fleet.scratch().join("groups.yaml");
    std::fs::write(
        &yaml,
        "roles:\n  web: '127.0.0.[2-3]'\n  all: '@web,@racks:rack1'\nracks:\n  rack1: ['127.0.0.4']\n",
    )
    .expect("write");
    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&yaml)
        .args(["hosts", "@all", "--fold"]));
    assert_eq!(out.stdout, "127.0.0.[2-4]\n", "{out}");
    // The port comes from the config file: the YAML has none.
    let config = fleet.scratch().join("config.toml");
    std::fs::write(&config, format!("port = {port}\n")).expect("write");
    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&yaml)
        .arg("--config")
        .arg(&config)
        .args(["invoke", "-H", "@all", "-x", "@racks:rack1", "-s", "echo hi"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of("127.0.0.2"), vec!["hi"], "{out}");
    assert_eq!(out.lines_of("127.0.0.3"), vec!["hi"], "{out}");
    assert!(out.lines_of("127.0.0.4").is_empty(), "{out}");

    // rjob's TOML: the group's port.
    let toml = fleet.scratch().join("inv.toml");
    std::fs::write(
        &toml,
        format!("[groups.web]\nhosts = [\"127.0.0.[2-4]\"]\nport = {port}\n"),
    )
    .expect("write");
    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&toml)
        .args(["invoke", "-H", "@web", "-s", "echo hi"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of("127.0.0.4"), vec!["hi"], "{out}");
}

#[test]
fn inventory_mistakes_are_one_line_exit_2() {
    let fleet = Fleet::start(0).expect("fleet");
    let dir = fleet.scratch();
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        (
            "inv.toml",
            "[groups.a]\nhosts = [\"x\"]\n",
            vec!["hosts", "@b"],
            "no group @b",
        ),
        (
            "inv.toml",
            "[groups.a]\nhots = [\"x\"]\n",
            vec!["hosts", "@a"],
            "unknown field `hots`",
        ),
        (
            "inv.toml",
            "[groups.a]\nchildren = [\"b\"]\n[groups.b]\nchildren = [\"a\"]\n",
            vec!["hosts", "@a"],
            "contains itself",
        ),
        (
            "hosts.ini",
            "[web]\nweb[a:f]\n",
            vec!["hosts", "@web"],
            "letter ranges",
        ),
        (
            "hosts.ini",
            "[web]\nweb1 ansible_port=99999\n",
            vec!["hosts", "@web"],
            "line 2",
        ),
        (
            "inv.toml",
            "[groups.a]\nhosts = [\"x\"]\n",
            vec!["hosts", "@a", "-x", "x"],
            "leaves no hosts",
        ),
    ];
    for (name, text, args, naming) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = ran(rjob(&fleet).arg("--inventory").arg(&path).args(&args));
        assert_eq!(out.code, 2, "{text}: {out}");
        assert_eq!(out.stderr.lines().count(), 1, "{text}: {out}");
        assert!(
            out.stderr.contains(naming),
            "{text}: should say {naming:?}: {out}"
        );
    }
    // A group without any inventory says where one goes.
    let out = ran(rjob(&fleet).args(["hosts", "@web"]));
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("--inventory FILE"), "{out}");
}
