//! Inventories: named groups of hosts, with per-group and per-host settings.
//!
//! Three formats are read, each in a file of its own:
//! - [`toml`](self::toml): rjob's own (`inventory.toml` in the controller's config directory);
//! - [`ini`]: an Ansible INI inventory, as it is (`[web]`, `web[01:20]`, `ansible_host`,
//!   `ansible_port`, `ansible_user`, `[group:children]`, `[group:vars]`);
//! - [`yaml`]: a ClusterShell groups file (`groups.d/*.yaml`: sources of `group: nodeset`).
//!
//! [`select`] turns `-H @web,db1 -x @canary` into the hosts to dial. Settings are merged the
//! way Ansible merges them: a parent group's, then its children's, then the host's own; a port
//! written in `-H` (`web1:8443`) beats them all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub mod ini;
pub mod select;
pub mod toml;
pub mod yaml;

/// Largest inventory file rjob reads.
pub const MAX_INVENTORY_BYTES: u64 = 16 << 20;
/// Deepest nesting of groups (a group of groups of ...).
pub const MAX_DEPTH: usize = 64;

/// Settings a group or a host gives the hosts it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Settings {
    /// The name or address to dial instead of the inventory name (Ansible's `ansible_host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The user the script runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

impl Settings {
    /// `other` on top of `self`: what `other` sets wins.
    pub fn merge(&mut self, other: &Settings) {
        if other.address.is_some() {
            self.address.clone_from(&other.address);
        }
        if other.port.is_some() {
            self.port = other.port;
        }
        if other.user.is_some() {
            self.user.clone_from(&other.user);
        }
        for (k, v) in &other.vars {
            self.vars.insert(k.clone(), v.clone());
        }
    }
}

/// One group: host entries (names, ranges, `name:port`), other groups, and settings.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub settings: Settings,
}

/// An inventory, whatever format it was read from.
#[derive(Debug, Default)]
pub struct Inventory {
    pub path: PathBuf,
    /// Groups by name, in name order.
    pub groups: BTreeMap<String, Group>,
    /// Each host's own settings, by inventory name.
    pub hosts: HashMap<String, Settings>,
}

/// Why an inventory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("inventory {path}: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("inventory {path}, line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("no group @{group} in inventory {path}{hint}")]
    UnknownGroup {
        group: String,
        path: PathBuf,
        hint: String,
    },
    #[error("@{group} is used but there is no inventory: pass --inventory FILE, or write {default}")]
    NoInventory { group: String, default: String },
    #[error("group @{group} in inventory {path} contains itself (through @{via})")]
    Cycle {
        group: String,
        via: String,
        path: PathBuf,
    },
    #[error("groups in inventory {path} are nested more than {MAX_DEPTH} deep (at @{group})")]
    TooDeep { group: String, path: PathBuf },
    #[error(transparent)]
    Hosts(#[from] crate::hosts::HostError),
    #[error("-x {spec} leaves no hosts: every host selected is excluded")]
    AllExcluded { spec: String },
}

impl Inventory {
    /// Reads `path`, choosing the format by its name (`.toml`, `.yaml`/`.yml`, `.ini`) or, for
    /// a name without one, by its content (a `[group]` line without `=` is INI).
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = read(path)?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut inventory = match ext {
            "toml" => toml::parse(path, &text)?,
            "yaml" | "yml" => yaml::parse(path, &text)?,
            "ini" | "cfg" | "hosts" => ini::parse(path, &text)?,
            _ if looks_like_yaml(&text) => yaml::parse(path, &text)?,
            _ if looks_like_ini(&text) => ini::parse(path, &text)?,
            _ => toml::parse(path, &text)?,
        };
        inventory.path = path.to_path_buf();
        inventory.check_names()?;
        Ok(inventory)
    }

    /// Every group named as a child exists.
    fn check_names(&self) -> Result<(), InventoryError> {
        for (name, group) in &self.groups {
            for child in &group.children {
                if !self.groups.contains_key(child) {
                    return Err(InventoryError::Syntax {
                        path: self.path.clone(),
                        reason: format!("group {name} names a child group {child} that is not defined"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The group, or an error naming the groups there are.
    pub fn group(&self, name: &str) -> Result<&Group, InventoryError> {
        self.groups.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.groups.keys().map(String::as_str).take(12).collect();
            InventoryError::UnknownGroup {
                group: name.to_string(),
                path: self.path.clone(),
                hint: if names.is_empty() {
                    " (it defines no groups)".to_string()
                } else {
                    format!(" (groups: {})", names.join(", "))
                },
            }
        })
    }

    /// The host entries of a group and of every group below it, in order, each once; a cycle
    /// is an error.
    pub fn entries(&self, name: &str) -> Result<Vec<String>, InventoryError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.walk(name, &mut Vec::new(), &mut seen, &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        name: &str,
        stack: &mut Vec<String>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) -> Result<(), InventoryError> {
        if let Some(pos) = stack.iter().position(|g| g == name) {
            return Err(InventoryError::Cycle {
                group: name.to_string(),
                via: stack.get(pos + 1).cloned().unwrap_or_else(|| name.to_string()),
                path: self.path.clone(),
            });
        }
        if stack.len() >= MAX_DEPTH {
            return Err(InventoryError::TooDeep {
                group: name.to_string(),
                path: self.path.clone(),
            });
        }
        let group = self.group(name)?;
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        out.extend(group.hosts.iter().cloned());
        stack.push(name.to_string());
        for child in &group.children {
            self.walk(child, stack, seen, out)?;
        }
        stack.pop();
        Ok(())
    }

    /// How deep each group sits: 0 for a group no other group holds.
    fn depths(&self) -> HashMap<&str, usize> {
        let mut depth: HashMap<&str, usize> = self.groups.keys().map(|k| (k.as_str(), 0)).collect();
        // Relax at most MAX_DEPTH times: cycles were refused when the groups were walked.
        for _ in 0..MAX_DEPTH {
            let mut changed = false;
            for (name, group) in &self.groups {
                let d = depth.get(name.as_str()).copied().unwrap_or(0);
                for child in &group.children {
                    if let Some(c) = depth.get_mut(child.as_str()) {
                        if *c < d + 1 {
                            *c = d + 1;
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        depth
    }

    /// The settings of each named host: every group holding it, outer groups first, then the
    /// host's own.
    pub fn settings_for(&self, names: &HashSet<String>) -> Result<HashMap<String, Settings>, InventoryError> {
        let mut out: HashMap<String, Settings> = HashMap::new();
        let depths = self.depths();
        let mut order: Vec<(&String, &Group)> = self.groups.iter().collect();
        order.sort_by_key(|(name, _)| depths.get(name.as_str()).copied().unwrap_or(0));
        for (name, group) in order {
            if group.settings == Settings::default() {
                continue;
            }
            let entries = self.entries(name)?;
            for host in crate::hosts::parse_host_list(&entries).unwrap_or_default() {
                if names.contains(&host.name) {
                    out.entry(host.name).or_default().merge(&group.settings);
                }
            }
        }
        for name in names {
            if let Some(own) = self.hosts.get(name) {
                out.entry(name.clone()).or_default().merge(own);
            }
        }
        Ok(out)
    }
}

/// The file's text, at most [`MAX_INVENTORY_BYTES`], UTF-8.
fn read(path: &Path) -> Result<String, InventoryError> {
    let err = |reason: String| InventoryError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let bytes = crate::limits::read_capped(file, MAX_INVENTORY_BYTES)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| {
            err(format!(
                "it is larger than {}, the most rjob reads",
                crate::limits::size_text(MAX_INVENTORY_BYTES)
            ))
        })?;
    String::from_utf8(bytes).map_err(|_| err("it is not UTF-8 text".to_string()))
}

fn looks_like_ini(text: &str) -> bool {
    text.lines().map(str::trim).any(|l| {
        l.starts_with('[')
            && l.ends_with(']')
            && !l.contains('=')
            && !l.starts_with("[groups")
            && !l.starts_with("[hosts")
    })
}

fn looks_like_yaml(text: &str) -> bool {
    let first = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    first.is_some_and(|l| l == "---" || (l.ends_with(':') && !l.starts_with('[')))
}

/// A group name as the three formats allow it: letters, digits, `_`, `-`, `.` and `:`.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("bad group name {name:?}: 1 to 128 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(format!(
            "bad group name {}: {} is not allowed (letters, digits, '_', '-', '.', ':')",
            crate::escape::text(name),
            crate::escape::text(&format!("{c:?}"))
        ));
    }
    Ok(())
}

/// Where the inventory is by default: `inventory` or `inventory.toml` in the controller's
/// config directory, the first that exists.
pub fn default_path() -> Option<PathBuf> {
    let dir = crate::config::config_dir()?;
    ["inventory", "inventory.toml", "inventory.ini", "inventory.yaml"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests;
