use std::path::Path;

use super::*;

#[test]
fn host_rules_match_like_ssh_config_first_value_wins() {
    let config = Config::parse(
        Path::new("c.toml"),
        "port = 8000\n[hosts.\"web1\"]\nuser = \"one\"\n[hosts.\"web*\"]\nport = 9000\nuser = \"all\"\n",
    )
    .expect("parse");
    let web1 = config.for_host("web1");
    assert_eq!((web1.port, web1.user.as_deref()), (Some(9000), Some("one")));
    let db = config.for_host("db1");
    assert_eq!((db.port, db.user), (Some(8000), None));
}

#[test]
fn a_bad_file_names_the_file_and_the_key() {
    for (text, key) in [
        ("prot = 1\n", "prot"),
        ("output = \"yaml\"\n", "output"),
        ("throttle_limit = 999999999\n", "throttle_limit"),
        ("[hosts.\"a\"]\nprt = 1\n", "hosts.\"a\""),
    ] {
        let e = Config::parse(Path::new("/x/config.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(
            e.starts_with(&format!("config file /x/config.toml: {key}")),
            "{e}"
        );
    }
}
