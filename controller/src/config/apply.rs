//! The file's values put into the parsed command line wherever clap took its default (no
//! flag, no `RJOB_*` variable).

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::{Config, Source};
use crate::cli::{Cli, Command, ConfigCommand};
use crate::UsageError;

/// Whether clap's value for `id` is its default (neither a flag nor the environment gave it).
fn defaulted(matches: &ArgMatches, id: &str) -> bool {
    !matches!(
        matches.try_get_raw(id).ok().and(matches.value_source(id)),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Fills `cli` from `config` where neither a flag nor the environment set a value, and records
/// the inventory to read in `config`.
pub fn apply(cli: &mut Cli, matches: &ArgMatches, config: &mut Config) -> Result<(), UsageError> {
    let identity_env = std::env::var_os(crate::connect::IDENTITY_ENV).is_some_and(|v| !v.is_empty());
    if cli.identity.is_none() && !identity_env {
        cli.identity = config.identity();
    }
    let sub = matches.subcommand().map(|(_, m)| m);
    let inventory_source = sub
        .and_then(|m| m.try_get_raw("inventory").ok().and(m.value_source("inventory")))
        .or_else(|| matches.value_source("inventory"));
    config.inventory = config.inventory_path(cli.inventory.as_deref(), inventory_source);
    let Some(m) = sub else { return Ok(()) };
    macro_rules! fill {
        ($field:expr, $id:literal, $value:expr) => {
            if defaulted(m, $id) {
                if let Some(v) = $value {
                    $field = v;
                }
            }
        };
    }
    match &mut cli.command {
        Command::Invoke(a) => {
            fill!(
                a.throttle_limit,
                "throttle_limit",
                config.throttle_limit()?.map(crate::budget::Amount::Count)
            );
            fill!(a.connect_timeout, "connect_timeout", config.connect_timeout()?);
            fill!(a.output, "output", config.output()?);
            fill!(a.color, "color", config.color()?);
        }
        Command::Config(ConfigCommand::Show(a)) => {
            let m = m.subcommand().map_or(m, |(_, m)| m);
            if defaulted(m, "throttle_limit") {
                if let Some(v) = config.throttle_limit()? {
                    a.throttle_limit = v;
                }
            }
            if defaulted(m, "connect_timeout") {
                if let Some(v) = config.connect_timeout()? {
                    a.connect_timeout = v;
                }
            }
            if defaulted(m, "output") {
                if let Some(v) = config.output()? {
                    a.output = v;
                }
            }
            if defaulted(m, "color") {
                if let Some(v) = config.color()? {
                    a.color = v;
                }
            }
        }
        Command::Start(a) => fill!(a.output, "output", config.output()?),
        Command::Jobs(a) => fill!(a.output, "output", config.output()?),
        Command::Wait(a) => fill!(a.output, "output", config.output()?),
        Command::Receive(a) => {
            fill!(a.output, "output", config.output()?);
            fill!(a.color, "color", config.color()?);
        }
        Command::Hosts(a) => fill!(a.output, "output", config.output()?),
        Command::Serve(a) => {
            fill!(a.store, "store", config.store()?.map(Some));
            fill!(a.retention, "retention", config.retention()?.map(Some));
            fill!(
                a.max_store_size,
                "max_store_size",
                config.max_store_size()?.map(Some)
            );
            fill!(a.force_retention, "force_retention", config.file.force_retention);
        }
        _ => {}
    }
    Ok(())
}

/// Where `id`'s value came from, for `rjob config show`.
pub fn source(matches: &ArgMatches, id: &str, file_has_it: bool, config: &Config) -> Source {
    let m = matches
        .subcommand()
        .and_then(|(_, m)| m.subcommand().map(|(_, m)| m))
        .unwrap_or(matches);
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => Source::Flag(format!("--{}", id.replace('_', "-"))),
        Some(ValueSource::EnvVariable) => Source::Env(format!("RJOB_{}", id.to_uppercase())),
        _ if file_has_it => Source::File(config.path.clone().unwrap_or_default()),
        _ => Source::Default,
    }
}
