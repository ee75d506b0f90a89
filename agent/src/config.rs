//! Agent settings: command-line flags over a TOML config file over built-in defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/rjob/agent.toml";

/// rjob-agent: runs rjob script blocks on this machine, over mutual TLS.
///
/// Every setting can also be given in a TOML config file (`--config`), with the same names
/// in snake_case (for example `max_concurrent_runs = 64`); flags win over the file.
#[derive(Debug, Parser)]
#[command(name = "rjob-agent", version)]
pub struct Args {
    /// TOML config file [default: /etc/rjob/agent.toml when it exists]
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:7443; with --connect: none, the agent only
    /// dials out unless --listen is given too]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The agent's certificate (PEM)
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The agent's private key (PEM)
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// CA certificate(s) that sign the client certificates this agent accepts (PEM)
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// Where runs' output is kept until the controller has it [default: /var/lib/rjob-agent/spool]
    #[arg(long)]
    pub spool_dir: Option<PathBuf>,
    /// Most runs at once [default: 64]
    #[arg(long)]
    pub max_concurrent_runs: Option<u32>,
    /// Most runs going at once for one client identity [default: max_concurrent_runs]
    #[arg(long)]
    pub max_runs_per_identity: Option<u32>,
    /// Most environment variables one run may set [default: 1024]
    #[arg(long)]
    pub max_env_entries: Option<u32>,
    /// Most bytes of environment variables one run may set (NAME=value, all together) [default: 262144]
    #[arg(long)]
    pub max_env_bytes: Option<u64>,
    /// Largest script accepted, in bytes [default: 1048576]
    #[arg(long)]
    pub max_script_bytes: Option<u64>,
    /// Largest stdin accepted, in bytes [default: 4194304]
    #[arg(long)]
    pub max_stdin_bytes: Option<u64>,
    /// Most output one run may write (stdout and stderr together), in bytes [default: 4294967296]
    #[arg(long)]
    pub max_output_bytes: Option<u64>,
    /// Timeout of a run that asks for none, e.g. 30m [default: 24h]
    #[arg(long)]
    pub default_timeout: Option<String>,
    /// Longest timeout a run may ask for [default: 7d]
    #[arg(long)]
    pub max_timeout: Option<String>,
    /// How long an ended run's output is kept when nobody acknowledges it [default: 7d]
    #[arg(long)]
    pub retention: Option<String>,
    /// Time between SIGTERM and SIGKILL when a run is stopped or times out [default: 5s]
    #[arg(long)]
    pub kill_grace: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long)]
    pub log_format: Option<String>,
    /// Run-as policy (TOML): which client identities may run as which users. Required when the
    /// agent runs as root; without one, a non-root agent runs scripts only as its own user.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// PAM service that checks passwords [default: rjob]
    #[arg(long)]
    pub pam_service: Option<String>,
    /// Most TLS handshakes in flight; when full, a newcomer displaces the oldest handshake of
    /// the source holding the most, or is refused [default: 512]
    #[arg(long)]
    pub max_handshakes: Option<u32>,
    /// Most TLS handshakes in flight from one source address (an IPv6 /64); more are refused
    /// at once [default: 32]
    #[arg(long)]
    pub max_handshakes_per_source: Option<u32>,
    /// How long a client has to complete the TLS handshake, e.g. 3s [default: 3s]
    #[arg(long)]
    pub handshake_timeout: Option<String>,
    /// Handshakes that fail are logged as one count per this interval [default: 10s]
    #[arg(long)]
    pub handshake_log_interval: Option<String>,
    /// Most bytes the spool's run files may hold together before new runs are refused
    /// [default: 8589934592]
    #[arg(long)]
    pub max_spool_bytes: Option<u64>,
    /// How a run's processes are kept together and killed: auto (cgroup where the agent's
    /// cgroup is delegated to it, else subreaper), cgroup, subreaper [default: auto]
    #[arg(long, value_enum)]
    pub containment: Option<crate::contain::Mode>,
    /// Dial out to a controller (`rjob serve --agent-listen`) at HOST:PORT and serve it over
    /// that connection, for agents behind NAT or a firewall; may be repeated. Mutual TLS is
    /// as when the controller dials in [config file: connect = ["HOST:PORT", ...]]
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Vec<String>,
    /// The name this agent announces when it dials out; its certificate must carry it
    /// [default: the certificate's first DNS name, else its first IP address]
    #[arg(long)]
    pub name: Option<String>,
}

/// The config file; every key is optional, unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    pub max_concurrent_runs: Option<u32>,
    pub max_runs_per_identity: Option<u32>,
    pub max_env_entries: Option<u32>,
    pub max_env_bytes: Option<u64>,
    pub max_script_bytes: Option<u64>,
    pub max_stdin_bytes: Option<u64>,
    pub max_output_bytes: Option<u64>,
    pub default_timeout: Option<String>,
    pub max_timeout: Option<String>,
    pub retention: Option<String>,
    pub kill_grace: Option<String>,
    pub log_format: Option<String>,
    pub policy: Option<PathBuf>,
    pub pam_service: Option<String>,
    pub max_handshakes: Option<u32>,
    pub max_handshakes_per_source: Option<u32>,
    pub handshake_timeout: Option<String>,
    pub handshake_log_interval: Option<String>,
    pub max_spool_bytes: Option<u64>,
    pub containment: Option<crate::contain::Mode>,
    pub connect: Option<Vec<String>>,
    pub name: Option<String>,
    /// `LANG` of every run [default: C.UTF-8]
    pub lang: Option<String>,
    /// Interpreters callers may choose by name, with their absolute paths.
    /// [default: sh = /bin/sh, bash = /bin/bash]
    pub interpreters: Option<BTreeMap<String, PathBuf>>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `None`: no listener; the agent only dials out (`connect`).
    pub listen: Option<SocketAddr>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub spool_dir: PathBuf,
    pub max_concurrent_runs: u32,
    /// Most runs going at once (not yet ended) for one client identity.
    pub max_runs_per_identity: u32,
    pub max_env_entries: u32,
    pub max_env_bytes: u64,
    pub max_script_bytes: u64,
    pub max_stdin_bytes: u64,
    pub max_output_bytes: u64,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub retention: Duration,
    pub kill_grace: Duration,
    pub json_logs: bool,
    pub lang: String,
    pub interpreters: BTreeMap<String, PathBuf>,
    pub policy: Option<PathBuf>,
    pub pam_service: String,
    /// TLS handshakes in flight: overall, and per source (see [`crate::handshake`]).
    pub max_handshakes: u32,
    pub max_handshakes_per_source: u32,
    pub handshake_timeout: Duration,
    pub handshake_log_interval: Duration,
    pub max_spool_bytes: u64,
    pub containment: crate::contain::Mode,
    /// Controllers to dial out to (`HOST:PORT`), see [`crate::dialout`].
    pub connect: Vec<String>,
    /// The name announced when dialling out; `None`: the certificate's first name.
    pub name: Option<String>,
}

pub const DEFAULT_INTERPRETER: &str = "sh";

/// Default of `max_spool_bytes`: 8 GiB, twice the default output limit of one run.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 8 << 30;

impl AgentConfig {
    /// Settings of the controller daemon's embedded agent, which runs local jobs
    /// (`rjob start`) with the same code as remote ones. It serves a private Unix socket,
    /// so the TLS paths stay empty.
    pub fn local(spool_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_ca: PathBuf::new(),
            spool_dir,
            max_concurrent_runs: 64,
            max_runs_per_identity: 64,
            max_env_entries: 1024,
            max_env_bytes: 256 << 10,
            max_script_bytes: 1 << 20,
            max_stdin_bytes: 4 << 20,
            max_output_bytes: 4 << 30,
            default_timeout: Duration::from_secs(24 * 3600),
            max_timeout: Duration::from_secs(7 * 24 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            kill_grace: Duration::from_secs(5),
            json_logs: false,
            lang: "C.UTF-8".to_string(),
            interpreters: default_interpreters()
                .into_iter()
                .filter(|(_, path)| path.is_file())
                .collect(),
            policy: None,
            pam_service: "rjob".to_string(),
            max_handshakes: 512,
            max_handshakes_per_source: 32,
            handshake_timeout: Duration::from_secs(3),
            handshake_log_interval: Duration::from_secs(10),
            max_spool_bytes: DEFAULT_MAX_SPOOL_BYTES,
            containment: crate::contain::Mode::Auto,
            connect: Vec::new(),
            name: None,
        }
    }
}

fn default_interpreters() -> BTreeMap<String, PathBuf> {
    BTreeMap::from([
        ("sh".to_string(), PathBuf::from("/bin/sh")),
        ("bash".to_string(), PathBuf::from("/bin/bash")),
    ])
}

impl AgentConfig {
    pub fn load(args: Args) -> anyhow::Result<AgentConfig> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => read_file(Path::new(DEFAULT_CONFIG_PATH))?,
            None => FileConfig::default(),
        };
        let required = |flag: Option<PathBuf>, key: Option<PathBuf>, name: &str| {
            flag.or(key).with_context(|| {
                format!(
                    "no --{} given: set it on the command line or as `{}` in the config file",
                    name.replace('_', "-"),
                    name
                )
            })
        };
        let duration =
            |flag: Option<String>, key: Option<String>, name: &str| -> anyhow::Result<Option<Duration>> {
                flag.or(key)
                    .map(|text| {
                        humantime::parse_duration(&text).with_context(|| {
                            format!("{name} = {text:?} is not a duration: write it like 30s, 10m or 24h")
                        })
                    })
                    .transpose()
            };
        let log_format = args
            .log_format
            .or(file.log_format)
            .unwrap_or_else(|| "text".into());
        let json_logs = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => bail!("log format {other:?} is unknown: use text or json"),
        };
        let mut interpreters = file.interpreters.unwrap_or_else(default_interpreters);
        for (name, path) in &interpreters {
            if !path.is_absolute() {
                bail!("interpreter {name} = {} must be an absolute path", path.display());
            }
        }
        interpreters.retain(|name, path| {
            let ok = path.is_file();
            if !ok {
                tracing::warn!(interpreter = %name, path = %path.display(), "interpreter not installed; not offered");
            }
            ok
        });
        let d = AgentConfig::local(PathBuf::from("/var/lib/rjob-agent/spool"));
        let mut config = AgentConfig {
            listen: args.listen.or(file.listen),
            cert: required(args.cert, file.cert, "cert")?,
            key: required(args.key, file.key, "key")?,
            client_ca: required(args.client_ca, file.client_ca, "client_ca")?,
            spool_dir: args.spool_dir.or(file.spool_dir).unwrap_or(d.spool_dir),
            max_concurrent_runs: args
                .max_concurrent_runs
                .or(file.max_concurrent_runs)
                .unwrap_or(d.max_concurrent_runs),
            // Set below: its default is max_concurrent_runs.
            max_runs_per_identity: 0,
            max_env_entries: args
                .max_env_entries
                .or(file.max_env_entries)
                .unwrap_or(d.max_env_entries),
            max_env_bytes: args
                .max_env_bytes
                .or(file.max_env_bytes)
                .unwrap_or(d.max_env_bytes),
            max_script_bytes: args
                .max_script_bytes
                .or(file.max_script_bytes)
                .unwrap_or(d.max_script_bytes),
            max_stdin_bytes: args
                .max_stdin_bytes
                .or(file.max_stdin_bytes)
                .unwrap_or(d.max_stdin_bytes),
            max_output_bytes: args
                .max_output_bytes
                .or(file.max_output_bytes)
                .unwrap_or(d.max_output_bytes),
            default_timeout: duration(args.default_timeout, file.default_timeout, "default_timeout")?
                .unwrap_or(d.default_timeout),
            max_timeout: duration(args.max_timeout, file.max_timeout, "max_timeout")?
                .unwrap_or(d.max_timeout),
            retention: duration(args.retention, file.retention, "retention")?.unwrap_or(d.retention),
            kill_grace: duration(args.kill_grace, file.kill_grace, "kill_grace")?.unwrap_or(d.kill_grace),
            json_logs,
            lang: file.lang.unwrap_or(d.lang),
            interpreters,
            policy: args.policy.or(file.policy),
            pam_service: args.pam_service.or(file.pam_service).unwrap_or(d.pam_service),
            max_handshakes: args
                .max_handshakes
                .or(file.max_handshakes)
                .unwrap_or(d.max_handshakes),
            max_handshakes_per_source: args
                .max_handshakes_per_source
                .or(file.max_handshakes_per_source)
                .unwrap_or(d.max_handshakes_per_source),
            handshake_timeout: duration(
                args.handshake_timeout,
                file.handshake_timeout,
                "handshake_timeout",
            )?
            .unwrap_or(d.handshake_timeout),
            handshake_log_interval: duration(
                args.handshake_log_interval,
                file.handshake_log_interval,
                "handshake_log_interval",
            )?
            .unwrap_or(d.handshake_log_interval),
            max_spool_bytes: args
                .max_spool_bytes
                .or(file.max_spool_bytes)
                .unwrap_or(d.max_spool_bytes),
            containment: args.containment.or(file.containment).unwrap_or(d.containment),
            connect: if args.connect.is_empty() {
                file.connect.unwrap_or_default()
            } else {
                args.connect
            },
            name: args.name.or(file.name),
        };
        if config.listen.is_none() && config.connect.is_empty() {
            // An agent that dials out opens no port unless asked to: behind NAT nothing could
            // reach it, and deny by default.
            config.listen = Some(SocketAddr::from(([0, 0, 0, 0], rjob_proto::DEFAULT_PORT)));
        }
        for target in &config.connect {
            if !crate::dialout::valid_target(target) {
                bail!("connect = {target:?} is not HOST:PORT (the controller's `rjob serve --agent-listen` address)");
            }
        }
        if let Some(name) = &config.name {
            if !rjob_proto::dial::valid_name(name) {
                bail!("name = {name:?} is not a host name");
            }
        }
        for (name, value) in [
            ("max_handshakes", config.max_handshakes),
            ("max_handshakes_per_source", config.max_handshakes_per_source),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1 (0 would refuse every controller)");
            }
        }
        for (name, value) in [
            ("handshake_timeout", config.handshake_timeout),
            ("handshake_log_interval", config.handshake_log_interval),
        ] {
            if value.is_zero() {
                bail!("{name} must be longer than 0s");
            }
        }
        if config.max_concurrent_runs == 0 {
            bail!("max_concurrent_runs must be at least 1");
        }
        config.max_runs_per_identity = args
            .max_runs_per_identity
            .or(file.max_runs_per_identity)
            .unwrap_or(config.max_concurrent_runs);
        if config.max_runs_per_identity == 0 {
            bail!("max_runs_per_identity must be at least 1");
        }
        if config.max_spool_bytes == 0 {
            bail!("max_spool_bytes must be at least 1");
        }
        if config.default_timeout > config.max_timeout {
            bail!("default_timeout is longer than max_timeout");
        }
        if !config.interpreters.contains_key(DEFAULT_INTERPRETER) {
            bail!("the interpreter list must offer `{DEFAULT_INTERPRETER}`, the default");
        }
        Ok(config)
    }
}

/// A TOML error in one line: what is wrong, and where (`line N`).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), toml_error(&text, &e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_holds_only_known_keys() {
        let text = include_str!("../../deploy/agent.toml");
        let file = toml::from_str::<FileConfig>(text).map_err(|e| toml_error(text, &e));
        let file = file.as_ref().map_err(String::as_str);
        assert_eq!(
            file.map(|f| (f.max_env_entries, f.max_env_bytes)),
            Ok((Some(1024), Some(256 << 10)))
        );
    }
}
