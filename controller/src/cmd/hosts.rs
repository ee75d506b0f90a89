//! `rjob hosts EXPR` and `rjob invoke … --list-hosts`: the hosts a host expression selects,
//! printed and nothing contacted (`nodeset -e`, `ansible --list-hosts`). `--list-hosts` adds
//! `user=NAME` beside a host that runs as a user of its own (`--user`, the inventory's or the
//! config's), as `rjob hosts -v` does: what `rjob invoke` would do, one host a line.

use std::io::Write as _;

use crate::cli::{HostsArgs, OutputFormat};
use crate::hosts::{fold, parse_hosts_file};
use crate::inventory::select::{from_command_line, Target};
use crate::UsageError;

/// How to print the list.
pub struct Look {
    pub fold: bool,
    pub verbose: bool,
    /// Each host's run-as user beside it, when it has one (`--list-hosts`).
    pub users: bool,
    pub output: OutputFormat,
}

/// `rjob hosts`.
pub fn run(args: &HostsArgs) -> Result<u8, UsageError> {
    let mut specs = args.hosts.clone();
    if let Some(path) = &args.hosts_file {
        specs.extend(parse_hosts_file(path).map_err(|e| UsageError(e.to_string()))?);
    }
    let look = Look {
        fold: args.fold,
        verbose: args.verbose,
        users: false,
        output: args.output,
    };
    list(&specs, &args.exclude, &look)
}

/// Prints the hosts `specs` less `exclude` select; exit status 0.
pub fn list(specs: &[String], exclude: &[String], look: &Look) -> Result<u8, UsageError> {
    let targets = from_command_line(specs, exclude)?;
    Ok(print(&targets, look))
}

/// Prints `targets`; exit status 0.
pub fn print(targets: &[Target], look: &Look) -> u8 {
    let text = render(targets, look);
    let mut out = std::io::stdout().lock();
    // A closed pipe (`rjob hosts @web | head -1`) is not an error.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    0
}

/// The list as printed.
pub fn render(targets: &[Target], look: &Look) -> String {
    let mut text = String::new();
    if look.output == OutputFormat::Json {
        for t in targets {
            let record = crate::records::HostRecord {
                kind: crate::records::HostTag::Tag,
                host: t.host.label(),
                name: t.name.clone(),
                address: t.host.name.clone(),
                port: t.host.port,
                user: t.user.clone(),
                vars: t.vars.clone(),
            };
            text.push_str(&serde_json::to_string(&record).unwrap_or_default());
            text.push('\n');
        }
        return text;
    }
    if look.fold {
        text.push_str(&fold::fold_hosts(targets.iter().map(|t| &t.host), true));
        text.push('\n');
        return text;
    }
    for t in targets {
        text.push_str(&crate::escape::text(&t.host.label()));
        if look.verbose {
            text.push_str(&format!("  port={}", t.host.port));
            if t.name != t.host.name {
                text.push_str(&format!("  name={}", crate::escape::text(&t.name)));
            }
            if let Some(user) = &t.user {
                text.push_str(&format!("  user={}", crate::escape::text(user)));
            }
            for (k, v) in &t.vars {
                text.push_str(&format!(
                    "  {}={}",
                    crate::escape::text(k),
                    crate::escape::text(v)
                ));
            }
        } else if let (true, Some(user)) = (look.users, &t.user) {
            text.push_str(&format!("  user={}", crate::escape::text(user)));
        }
        text.push('\n');
    }
    text
}
