//! `rjob config show`: each effective setting and where it came from.

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::cli::{Cli, ConfigShowArgs};
use crate::config::{apply::source, Config, Source};
use crate::UsageError;

/// The lines `rjob config show` prints: `key  value  (source)`.
pub fn show(
    cli: &Cli,
    args: &ConfigShowArgs,
    matches: &ArgMatches,
    config: &Config,
) -> Result<String, UsageError> {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let file_text = match &config.path {
        Some(p) => p.display().to_string(),
        None => "none".to_string(),
    };
    let file_source = if cli.config.is_some() {
        "flag --config".to_string()
    } else if std::env::var_os(crate::config::CONFIG_ENV).is_some_and(|v| !v.is_empty()) {
        format!("env {}", crate::config::CONFIG_ENV)
    } else {
        "default".to_string()
    };
    rows.push(("config".into(), file_text, file_source));
    let (port, port_source) = config.port()?;
    rows.push(("port".into(), port.to_string(), port_source.to_string()));
    let f = &config.file;
    rows.push((
        "throttle_limit".into(),
        args.throttle_limit.to_string(),
        source(matches, "throttle_limit", f.throttle_limit.is_some(), config).to_string(),
    ));
    rows.push((
        "connect_timeout".into(),
        humantime::format_duration(args.connect_timeout).to_string(),
        source(matches, "connect_timeout", f.connect_timeout.is_some(), config).to_string(),
    ));
    let identity_source = if matches.value_source("identity") == Some(ValueSource::CommandLine) {
        Source::Flag("--identity".into())
    } else if std::env::var_os(crate::connect::IDENTITY_ENV).is_some_and(|v| !v.is_empty()) {
        Source::Env(crate::connect::IDENTITY_ENV.into())
    } else if f.identity.is_some() {
        Source::File(config.path.clone().unwrap_or_default())
    } else {
        Source::Default
    };
    let identity = crate::connect::identity_dir(cli.identity.as_deref())
        .map(|d| d.display().to_string())
        .unwrap_or_else(|e| e.to_string());
    rows.push(("identity".into(), identity, identity_source.to_string()));
    let (inventory, inventory_source) = match &config.inventory {
        Some((path, source)) => (path.display().to_string(), source.to_string()),
        None => ("none".to_string(), Source::Default.to_string()),
    };
    rows.push(("inventory".into(), inventory, inventory_source));
    rows.push((
        "output".into(),
        value_name(args.output),
        source(matches, "output", f.output.is_some(), config).to_string(),
    ));
    rows.push((
        "color".into(),
        value_name(args.color),
        source(matches, "color", f.color.is_some(), config).to_string(),
    ));
    rows.extend(crate::cmd::config_retention::rows(config)?);
    for (pattern, rule) in &config.rules {
        let mut parts = Vec::new();
        if let Some(port) = rule.port {
            parts.push(format!("port={port}"));
        }
        if let Some(user) = &rule.user {
            parts.push(format!("user={user}"));
        }
        rows.push((
            format!("hosts.{pattern:?}"),
            parts.join(" "),
            Source::File(config.path.clone().unwrap_or_default()).to_string(),
        ));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).min(60);
    let mut text = String::new();
    for (key, value, source) in rows {
        text.push_str(&crate::escape::text(&format!(
            "{key:width$}  {value:value_width$}  ({source})"
        )));
        text.push('\n');
    }
    Ok(text)
}

fn value_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}
