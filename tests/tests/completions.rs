//! Completions and man pages (issue 15 point 10).

use std::process::Command;

use rjob_tests::{bin, ran, Daemon, Fleet};

#[test]
fn the_bash_completion_script_loads_and_offers_jobs_and_groups() {
    let rjob = bin("rjob");
    let dir = rjob.parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = ran(Command::new("bash")
        .arg("-c")
        .arg("source <(rjob completions bash) && complete -p rjob")
        .env("PATH", &path));
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("_rjob_dynamic") && out.stdout.contains("rjob"),
        "{out}"
    );

    let fleet = Fleet::start(1).expect("fleet");
    let daemon = Daemon::start(&fleet).expect("daemon");
    let made = daemon.invoke_job(&fleet.hosts(), "nightly-patch", "true", &[]);
    assert_eq!(made.code, 0, "{made}");
    let inventory = fleet.scratch().join("inventory.toml");
    std::fs::write(&inventory, "[groups.webfarm]\nhosts = [\"w1\"]\n").expect("write");
    // What bash offers after `rjob wait n<TAB>` and `rjob invoke -H @w<TAB>`.
    let complete = |words: &str| {
        let script = format!(
            "source <(rjob completions bash); COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _rjob_dynamic rjob; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        ran(Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PATH", &path)
            .env("RJOB_STATE_DIR", &daemon.state_dir)
            .env("RJOB_INVENTORY", &inventory))
    };
    let out = complete("rjob wait n");
    assert_eq!(out.stdout.trim(), "nightly-patch", "{out}");
    let out = complete("rjob invoke -H @w");
    assert_eq!(out.stdout.trim(), "@webfarm", "{out}");
}

#[test]
fn zsh_fish_scripts_and_man_pages_are_written() {
    for shell in ["zsh", "fish"] {
        let out = ran(Command::new(bin("rjob")).args(["completions", shell]));
        assert_eq!(out.code, 0, "{out}");
        assert!(out.stdout.contains("invoke"), "{shell}: {out}");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let out = ran(Command::new(bin("rjob")).arg("man").arg(tmp.path().join("man1")));
    assert_eq!(out.code, 0, "{out}");
    for page in ["rjob.1", "rjob-invoke.1", "rjob-hosts.1"] {
        let text = std::fs::read_to_string(tmp.path().join("man1").join(page)).expect(page);
        assert!(text.contains(".TH"), "{page}");
    }
}
