use std::collections::HashSet;
use std::path::Path;

use super::select::{resolve, NoDefaults};
use super::*;

fn names(inventory: &Inventory, specs: &[&str], exclude: &[&str]) -> Vec<String> {
    let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
    let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
    resolve(&specs, &exclude, Some(inventory), &NoDefaults)
        .expect("resolve")
        .into_iter()
        .map(|t| t.host.label())
        .collect()
}

#[test]
fn ansible_ranges_children_and_vars() {
    let inv = ini::parse(
        Path::new("h.ini"),
        "lone\n[web]\nweb[01:03] ansible_port=8443\n[db]\ndb1\n[p:children]\nweb\ndb\n[db:vars]\nansible_port=7000\n",
    )
    .expect("parse");
    assert_eq!(
        names(&inv, &["@p"], &["web02"]),
        ["web01:8443", "web03:8443", "db1:7000"]
    );
    assert_eq!(names(&inv, &["@ungrouped"], &[]), ["lone"]);
    assert!(inv.groups["all"].children.contains(&"p".to_string()));
}

#[test]
fn child_group_settings_win_over_the_parents_and_the_host_over_both() {
    let inv = toml::parse(
        Path::new("i.toml"),
        "[groups.outer]\nchildren = [\"inner\"]\nport = 1\nuser = \"a\"\n\
         [groups.inner]\nhosts = [\"h1\", \"h2\"]\nport = 2\n[hosts.h2]\nport = 3\n",
    )
    .expect("parse");
    let wanted: HashSet<String> = ["h1", "h2"].map(String::from).into();
    let s = inv.settings_for(&wanted).expect("settings");
    assert_eq!((s["h1"].port, s["h1"].user.as_deref()), (Some(2), Some("a")));
    assert_eq!(s["h2"].port, Some(3));
    // A port in -H beats them all.
    assert_eq!(names(&inv, &["h1:9"], &[]), ["h1:9"]);
}

#[test]
fn clustershell_sources_and_the_default_source() {
    let inv = yaml::parse(
        Path::new("g.yaml"),
        "a:\n  x: 'n[1-2]'\n  y: '@x,@b:z'\nb:\n  z: m1\n",
    )
    .expect("parse");
    assert_eq!(names(&inv, &["@y"], &[]), ["n1", "n2", "m1"]);
    assert_eq!(names(&inv, &["@b:z"], &[]), ["m1"]);
    assert!(yaml::parse(Path::new("g.yaml"), "a:\n  x: 'n[1-4]!n2'\n").is_err());
}

#[test]
fn an_entry_names_its_port_only_with_a_colon_outside_brackets() {
    use crate::hosts::entry_has_port;
    for (entry, has) in [
        ("web1", false),
        ("web1:8443", true),
        ("web[01-20]:8443", true),
        ("web[01-20]", false),
        ("[::1]", false),
        ("[::1]:7443", true),
        ("fe80::1", false),
    ] {
        assert_eq!(entry_has_port(entry), has, "{entry}");
    }
}

#[test]
fn excluding_by_name_removes_every_port_and_by_name_port_only_that_one() {
    let inv = Inventory::default();
    let specs = vec!["a:1,a:2,b".to_string()];
    let all = |x: &str| -> Vec<String> {
        resolve(&specs, &[x.to_string()], Some(&inv), &NoDefaults)
            .map(|t| t.into_iter().map(|t| t.host.label()).collect())
            .unwrap_or_default()
    };
    assert_eq!(all("a"), ["b"]);
    assert_eq!(all("a:2"), ["a:1", "b"]);
}
