//! Unit tests of `hosts`.
use super::*;

fn specs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    parse_host_list(&specs(list))
        .unwrap_or_else(|e| panic!("{list:?} should parse: {e}"))
        .into_iter()
        .map(|h| h.authority())
        .collect()
}

fn err(list: &[&str]) -> HostError {
    match parse_host_list(&specs(list)) {
        Ok(hosts) => panic!("{list:?} should fail, got {hosts:?}"),
        Err(e) => e,
    }
}

#[test]
fn plain_names_commas_and_repeated_flags() {
    assert_eq!(
        names(&["a, b, c ", "d"]),
        ["a:7443", "b:7443", "c:7443", "d:7443"]
    );
}

#[test]
fn an_empty_item_among_others_is_refused() {
    for bad in ["a,,b", "a,", ",a", "a, ,b"] {
        let e = err(&[bad]);
        assert!(matches!(e, HostError::EmptyItem { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("empty item"), "{e}");
    }
}

#[test]
fn names_must_be_dns_names_or_addresses() {
    for bad in ["web_01!", "-web", "a..b", "exa$mple", "é.example"] {
        assert!(matches!(err(&[bad]), HostError::BadName { .. }), "{bad}");
    }
    let label = "x".repeat(64);
    assert!(matches!(err(&[&label]), HostError::BadName { .. }));
    let long = ["a"; 130].join(".");
    assert!(matches!(err(&[&long]), HostError::TooLong { .. }));
    assert_eq!(names(&["web-01.example.com", "10.1.2.3"]).len(), 2);
}

#[test]
fn expansion_is_counted_before_it_is_built() {
    // 3 KB of ranges: 10^1500 names, refused at once.
    let huge = format!("a{}", "[0-9]".repeat(600));
    assert!(matches!(
        err(&[&huge]),
        HostError::TooLong { .. } | HostError::TooMany { .. }
    ));
    let wide = format!("a{}", "[1-99999]".repeat(300));
    assert!(matches!(
        err(&[&wide]),
        HostError::TooLong { .. } | HostError::TooMany { .. }
    ));
    // 12,000 segments: one name of 12,001 characters, refused before it is made.
    let segments = format!("a{}", "[1]".repeat(12_000));
    let e = err(&[&segments]);
    assert!(matches!(e, HostError::TooLong { len: 12_001, .. }), "{e:?}");
    assert!(e.to_string().len() < 300, "one short line: {e}");
    // 12,000 items in one bracket: counted, fine.
    let items: Vec<String> = (1..=12_000).map(|n| n.to_string()).collect();
    assert_eq!(names(&[&format!("n[{}]", items.join(","))]).len(), 12_000);
}

#[test]
fn all_lists_together_are_counted_before_duplicates_are_dropped() {
    let many = vec!["n[1-100000]".to_string(); 11];
    assert!(matches!(parse_host_list(&many), Err(HostError::TooManyListed)));
    let some = vec!["n[1-100000]".to_string(); 2];
    assert_eq!(parse_host_list(&some).map(|h| h.len()).ok(), Some(100_000));
}

#[test]
fn an_endless_hosts_file_is_refused_at_its_limit() {
    let e = match parse_hosts_file(Path::new("/dev/zero")) {
        Ok(v) => panic!("should fail, got {} lines", v.len()),
        Err(e) => e,
    };
    assert!(e.to_string().contains("larger than 8 MiB"), "{e}");
}

#[test]
fn zero_padding_is_kept() {
    assert_eq!(
        names(&["web[08-11]"]),
        ["web08:7443", "web09:7443", "web10:7443", "web11:7443"]
    );
    assert_eq!(names(&["n[9-11]"]), ["n9:7443", "n10:7443", "n11:7443"]);
    assert_eq!(names(&["web[01-20]"]).len(), 20);
    assert_eq!(names(&["web[01-20]"])[0], "web01:7443");
}

#[test]
fn ipv4_range() {
    let got = names(&["10.0.0.[1-9]"]);
    assert_eq!(got.len(), 9);
    assert_eq!(got[0], "10.0.0.1:7443");
    assert_eq!(got[8], "10.0.0.9:7443");
}

#[test]
fn product_in_order() {
    assert_eq!(
        names(&["rack[1-2]-node[1-3]"]),
        [
            "rack1-node1:7443",
            "rack1-node2:7443",
            "rack1-node3:7443",
            "rack2-node1:7443",
            "rack2-node2:7443",
            "rack2-node3:7443"
        ]
    );
}

#[test]
fn list_form_and_port_suffix() {
    assert_eq!(
        names(&["web[1,3,5-7]"]),
        ["web1:7443", "web3:7443", "web5:7443", "web6:7443", "web7:7443"]
    );
    assert_eq!(
        names(&["web[1-3]:8443,db:22"]),
        ["web1:8443", "web2:8443", "web3:8443", "db:22"]
    );
}

#[test]
fn leading_range_is_not_ipv6() {
    assert_eq!(
        names(&["[1-2].example.com"]),
        ["1.example.com:7443", "2.example.com:7443"]
    );
}

#[test]
fn duplicates_dropped_first_order_kept() {
    assert_eq!(
        names(&["b,a", "a,web[1-2]", "b:7443,b:8443,web2"]),
        ["b:7443", "a:7443", "web1:7443", "web2:7443", "b:8443"]
    );
}

#[test]
fn ipv6_literals() {
    let hosts = parse_host_list(&specs(&["[::1]:7443", "[fe80::1]", "[::1]:9000", "2001:db8::5"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hosts,
        [
            Host {
                name: "::1".into(),
                port: 7443
            },
            Host {
                name: "fe80::1".into(),
                port: 7443
            },
            Host {
                name: "::1".into(),
                port: 9000
            },
            Host {
                name: "2001:db8::5".into(),
                port: 7443
            },
        ]
    );
    assert_eq!(hosts[0].authority(), "[::1]:7443");
    assert_eq!(hosts[0].label(), "::1");
    assert_eq!(hosts[2].label(), "[::1]:9000");
    assert!(matches!(err(&["[::zz]"]), HostError::BadIpv6 { .. }));
    assert!(matches!(err(&["[::1]x"]), HostError::BadIpv6 { .. }));
}

#[test]
fn label_and_authority() {
    let h = Host {
        name: "web1".into(),
        port: DEFAULT_PORT,
    };
    assert_eq!(h.label(), "web1");
    assert_eq!(h.authority(), "web1:7443");
    let h = Host {
        name: "web1".into(),
        port: 22,
    };
    assert_eq!(h.label(), "web1:22");
    assert_eq!(h.to_string(), "web1:22");
}

#[test]
fn empty_list_errors() {
    let e = err(&[]);
    assert!(matches!(e, HostError::Empty));
    assert_eq!(
        e.to_string(),
        "no hosts given: use -H HOST[,HOST…] or --hosts-file FILE"
    );
    assert!(matches!(err(&[" , ,", ""]), HostError::Empty)); // blank: nothing named
}

#[test]
fn descending_range_suggests_fix() {
    let e = err(&["web[03-01]"]);
    assert_eq!(
        e.to_string(),
        "host range web[03-01] counts down: write it as web[01-03]"
    );
    let e = err(&["x,web[1,7-5]:22"]);
    assert_eq!(
        e.to_string(),
        "host range web[1,7-5]:22 counts down: write it as web[1,5-7]:22"
    );
}

#[test]
fn malformed_ranges() {
    for bad in [
        "web[a-c]",
        "web[1-]",
        "web[-3]",
        "web[]",
        "web[1,,2]",
        "web[1-2-3]",
        "web[[1]]",
    ] {
        let e = err(&[bad]);
        assert!(
            matches!(e, HostError::BadRange { .. } | HostError::Unbalanced { .. }),
            "{bad}: {e:?}"
        );
        assert!(e.to_string().contains("web["), "{bad}: {e}");
    }
    assert!(matches!(err(&["web[1:2]"]), HostError::BadRange { .. }));
}

#[test]
fn unbalanced_brackets() {
    for bad in ["web[1-3", "web1-3]", "a,web]1[", "[::1"] {
        assert!(matches!(err(&[bad]), HostError::Unbalanced { .. }), "{bad}");
    }
}

#[test]
fn bad_ports() {
    for bad in [
        "web:0",
        "web:65536",
        "web:http",
        "web:",
        "web[1-2]:-1",
        "[::1]:99999",
    ] {
        let e = err(&[bad]);
        assert!(matches!(e, HostError::BadPort { .. }), "{bad}: {e:?}");
        assert!(e.to_string().contains("1 to 65535"), "{e}");
    }
    assert_eq!(names(&["web:65535"]), ["web:65535"]);
    assert!(matches!(err(&["a:1:2"]), HostError::BadName { .. }));
}

#[test]
fn empty_and_bad_names() {
    assert!(matches!(err(&[":8443"]), HostError::EmptyName { .. }));
    assert!(matches!(err(&["web 1"]), HostError::BadName { .. }));
    assert!(matches!(err(&["user@web"]), HostError::BadName { .. }));
}

#[test]
fn too_many_hosts() {
    let e = err(&["n[1-100001]"]);
    assert!(matches!(e, HostError::TooMany { .. }));
    assert!(e.to_string().starts_with("too many hosts"));
    assert!(matches!(err(&["a[1-1000]b[1-1000]"]), HostError::TooMany { .. }));
    assert!(matches!(
        err(&["n[0-999999999999999999]"]),
        HostError::TooMany { .. }
    ));
    assert!(matches!(
        err(&["a[1-60000]", "b[1-60000]"]),
        HostError::TooMany { .. }
    ));
    assert_eq!(names(&["n[1-100000]"]).len(), 100_000);
}

#[test]
fn hosts_file_comments_and_ranges() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("hosts");
    std::fs::write(
        &path,
        "# fleet\n\nweb[1-2]   # web tier\n  db1:8443,db2 \n#db3\n   \n[::1]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let lines = parse_hosts_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lines, ["web[1-2]", "db1:8443,db2", "[::1]"]);
    let got: Vec<String> = parse_host_list(&lines)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(Host::label)
        .collect();
    assert_eq!(got, ["web1", "web2", "db1:8443", "db2", "::1"]);
}

#[test]
fn unreadable_hosts_file_names_path() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("missing-hosts");
    let e = match parse_hosts_file(&path) {
        Ok(v) => panic!("should fail, got {v:?}"),
        Err(e) => e,
    };
    assert!(matches!(e, HostError::ReadFile { .. }));
    let msg = e.to_string();
    assert!(msg.contains("missing-hosts"), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
}
