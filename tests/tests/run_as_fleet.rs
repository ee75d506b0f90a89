//! Each host's own run-as user (issue 15 points 1 and 2): `user` in an inventory's groups,
//! `ansible_user`, the config's `[hosts."pattern"]` user, `RJOB_USER` and `--user` over them,
//! and a job's per-host users kept across a daemon restart and a rerun. Real users, real
//! agents, `id -un` on each: these tests create users, so they need root (CI has it).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rjob_tests::{ran, users, wait_for, Daemon, Fleet, Ran, WAIT};

const WEB: &str = "rjobt_fo_web";
const DB: &str = "rjobt_fo_db";

/// Two agents whose policy lets the test controller run as either test user.
fn fleet() -> Fleet {
    static USERS: OnceLock<()> = OnceLock::new();
    USERS.get_or_init(|| {
        users::require_root("the run-as tests create users");
        for user in [WEB, DB] {
            users::ensure_user(user, None);
        }
    });
    let policy = format!("[[allow]]\nidentity = \"rjob-controller\"\nusers = [\"{WEB}\", \"{DB}\"]\n");
    Fleet::start_policy(2, &policy, |_| {}).expect("fleet")
}

/// `rjob` with no config or inventory but the ones a test gives.
fn rjob(fleet: &Fleet) -> Command {
    let mut cmd = fleet.rjob();
    cmd.env("XDG_CONFIG_HOME", fleet.scratch().join("config"))
        .env_remove("RJOB_CONFIG")
        .env_remove("RJOB_INVENTORY")
        .env_remove("RJOB_USER");
    cmd
}

/// An inventory whose group `web` (agent 0) runs as WEB and `db` (agent 1) as DB.
fn inventory(fleet: &Fleet) -> PathBuf {
    let path = fleet.scratch().join("inventory.toml");
    let text = format!(
        "[groups.web]\nhosts = [\"{}\"]\nuser = \"{WEB}\"\n\n[groups.db]\nhosts = [\"{}\"]\nuser = \"{DB}\"\n",
        fleet.agents[0].host(),
        fleet.agents[1].host()
    );
    std::fs::write(&path, text).expect("write inventory");
    path
}

/// Who each agent ran as, by `id -un`.
fn ran_as(fleet: &Fleet, out: &Ran) -> [Vec<String>; 2] {
    [0, 1].map(|i| out.lines_of(&fleet.agents[i].host()))
}

#[test]
fn each_group_runs_as_its_own_user_and_list_hosts_shows_it() {
    let fleet = fleet();
    let inv = inventory(&fleet);
    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&inv)
        .args(["invoke", "-H", "@web,@db", "-s", "id -un"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran_as(&fleet, &out), [vec![WEB], vec![DB]], "{out}");

    let out =
        ran(rjob(&fleet)
            .arg("--inventory")
            .arg(&inv)
            .args(["invoke", "-H", "@web,@db", "--list-hosts"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout,
        format!(
            "{}  user={WEB}\n{}  user={DB}\n",
            fleet.agents[0].host(),
            fleet.agents[1].host()
        ),
        "{out}"
    );

    // An Ansible INI inventory's ansible_user, as it is.
    let ini = fleet.scratch().join("hosts.ini");
    let [a, b] = [0, 1].map(|i| fleet.agents[i].addr);
    std::fs::write(
        &ini,
        format!(
            "[web]\nfront ansible_host={} ansible_port={} ansible_user={WEB}\n[db]\nback ansible_host={} ansible_port={}\n[db:vars]\nansible_user={DB}\n",
            a.ip(),
            a.port(),
            b.ip(),
            b.port()
        ),
    )
    .expect("write ini");
    let out = ran(rjob(&fleet)
        .arg("--inventory")
        .arg(&ini)
        .args(["invoke", "-H", "@all", "-s", "id -un"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran_as(&fleet, &out), [vec![WEB], vec![DB]], "{out}");
}

#[test]
fn the_config_gives_users_by_pattern_and_the_environment_and_the_flag_win() {
    let fleet = fleet();
    let a = fleet.agents[0].addr.ip().to_string();
    let config = fleet.scratch().join("config.toml");
    // ssh_config: the first matching table wins; agent 1 matches only the second.
    std::fs::write(
        &config,
        format!("[hosts.\"{a}\"]\nuser = \"{WEB}\"\n\n[hosts.\"127.0.0.*\"]\nuser = \"{DB}\"\n"),
    )
    .expect("write config");
    let invoke = |cmd: &mut Command, extra: &[&str]| {
        ran(cmd
            .arg("--config")
            .arg(&config)
            .args(["invoke", "-H", &fleet.hosts(), "-s", "id -un"])
            .args(extra))
    };
    let out = invoke(&mut rjob(&fleet), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran_as(&fleet, &out), [vec![WEB], vec![DB]], "the file: {out}");

    let out = invoke(rjob(&fleet).env("RJOB_USER", DB), &[]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran_as(&fleet, &out), [vec![DB], vec![DB]], "RJOB_USER: {out}");

    let out = invoke(rjob(&fleet).env("RJOB_USER", DB), &["--user", WEB]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran_as(&fleet, &out), [vec![WEB], vec![WEB]], "--user: {out}");

    // The inventory's user is the host's own: it wins over the config's pattern.
    let inv = inventory(&fleet);
    let out = ran(rjob(&fleet)
        .arg("--config")
        .arg(&config)
        .arg("--inventory")
        .arg(&inv)
        .args(["invoke", "-H", "@db", "-s", "id -un"]));
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.lines_of(&fleet.agents[1].host()), vec![DB], "{out}");
}

#[test]
fn one_password_for_hosts_of_two_users_is_refused_naming_them() {
    let fleet = fleet();
    let inv = inventory(&fleet);
    let password = fleet.scratch().join("password");
    std::fs::write(&password, "secret\n").expect("password");
    let marker = fleet.scratch().join("ran");
    for as_job in [false, true] {
        let mut cmd = rjob(&fleet);
        cmd.arg("--inventory")
            .arg(&inv)
            .args(["invoke", "-H", "@web,@db"]);
        if as_job {
            cmd.arg("--as-job")
                .env("RJOB_STATE_DIR", fleet.scratch().join("state"));
        }
        let out = ran(cmd
            .arg("--password-file")
            .arg(&password)
            .args(["-s", &format!("touch {}", marker.display())]));
        assert_eq!(out.code, 2, "{out}");
        assert!(
            out.stderr.contains(&format!("2 users ({DB}, {WEB})")) && out.stderr.contains("--user"),
            "{out}"
        );
        assert!(!marker.exists(), "nothing ran");
    }
}

/// A directory every test user can write (sticky, as /tmp), for the markers of the script.
fn shared_dir(fleet: &Fleet) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/rjt-fleetops-{}", fleet.agents[0].addr.port()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    dir
}

/// Everything job `job` printed, by `rjob receive --keep`.
fn received(daemon: &Daemon, job: &str) -> Ran {
    ran(daemon.rjob().args(["receive", job, "--keep"]))
}

fn wait_file(path: &Path) -> bool {
    wait_for(WAIT, || path.exists())
}

#[test]
fn a_job_keeps_each_hosts_user_across_a_daemon_restart_and_a_rerun() {
    let fleet = fleet();
    let inv = inventory(&fleet);
    let mut daemon = Daemon::start(&fleet).expect("daemon");
    let dir = shared_dir(&fleet);
    let (go, first) = (dir.join("go"), dir.join("first-started"));
    let _ = std::fs::remove_file(&go);
    let _ = std::fs::remove_file(&first);
    // One at a time: the second host starts only after the restart, from the store.
    let script = format!(
        "touch {first} 2>/dev/null; while [ ! -e {go} ]; do sleep 0.1; done; id -un",
        first = first.display(),
        go = go.display()
    );
    let out = ran(daemon
        .rjob()
        .env("XDG_CONFIG_HOME", fleet.scratch().join("config"))
        .env_remove("RJOB_USER")
        .arg("--inventory")
        .arg(&inv)
        .args([
            "invoke",
            "-H",
            "@web,@db",
            "--as-job",
            "--job-name",
            "users",
            "-t",
            "1",
            "-s",
            &script,
        ]));
    assert_eq!(out.code, 0, "{out}");
    assert!(wait_file(&first), "the first host started: {}", daemon.log_text());
    daemon.restart().expect("restart");
    std::fs::write(&go, "").expect("go");
    assert!(daemon.wait_state("users", "Completed"), "{}", daemon.log_text());
    let out = received(&daemon, "users");
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(ran_as(&fleet, &out), [vec![WEB], vec![DB]], "{out}");

    // A rerun runs each host as the user it ran as.
    let out = ran(daemon
        .rjob()
        .args(["rerun", "users", "--all", "--job-name", "again"]));
    assert_eq!(out.code, 0, "{out}");
    assert!(daemon.wait_state("again", "Completed"), "{}", daemon.log_text());
    let out = received(&daemon, "again");
    assert_eq!(ran_as(&fleet, &out), [vec![WEB], vec![DB]], "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
