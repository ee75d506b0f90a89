//! The controller's config file: `config.toml` in `$XDG_CONFIG_HOME/rjob` (or `--config FILE`,
//! `RJOB_CONFIG`).
//!
//! ```toml
//! port = 7443                 # agents' port for hosts written without one
//! throttle_limit = 32
//! connect_timeout = "10s"
//! identity = "/etc/rjob/controller"
//! inventory = "~/fleet/hosts.ini"
//! output = "text"             # or "json"
//! color = "auto"              # always, never
//! store = "postgres:///rjob?host=/run/postgresql"  # rjob serve's job store
//! retention = "30d"           # rjob serve: remove finished jobs that ended longer ago
//! max_store_size = "10GiB"    # rjob serve: and the oldest finished ones past this size
//! force_retention = false     # rjob serve: unreceived (and, by size, running) jobs too
//!
//! [hosts."web*"]              # like ssh_config's Host: glob patterns, first match wins
//! port = 8443
//! user = "deploy"
//! ```
//!
//! Precedence: default < this file < `RJOB_*` environment < flags. A host's run-as user: the
//! file's `[hosts."pattern"]` user < the inventory's for it < `RJOB_USER` < `--user`. The merge is a small one on
//! top of clap's `env` attributes rather than figment: clap already reads the environment and
//! flags with the very parsers and help text the options have, and tells where each value came
//! from ([`clap::parser::ValueSource`]); the file only fills in what clap took from its
//! defaults. figment would parse every value a second time, away from clap, and need its
//! sources kept in step with the flags by hand. `rjob config show` prints each effective
//! setting and where it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::parser::ValueSource;
use serde::Deserialize;

use crate::inventory::{select::Defaults, Settings};
use crate::UsageError;

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "RJOB_CONFIG";
/// Environment variable for the default agent port.
pub const PORT_ENV: &str = "RJOB_PORT";

/// The file as written. Every key is optional; unknown keys are refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub throttle_limit: Option<u32>,
    pub connect_timeout: Option<String>,
    pub identity: Option<PathBuf>,
    pub inventory: Option<PathBuf>,
    pub output: Option<String>,
    pub color: Option<String>,
    /// `rjob serve --store`.
    pub store: Option<String>,
    /// `rjob serve --retention` (`"30d"`).
    pub retention: Option<String>,
    /// `rjob serve --max-store-size` (`"10GiB"`).
    pub max_store_size: Option<String>,
    /// `rjob serve --force-retention`.
    pub force_retention: Option<bool>,
    /// `[hosts."pattern"]`, in file order.
    #[serde(default)]
    pub hosts: toml::Table,
}

/// One `[hosts."pattern"]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRule {
    pub port: Option<u16>,
    pub user: Option<String>,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// The config file, read and checked, with where it was.
#[derive(Debug, Default, Clone)]
pub struct Config {
    pub path: Option<PathBuf>,
    pub file: FileConfig,
    pub rules: Vec<(String, HostRule)>,
    /// The inventory to read, once the command line is known ([`apply::apply`]).
    pub inventory: Option<(PathBuf, Source)>,
}

static LOADED: OnceLock<Config> = OnceLock::new();

/// The config loaded by [`install`], or an empty one.
pub fn get() -> &'static Config {
    LOADED.get_or_init(Config::default)
}

/// Makes `config` the one [`get`] returns (once, at start).
pub fn install(config: Config) {
    let _ = LOADED.set(config);
}

/// `$XDG_CONFIG_HOME/rjob`, else `~/.config/rjob`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(config).join("rjob"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| PathBuf::from(home).join(".config/rjob"))
}

/// The key a TOML error is about: the unknown field it names, else the key on the line it
/// points at (`port = "abc"` gives `port`), else `syntax`.
fn error_key(text: &str, e: &toml::de::Error) -> String {
    let message = e.message();
    if message.starts_with("unknown field") {
        if let Some(field) = message.split('`').nth(1) {
            return field.to_string();
        }
    }
    let line = e.span().and_then(|span| {
        let start = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
        text.get(start..)?.lines().next()
    });
    match line.and_then(|l| l.split_once('=')) {
        Some((key, _)) if !key.trim().is_empty() => key.trim().to_string(),
        _ => "syntax".to_string(),
    }
}

/// A `[hosts."pattern"]` pattern rjob can match: not empty, no control characters, and each
/// `[` closed by a `]` (an unclosed one would silently match a literal `[`).
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty pattern matches no host; write a glob such as \"web*\"".into());
    }
    if let Some(c) = pattern.chars().find(|c| c.is_control()) {
        return Err(format!("{c:?} cannot appear in a host pattern"));
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            match chars.iter().skip(i + 2).position(|c| *c == ']') {
                Some(end) => i += end + 2,
                None => {
                    return Err(
                        "'[' without a closing ']'; a pattern is a glob (*, ?, [a-z]), as in \"web[0-9]*\""
                            .into(),
                    )
                }
            }
        }
        i += 1;
    }
    Ok(())
}

/// A bad config file: one line naming the file, the key and what to do.
fn bad(path: &Path, key: &str, what: impl std::fmt::Display) -> UsageError {
    UsageError(format!("config file {}: {key}: {what}", path.display()))
}

impl Config {
    /// Reads `--config FILE` (which must exist), else `$RJOB_CONFIG` (likewise), else
    /// `config.toml` in [`config_dir`] if it exists.
    pub fn load(flag: Option<&Path>) -> Result<Config, UsageError> {
        let named = flag.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let path = match named {
            Some(path) => path,
            None => match config_dir().map(|d| d.join("config.toml")) {
                Some(path) if path.exists() => path,
                _ => return Ok(Config::default()),
            },
        };
        let text = crate::limits::read_text_file(&path, 1 << 20, "config file")?;
        Config::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, UsageError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let key = error_key(text, &e);
            bad(
                path,
                &key,
                format!("{}; fix or remove it", crate::inventory::toml::one_line(&e)),
            )
        })?;
        let mut rules = Vec::new();
        for (pattern, value) in &file.hosts {
            let key = format!("hosts.{pattern:?}");
            let rule: HostRule = value.clone().try_into().map_err(|e: toml::de::Error| {
                bad(
                    path,
                    &key,
                    format!("{}; it takes port and user", e.message().trim()),
                )
            })?;
            if let Err(why) = check_pattern(pattern) {
                return Err(bad(path, &key, why));
            }
            if rule.port == Some(0) {
                return Err(bad(path, &key, "port 0; use 1 to 65535"));
            }
            rules.push((pattern.clone(), rule));
        }
        if file.port == Some(0) {
            return Err(bad(path, "port", "0 is not a port; use 1 to 65535"));
        }
        let config = Config {
            path: Some(path.to_path_buf()),
            file,
            rules,
            inventory: None,
        };
        // Values clap would parse are checked now, so a bad one is found whatever the command.
        config.throttle_limit()?;
        config.connect_timeout()?;
        config.output()?;
        config.color()?;
        config.store()?;
        config.retention()?;
        config.max_store_size()?;
        Ok(config)
    }

    fn path(&self) -> PathBuf {
        self.path.clone().unwrap_or_default()
    }

    pub fn throttle_limit(&self) -> Result<Option<u32>, UsageError> {
        match self.file.throttle_limit {
            None => Ok(None),
            Some(n) => crate::cli::parse_throttle_limit(&n.to_string())
                .map(Some)
                .map_err(|e| bad(&self.path(), "throttle_limit", e)),
        }
    }

    pub fn connect_timeout(&self) -> Result<Option<std::time::Duration>, UsageError> {
        match &self.file.connect_timeout {
            None => Ok(None),
            Some(text) => crate::cli::parse_duration(text)
                .map(Some)
                .map_err(|e| bad(&self.path(), "connect_timeout", e)),
        }
    }

    pub fn output(&self) -> Result<Option<crate::cli::OutputFormat>, UsageError> {
        self.value_enum("output", self.file.output.as_deref())
    }

    pub fn color(&self) -> Result<Option<crate::colour::ColorChoice>, UsageError> {
        self.value_enum("color", self.file.color.as_deref())
    }

    pub fn store(&self) -> Result<Option<String>, UsageError> {
        match &self.file.store {
            None => Ok(None),
            Some(text) => crate::cli::parse_store(text)
                .map(Some)
                .map_err(|e| bad(&self.path(), "store", e)),
        }
    }

    pub fn retention(&self) -> Result<Option<std::time::Duration>, UsageError> {
        match &self.file.retention {
            None => Ok(None),
            Some(text) => crate::store::retention::parse_age(text)
                .map(Some)
                .map_err(|e| bad(&self.path(), "retention", e)),
        }
    }

    pub fn max_store_size(&self) -> Result<Option<u64>, UsageError> {
        match &self.file.max_store_size {
            None => Ok(None),
            Some(text) => crate::store::retention::parse_size(text)
                .map(Some)
                .map_err(|e| bad(&self.path(), "max_store_size", e)),
        }
    }

    fn value_enum<T: clap::ValueEnum>(&self, key: &str, text: Option<&str>) -> Result<Option<T>, UsageError> {
        let Some(text) = text else { return Ok(None) };
        T::from_str(text, true).map(Some).map_err(|_| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect();
            bad(
                &self.path(),
                key,
                format!("{text:?} is not one of {}", names.join(", ")),
            )
        })
    }

    /// The default agent port and where it came from: `RJOB_PORT`, the file, 7443.
    pub fn port(&self) -> Result<(u16, Source), UsageError> {
        if let Some(text) = std::env::var_os(PORT_ENV).filter(|v| !v.is_empty()) {
            let text = text.to_string_lossy();
            return match text.parse::<u16>() {
                Ok(p) if p > 0 => Ok((p, Source::Env(PORT_ENV.to_string()))),
                _ => Err(UsageError(format!(
                    "{PORT_ENV}={text:?} is not a port: use a number from 1 to 65535"
                ))),
            };
        }
        Ok(match self.file.port {
            Some(p) => (p, Source::File(self.path())),
            None => (rjob_proto::DEFAULT_PORT, Source::Default),
        })
    }

    /// The inventory to read: `--inventory`/`RJOB_INVENTORY` (clap), the file, then the
    /// default place if a file is there.
    pub fn inventory_path(
        &self,
        flag: Option<&Path>,
        source: Option<ValueSource>,
    ) -> Option<(PathBuf, Source)> {
        if let Some(path) = flag {
            let source = match source {
                Some(ValueSource::EnvVariable) => Source::Env("RJOB_INVENTORY".to_string()),
                _ => Source::Flag("--inventory".to_string()),
            };
            return Some((path.to_path_buf(), source));
        }
        if let Some(path) = &self.file.inventory {
            return Some((expand_home(path), Source::File(self.path())));
        }
        crate::inventory::default_path().map(|p| (p, Source::Default))
    }

    /// The identity directory from the file, used when neither `--identity` nor
    /// `RJOB_IDENTITY` gives one.
    pub fn identity(&self) -> Option<PathBuf> {
        self.file.identity.as_deref().map(expand_home)
    }
}

/// `~/x` as `$HOME/x`.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

impl Defaults for Config {
    fn for_host(&self, name: &str) -> Settings {
        let mut settings = Settings {
            port: self.port().ok().map(|(p, _)| p),
            ..Settings::default()
        };
        // ssh_config: for each key, the first matching table that sets it wins.
        let (mut port, mut user) = (None, None);
        for (pattern, rule) in &self.rules {
            if crate::cmd::select::glob_match(pattern, name) {
                port = port.or(rule.port);
                user = user.or_else(|| rule.user.clone());
            }
        }
        if port.is_some() {
            settings.port = port;
        }
        settings.user = user;
        settings.vars = BTreeMap::new();
        settings
    }
}

pub mod apply;

#[cfg(test)]
mod tests;
