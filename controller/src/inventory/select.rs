//! From `-H web1,@web -x @canary` to the hosts to dial.
//!
//! Each entry is a host (`web1`, `web1:8443`, `web[01-20]`) or a group (`@web`, whose hosts and
//! child groups are taken in order). `-x` entries are the same and remove hosts by inventory
//! name (any port, or only that port when the entry names one). Then each host's settings
//! apply, weakest first: the config file's port, its `[hosts."pattern"]` tables, the
//! inventory's groups (outer first), the inventory's host entry, and a port written in `-H`.

use std::collections::{BTreeMap, HashSet};

use rjob_proto::DEFAULT_PORT;

use super::{Inventory, InventoryError, Settings};
use crate::hosts::{self, Host, HostError, MAX_HOSTS, MAX_LISTED};

/// One host to dial, with what the inventory says about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// The name it was selected by (its inventory name).
    pub name: String,
    #[serde(skip)]
    pub host: Host,
    /// The run-as user the inventory or config gives it.
    pub user: Option<String>,
    pub vars: BTreeMap<String, String>,
}

/// What applies beneath the inventory: the config file's port and `[hosts."pattern"]` tables.
pub trait Defaults {
    /// Settings for a host of this name (port and user), before the inventory's.
    fn for_host(&self, name: &str) -> Settings;
}

/// No config file: the default port, nothing else.
pub struct NoDefaults;

impl Defaults for NoDefaults {
    fn for_host(&self, _name: &str) -> Settings {
        Settings::default()
    }
}

/// A host as named, before settings: its inventory name, and the port written with it.
struct Named {
    name: String,
    port: Option<u16>,
}

/// Expands entries (hosts and `@groups`) to named hosts, each once, in first-seen order.
fn expand(specs: &[String], inventory: Option<&Inventory>) -> Result<Vec<Named>, InventoryError> {
    let mut listed: u64 = 0;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut take = |entry: &str, out: &mut Vec<Named>| -> Result<(), InventoryError> {
        let explicit = hosts::entry_has_port(entry);
        let built = match hosts::parse_host_list(&[entry.to_string()]) {
            Ok(built) => built,
            Err(HostError::Empty) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        listed = listed.saturating_add(built.len() as u64);
        if listed > MAX_LISTED {
            return Err(HostError::TooManyListed.into());
        }
        for host in built {
            let port = explicit.then_some(host.port);
            if seen.insert((host.name.clone(), port)) {
                if out.len() >= MAX_HOSTS {
                    return Err(HostError::TooMany {
                        spec: "the host list".to_string(),
                        limit: MAX_HOSTS,
                    }
                    .into());
                }
                out.push(Named {
                    name: host.name,
                    port,
                });
            }
        }
        Ok(())
    };
    for spec in specs {
        for entry in hosts::split_entries(spec)? {
            match entry.strip_prefix('@') {
                Some(group) => {
                    let inventory = inventory.ok_or_else(|| InventoryError::NoInventory {
                        group: group.to_string(),
                        default: crate::config::config_dir()
                            .map(|d| d.join("inventory.toml").display().to_string())
                            .unwrap_or_else(|| "$XDG_CONFIG_HOME/rjob/inventory.toml".to_string()),
                    })?;
                    for member in inventory.entries(group)? {
                        for e in hosts::split_entries(&member)? {
                            take(e, &mut out)?;
                        }
                    }
                }
                None => take(entry, &mut out)?,
            }
        }
    }
    Ok(out)
}

/// The hosts `specs` name, less those `exclude` names, with their settings.
pub fn resolve(
    specs: &[String],
    exclude: &[String],
    inventory: Option<&Inventory>,
    defaults: &dyn Defaults,
) -> Result<Vec<Target>, InventoryError> {
    let mut named = expand(specs, inventory)?;
    if named.is_empty() {
        return Err(HostError::Empty.into());
    }
    if !exclude.is_empty() {
        let gone = expand(exclude, inventory)?;
        let any_port: HashSet<&str> = gone
            .iter()
            .filter(|n| n.port.is_none())
            .map(|n| n.name.as_str())
            .collect();
        let on_port: HashSet<(&str, u16)> = gone
            .iter()
            .filter_map(|n| n.port.map(|p| (n.name.as_str(), p)))
            .collect();
        named.retain(|n| {
            !any_port.contains(n.name.as_str())
                && !on_port.contains(&(n.name.as_str(), n.port.unwrap_or(DEFAULT_PORT)))
        });
        if named.is_empty() {
            return Err(InventoryError::AllExcluded {
                spec: exclude.join(","),
            });
        }
    }
    let names: HashSet<String> = named.iter().map(|n| n.name.clone()).collect();
    let from_inventory = match inventory {
        Some(inventory) => inventory.settings_for(&names)?,
        None => Default::default(),
    };
    let mut seen = HashSet::new();
    let mut targets = Vec::with_capacity(named.len());
    for n in named {
        let mut settings = defaults.for_host(&n.name);
        if let Some(own) = from_inventory.get(&n.name) {
            settings.merge(own);
        }
        let address = settings.address.clone().unwrap_or_else(|| n.name.clone());
        if settings.address.is_some() {
            hosts::check_host_name(&address)?;
        }
        let port = n.port.or(settings.port).unwrap_or(DEFAULT_PORT);
        let host = Host { name: address, port };
        if seen.insert(host.clone()) {
            targets.push(Target {
                name: n.name,
                host,
                user: settings.user,
                vars: settings.vars,
            });
        }
    }
    Ok(targets)
}

/// The hosts the command line selects (`-H` and `--hosts-file` entries, `-x`), read against
/// the inventory and config file the command line names: what `rjob invoke` dials.
pub fn from_command_line(specs: &[String], exclude: &[String]) -> Result<Vec<Target>, crate::UsageError> {
    let config = crate::config::get();
    let usage = |e: InventoryError| crate::UsageError(e.to_string());
    let inventory = match &config.inventory {
        Some((path, _)) => Some(Inventory::load(path).map_err(usage)?),
        None => None,
    };
    resolve(specs, exclude, inventory.as_ref(), config).map_err(usage)
}

/// [`from_command_line`], the hosts alone.
pub fn hosts(specs: &[String], exclude: &[String]) -> Result<Vec<Host>, crate::UsageError> {
    Ok(from_command_line(specs, exclude)?
        .into_iter()
        .map(|t| t.host)
        .collect())
}
