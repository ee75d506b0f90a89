//! A ClusterShell groups file (`/etc/clustershell/groups.d/*.yaml`), read as ClusterShell
//! reads it: each top-level key is a group source, each of its keys a group, whose value is a
//! node set (`'web[01-20],db1'`, `'@web,@db'`, `'@racks:rack1'`) or a list of them.
//!
//! ```yaml
//! roles:
//!   web: 'web[01-20]'
//!   db: ['db1', 'db2']
//!   prod: '@web,@db'
//! racks:
//!   rack1: 'web[01-10]'
//! ```
//!
//! A group is `@source:group`; the first source's groups are also `@group`, as ClusterShell's
//! default source. Node set operators (`!`, `&`, `^`) are refused with a line saying so.

use std::collections::BTreeMap;
use std::path::Path;

use super::{check_group_name, Group, Inventory, InventoryError};

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum NodeSet {
    One(String),
    Many(Vec<String>),
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let syntax = |reason: String| InventoryError::Syntax {
        path: path.to_path_buf(),
        reason,
    };
    // serde_yaml keeps the sources in file order with an IndexMap-like Mapping.
    let doc: serde_yaml::Mapping =
        serde_yaml::from_str(text).map_err(|e| syntax(format!("not a ClusterShell groups file: {e}")))?;
    let mut inventory = Inventory::default();
    let mut first_source: Option<String> = None;
    let mut sources: Vec<(String, BTreeMap<String, NodeSet>)> = Vec::new();
    for (key, value) in doc {
        let source = key
            .as_str()
            .ok_or_else(|| syntax("a group source name is not text".to_string()))?
            .to_string();
        check_group_name(&source).map_err(&syntax)?;
        let Some(map) = value.as_mapping() else {
            return Err(syntax(format!(
                "source {source} must hold groups, as in \"{source}: {{web: 'web[1-4]'}}\"; put the groups under a source name"
            )));
        };
        let ansible_key = |v: &serde_yaml::Value| v.get("hosts").is_some() || v.get("children").is_some();
        let ansible = ansible_key(&value) || map.values().any(ansible_key);
        if ansible {
            return Err(syntax(format!(
                "source {source} has hosts/children maps, as an Ansible YAML inventory does; rjob reads Ansible's INI form and ClusterShell groups files (group: \"node[1-4]\")"
            )));
        }
        let groups: BTreeMap<String, NodeSet> = serde_yaml::from_value(value).map_err(|e| {
            let e = e.to_string();
            let why = if e.contains("untagged enum") {
                "a group is neither text nor a list of text".to_string()
            } else {
                e
            };
            syntax(format!(
                "source {source}: each group must be a node set or a list of them ({why})"
            ))
        })?;
        first_source.get_or_insert_with(|| source.clone());
        sources.push((source, groups));
    }
    for (source, groups) in &sources {
        let default = first_source.as_deref() == Some(source.as_str());
        for (name, set) in groups {
            check_group_name(name).map_err(&syntax)?;
            let items: Vec<String> = match set {
                NodeSet::One(s) => vec![s.clone()],
                NodeSet::Many(v) => v.clone(),
            };
            let mut group = Group::default();
            for item in &items {
                if item.contains(['!', '&', '^']) {
                    return Err(syntax(format!(
                        "group {source}:{name}: node set operators (!, &, ^) are not read; list the nodes or groups"
                    )));
                }
                for entry in crate::hosts::split_entries(item)? {
                    match entry.strip_prefix('@') {
                        Some(g) if g.contains(':') => group.children.push(g.to_string()),
                        Some(g) => group.children.push(format!("{source}:{g}")),
                        None => group.hosts.push(entry.to_string()),
                    }
                }
            }
            inventory.groups.insert(format!("{source}:{name}"), group.clone());
            if default {
                inventory.groups.entry(name.clone()).or_insert(Group {
                    children: vec![format!("{source}:{name}")],
                    ..Group::default()
                });
            }
        }
    }
    Ok(inventory)
}
