//! rjob's own inventory format:
//!
//! ```toml
//! [groups.web]
//! hosts = ["web[01-20]", "lb1:8443"]   # names, ranges, name:port
//! port = 7443                          # for the hosts without one
//! user = "deploy"                      # the user scripts run as
//! vars = { tier = "front" }
//!
//! [groups.prod]
//! children = ["web", "db"]             # other groups (or "@db" in hosts)
//!
//! [hosts."web01"]
//! address = "10.0.0.5"                 # dial this instead of the name
//! port = 9443
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{check_group_name, Group, Inventory, InventoryError, Settings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    groups: BTreeMap<String, GroupFile>,
    #[serde(default)]
    hosts: BTreeMap<String, SettingsFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    children: Vec<String>,
    port: Option<u16>,
    user: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
}

/// A TOML value as a variable's text: strings as they are, other values as TOML writes them.
fn var_text(vars: BTreeMap<String, toml::Value>) -> BTreeMap<String, String> {
    vars.into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect()
}

pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryError> {
    let file: File = ::toml::from_str(text).map_err(|e| InventoryError::Syntax {
        path: path.to_path_buf(),
        reason: one_line(&e),
    })?;
    let syntax = |reason: String| InventoryError::Syntax {
        path: path.to_path_buf(),
        reason,
    };
    let mut inventory = Inventory::default();
    for (name, g) in file.groups {
        check_group_name(&name).map_err(syntax)?;
        if g.port == Some(0) {
            return Err(syntax(format!("group {name}: port 0; use 1 to 65535")));
        }
        let mut group = Group {
            children: g
                .children
                .iter()
                .map(|c| c.trim_start_matches('@').to_string())
                .collect(),
            settings: Settings {
                address: None,
                port: g.port,
                user: g.user,
                vars: var_text(g.vars),
            },
            ..Group::default()
        };
        if g.hosts
            .iter()
            .chain(&g.children)
            .any(|e| e.trim().trim_start_matches('@').is_empty())
        {
            return Err(syntax(format!(
                "group {name}: an empty host or group name; remove the \"\" (or \"@\") entry"
            )));
        }
        for entry in g.hosts {
            match entry.strip_prefix('@') {
                Some(child) => group.children.push(child.to_string()),
                None => group.hosts.push(entry),
            }
        }
        inventory.groups.insert(name, group);
    }
    for (name, h) in file.hosts {
        if h.port == Some(0) {
            return Err(syntax(format!("host {name}: port 0; use 1 to 65535")));
        }
        inventory.hosts.insert(
            name,
            Settings {
                address: h.address,
                port: h.port,
                user: h.user,
                vars: var_text(h.vars),
            },
        );
    }
    Ok(inventory)
}

/// A TOML error on one line: its message and where (`line 3, column 1`).
pub fn one_line(e: &::toml::de::Error) -> String {
    let text = e.to_string();
    let message = e.message().trim().to_string();
    let at = text
        .lines()
        .next()
        .filter(|l| l.contains("line"))
        .map(|l| l.trim_start_matches("TOML parse error at ").trim().to_string());
    match at {
        Some(at) => format!("{message} (at {at})"),
        None => message,
    }
}
