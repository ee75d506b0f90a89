#![allow(clippy::unwrap_used)] // tests

use super::*;
use crate::hosts::parse_host_list;

fn expand(folded: &str) -> Vec<String> {
    let mut names: Vec<String> = parse_host_list(&[folded.to_string()])
        .unwrap()
        .into_iter()
        .map(|h| h.label())
        .collect();
    names.sort();
    names
}

#[test]
fn ranges_and_singletons() {
    assert_eq!(fold(&["web1", "web2", "web3"]), "web[1-3]");
    assert_eq!(fold(&["web1"]), "web1");
    assert_eq!(fold(&["web1", "web3", "web4", "web9"]), "web[1,3-4,9]");
    assert_eq!(fold(&["web2", "web1"]), "web[1-2]");
    assert_eq!(fold(&["web1", "web1"]), "web1");
}

#[test]
fn zero_padding_is_kept() {
    assert_eq!(fold(&["web01", "web02", "web03", "web07"]), "web[01-03,07]");
    assert_eq!(fold(&["web09", "web10", "web11"]), "web[09-11]");
    assert_eq!(fold(&["web9", "web10"]), "web[9-10]");
    // 1 and 01 are different hosts: both are kept, in runs of their own padding.
    assert_eq!(fold(&["n1", "n01", "n2", "n02"]), "n[1-2,01-02]");
    assert_eq!(expand("n[1-2,01-02]"), ["n01", "n02", "n1", "n2"]);
}

#[test]
fn mixed_names_and_addresses() {
    assert_eq!(
        fold(&["web01", "db1", "web02", "db2", "web03", "web07"]),
        "db[1-2],web[01-03,07]"
    );
    assert_eq!(
        fold(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.9"]),
        "10.0.0.[1-3],10.0.1.9"
    );
    assert_eq!(
        fold(&["rack1-node2.dc", "rack1-node3.dc", "gateway"]),
        "gateway,rack1-node[2-3].dc"
    );
    assert_eq!(fold(&["::1"]), "[::1]");
}

#[test]
fn every_dimension_folds() {
    let names = expand("rack[1-2]-node[01-03]");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(fold(&refs), "rack[1-2]-node[01-03]");
    assert_eq!(
        fold(&["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"]),
        "10.0.[0-1].[1-2]"
    );
    // The last run folds first: a valid set, not always the shortest one.
    assert_eq!(
        fold(&["a1b1c1", "a1b2c1", "a2b1c1", "a2b2c1", "a2b2c2"]),
        "a1b[1-2]c1,a2b1c1,a2b2c[1-2]"
    );
}

#[test]
fn ports_are_shown_only_when_asked() {
    let hosts = parse_host_list(&["a[1-3]:9000,b1".to_string()]).unwrap();
    assert_eq!(fold_hosts(&hosts, true), "a[1-3]:9000,b1");
    assert_eq!(fold_hosts(&hosts, false), "a[1-3],b1");
    assert_eq!(labels(&hosts), ["a1:9000", "a2:9000", "a3:9000", "b1"]);
    let same = parse_host_list(&["a[1-2]:9000".to_string()]).unwrap();
    assert_eq!(labels(&same), ["a1", "a2"]);
    let one = parse_host_list(&["a1:9000".to_string()]).unwrap();
    assert_eq!(labels(&one), ["a1:9000"]);
    assert_eq!(
        expand(&fold_hosts(&hosts, true)),
        ["a1:9000", "a2:9000", "a3:9000", "b1"]
    );
}

#[test]
fn natural_order() {
    let mut names = vec!["web10", "web2", "db1", "web02", "web1"];
    names.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(names, ["db1", "web1", "web2", "web02", "web10"]);
}

/// A small xorshift generator with a fixed seed: the property test is random but repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_name(rng: &mut Rng) -> String {
    let prefixes = ["web", "db", "n", "rack1-node", "10.0.0.", "10.0.1.", "x-", "edge"];
    let suffixes = ["", "", "", ".dc1", "-a", "b"];
    let prefix = prefixes[rng.below(prefixes.len() as u64) as usize];
    let suffix = suffixes[rng.below(suffixes.len() as u64) as usize];
    let suffix = if prefix.starts_with("10.") { "" } else { suffix };
    if prefix.starts_with("10.") {
        return format!("{prefix}{}", rng.below(256));
    }
    if rng.below(5) == 0 {
        return format!("r{}-n{:02}{suffix}", rng.below(4), rng.below(6));
    }
    match rng.below(10) {
        0 => format!("plain{}", ["", "x", "host"][rng.below(3) as usize]),
        1..=3 => format!(
            "{prefix}{:0w$}{suffix}",
            rng.below(120),
            w = 1 + rng.below(3) as usize
        ),
        _ => format!("{prefix}{}{suffix}", rng.below(40)),
    }
}

#[test]
fn fold_then_expand_gives_the_same_set() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..500 {
        let count = 1 + rng.below(60) as usize;
        let names: Vec<String> = (0..count).map(|_| random_name(&mut rng)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let folded = fold(&refs);
        let mut want = names.clone();
        want.sort();
        want.dedup();
        assert_eq!(
            expand(&folded),
            want,
            "round {round}: {names:?} folded to {folded}"
        );
        // Folding is stable: the expanded set folds to the same text.
        let again: Vec<String> = expand(&folded);
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        assert_eq!(fold(&again), folded, "round {round}");
    }
}
