//! An Ansible INI inventory, read as Ansible reads it:
//!
//! ```ini
//! mail.example.com            # before any section: the group "ungrouped"
//! [web]
//! web[01:20].example.com ansible_port=7443
//! db-proxy ansible_host=10.0.0.9 ansible_user=deploy
//! [db]
//! db[1:4]
//! [prod:children]
//! web
//! db
//! [web:vars]
//! tier=front
//! ```
//!
//! `ansible_host`, `ansible_port` and `ansible_user` become the address dialled, the agent's
//! port and the run-as user; `rjob_host`, `rjob_port` and `rjob_user` win over them (for an
//! inventory whose `ansible_port` is the SSH port). Other variables are kept as variables. The
//! group `all` holds every group, as in Ansible.

use std::collections::HashSet;
use std::path::Path;

use super::{check_group_name, Inventory, InventoryError, Settings};

enum Section {
    Hosts(String),
    Children(String),
    Vars(String),
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let mut inventory = Inventory::default();
    let mut section = Section::Hosts("ungrouped".to_string());
    for (index, raw) in text.lines().enumerate() {
        let err = |reason: String| InventoryError::Line {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let (name, kind) = match head.rsplit_once(':') {
                Some((name, "children")) => (name, "children"),
                Some((name, "vars")) => (name, "vars"),
                Some((_, other)) => {
                    return Err(err(format!(
                    "unknown section kind :{other}; Ansible knows [group], [group:children] and [group:vars]"
                )))
                }
                None => (head, ""),
            };
            check_group_name(name).map_err(&err)?;
            inventory.groups.entry(name.to_string()).or_default();
            section = match kind {
                "children" => Section::Children(name.to_string()),
                "vars" => Section::Vars(name.to_string()),
                _ => Section::Hosts(name.to_string()),
            };
            continue;
        }
        match &section {
            Section::Children(group) => {
                check_group_name(line).map_err(&err)?;
                inventory.groups.entry(line.to_string()).or_default();
                inventory
                    .groups
                    .entry(group.clone())
                    .or_default()
                    .children
                    .push(line.to_string());
            }
            Section::Vars(group) => {
                let (key, value) = line
                    .split_once('=')
                    .ok_or_else(|| err("expected NAME=VALUE in a :vars section".to_string()))?;
                let settings = &mut inventory.groups.entry(group.clone()).or_default().settings;
                set(settings, key.trim(), unquote(value.trim())).map_err(&err)?;
            }
            Section::Hosts(group) => {
                let mut words = split_words(line).into_iter();
                let Some(pattern) = words.next() else { continue };
                let entry = convert_range(&pattern).map_err(&err)?;
                let mut own = Settings::default();
                for word in words {
                    let (key, value) = word
                        .split_once('=')
                        .ok_or_else(|| err(format!("expected NAME=VALUE after the host, found {word:?}")))?;
                    set(&mut own, key, unquote(value)).map_err(&err)?;
                }
                if own != Settings::default() {
                    let hosts = crate::hosts::parse_host_list(std::slice::from_ref(&entry))
                        .map_err(|e| err(e.to_string()))?;
                    for host in hosts {
                        inventory.hosts.entry(host.name).or_default().merge(&own);
                    }
                }
                inventory
                    .groups
                    .entry(group.clone())
                    .or_default()
                    .hosts
                    .push(entry);
            }
        }
    }
    // "ungrouped" exists only when something is in it.
    if inventory
        .groups
        .get("ungrouped")
        .is_some_and(|g| g.hosts.is_empty() && g.children.is_empty())
    {
        inventory.groups.remove("ungrouped");
    }
    // "all" holds every group that no other group holds.
    let held: HashSet<String> = inventory
        .groups
        .values()
        .flat_map(|g| g.children.iter().cloned())
        .collect();
    let tops: Vec<String> = inventory
        .groups
        .keys()
        .filter(|name| *name != "all" && !held.contains(*name))
        .cloned()
        .collect();
    let all = inventory.groups.entry("all".to_string()).or_default();
    for top in tops {
        if !all.children.contains(&top) {
            all.children.push(top);
        }
    }
    Ok(inventory)
}

/// One variable: the connection ones become settings, others stay variables.
fn set(settings: &mut Settings, key: &str, value: String) -> Result<(), String> {
    let port = |value: &str| match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{key}={value:?} is not a port (1 to 65535)")),
    };
    match key {
        "rjob_host" => settings.address = Some(value),
        "ansible_host" | "ansible_ssh_host" => {
            settings.address.get_or_insert(value);
        }
        "rjob_port" => settings.port = Some(port(&value)?),
        "ansible_port" | "ansible_ssh_port" => {
            let p = port(&value)?;
            settings.port.get_or_insert(p);
        }
        "rjob_user" => settings.user = Some(value),
        "ansible_user" | "ansible_ssh_user" => {
            settings.user.get_or_insert(value);
        }
        _ => {
            settings.vars.insert(key.to_string(), value);
        }
    }
    Ok(())
}

/// The line up to a `#` or `;` that starts a comment (at the start, or after blank space).
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return "";
    }
    let bytes = line.as_bytes();
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if q == b => quote = None,
            (None, b'#') if i > 0 && bytes[i - 1].is_ascii_whitespace() => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Words split on blank space outside quotes; quotes stay (see [`unquote`]).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                word.push(c);
            }
            (Some(q), _) if q == c => {
                quote = None;
                word.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// Ansible's `web[01:20]` as rjob writes it, `web[01-20]`. Letter ranges (`[a:f]`) and
/// strides (`[1:9:2]`) are refused with a line saying how to write them.
fn convert_range(pattern: &str) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find(']')
            .ok_or_else(|| format!("unbalanced '[' in host {pattern}"))?;
        let inner = &after[..close];
        if inner.parse::<std::net::Ipv6Addr>().is_ok() {
            out.push('[');
            out.push_str(inner);
            out.push(']');
            rest = &after[close + 1..];
            continue;
        }
        let parts: Vec<&str> = inner.split(':').collect();
        match parts.as_slice() {
            [a, b] if a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit()) => {
                out.push('[');
                out.push_str(a);
                out.push('-');
                out.push_str(b);
                out.push(']');
            }
            [_, _] => {
                return Err(format!(
                    "host {pattern}: letter ranges such as [a:f] are not read; list the hosts, or use numbers"
                ))
            }
            [_, _, _] => {
                return Err(format!(
                    "host {pattern}: ranges with a stride ([1:9:2]) are not read; list the numbers as [1,3,5]"
                ))
            }
            // An IPv6 literal or rjob's own syntax: as it is.
            _ => {
                out.push('[');
                out.push_str(inner);
                out.push(']');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
