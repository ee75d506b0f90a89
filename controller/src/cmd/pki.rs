//! `rjob pki`: make a CA, issue agent certificates (one, or one per host of a list), issue
//! client identities, list certificates with their expiry.

use std::path::{Path, PathBuf};

use crate::cli::PkiCommand;
use crate::connect::identity_dir;

pub fn run(command: &PkiCommand, identity: Option<&Path>) -> anyhow::Result<()> {
    let ca_dir = |flag: &Option<PathBuf>| -> anyhow::Result<PathBuf> {
        Ok(match flag {
            Some(d) => d.clone(),
            None => identity_dir(identity)?,
        })
    };
    match command {
        PkiCommand::Init { dir, client_name } => {
            crate::pki::init(dir, client_name)?;
            println!(
                "created a CA and the client identity {client_name:?} in {}",
                dir.display()
            );
        }
        PkiCommand::IssueAgent {
            name: Some(name),
            san,
            ca_dir: flag,
            out,
            ..
        } => {
            let ca = ca_dir(flag)?;
            let out = out.clone().unwrap_or_else(|| ca.join("agents").join(name));
            crate::pki::issue_agent(&ca, name, san, &out)?;
            println!("issued agent certificate {name:?} in {}", out.display());
        }
        PkiCommand::IssueAgent {
            name: None,
            hosts,
            hosts_file,
            ca_dir: flag,
            out,
            ..
        } => {
            let ca = ca_dir(flag)?;
            let mut specs = hosts.clone();
            if let Some(path) = hosts_file {
                specs.extend(
                    crate::hosts::parse_hosts_file(path).map_err(|e| crate::UsageError(e.to_string()))?,
                );
            }
            let targets = crate::inventory::select::from_command_line(&specs, &[])?;
            crate::pki::fleet::check_batch(targets.len()).map_err(crate::UsageError)?;
            let names: Vec<(String, String)> = targets
                .iter()
                .map(|t| (t.name.clone(), t.host.name.clone()))
                .collect();
            let out = out.clone().unwrap_or_else(|| ca.join("agents"));
            crate::pki::fleet::issue_agents(&ca, &names, &out)?;
            let hosts: Vec<crate::hosts::Host> = targets.into_iter().map(|t| t.host).collect();
            println!(
                "issued {} agent certificates in {}/{{{}}}",
                names.len(),
                out.display(),
                crate::hosts::fold::fold_hosts(&hosts, false)
            );
        }
        PkiCommand::List { dir, output } => {
            let dir = ca_dir(dir)?;
            let listed = crate::pki::fleet::list(&dir)?;
            match output {
                crate::cli::OutputFormat::Json => {
                    for l in &listed {
                        println!("{}", serde_json::to_string(l)?);
                    }
                }
                crate::cli::OutputFormat::Text => print!("{}", crate::pki::fleet::render(&listed)),
            }
        }
        PkiCommand::IssueClient {
            name,
            ca_dir: flag,
            out,
        } => {
            let ca = ca_dir(flag)?;
            let out = out.clone().unwrap_or_else(|| ca.join("clients").join(name));
            crate::pki::issue_client(&ca, name, &out)?;
            println!("issued client certificate {name:?} in {}", out.display());
        }
    }
    Ok(())
}
