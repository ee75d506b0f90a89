use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use rjob::cli::{Cli, Command, ConfigCommand};
use rjob::cmd::{self, control::Action, DaemonAddr};
use rjob::connect::{identity_dir, Tls};
use rjob::daemon::{self, DaemonConfig};
use rjob::EXIT_USAGE;

fn main() -> ExitCode {
    rjob::memory::keep_freed_memory();
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return usage_error(e),
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RJOB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The config file fills in what neither a flag nor RJOB_* gave (file < env < flags).
    let config = rjob::config::Config::load(cli.config.as_deref()).and_then(|mut config| {
        rjob::config::apply::apply(&mut cli, &matches, &mut config)?;
        Ok(config)
    });
    match config {
        Ok(config) => rjob::config::install(config),
        Err(e) => {
            eprintln!("rjob: error: {}", rjob::escape::text(&e.to_string()));
            return ExitCode::from(EXIT_USAGE);
        }
    }
    // Any command warns when the controller's certificate is about to expire.
    if !matches!(
        cli.command,
        Command::CompleteJobs | Command::CompleteGroups | Command::Completions(_) | Command::Schema { .. }
    ) {
        if let Some(warning) = rjob::connect::identity_dir(cli.identity.as_deref())
            .ok()
            .and_then(|dir| rjob::pki::fleet::expiry_warning(&dir))
        {
            eprintln!("rjob: warning: {}", rjob::escape::text(&warning));
        }
    }
    match dispatch(cli, &matches) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rjob: error: {}", error_line(&e));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A command line clap refused. A bad value (`--timeout 99999999999999999999years`) is one
/// line naming the option and the value; other mistakes keep clap's usage text, and `--help`
/// and `--version` print as clap prints them.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        let text = e.render().to_string();
        // The message, up to clap's blank line before its hints, on one line.
        let message: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        eprintln!("rjob: {}", rjob::escape::text(&message.join(" ")));
        return ExitCode::from(EXIT_USAGE);
    }
    e.exit()
}

/// The error and its causes on one line, each cause once: an error whose message already
/// quotes its source (`cannot read F: No such file (os error 2)`) does not get it again.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    rjob::escape::text(&line).into_owned()
}

fn dispatch(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<u8> {
    let runtime = || tokio::runtime::Runtime::new();
    let daemon_addr = |cli: &Cli| -> anyhow::Result<DaemonAddr> {
        Ok(DaemonAddr {
            state_dir: daemon::state_dir(cli.state_dir.as_deref())?,
            identity: identity_dir(cli.identity.as_deref()).ok(),
        })
    };
    if let Command::Invoke(args) = &cli.command {
        if args.list_hosts {
            let look = cmd::hosts::Look {
                fold: false,
                verbose: false,
                users: true,
                output: args.output,
            };
            let targets = rjob::request::targets(args)?;
            return Ok(cmd::hosts::print(&targets, &look));
        }
    }
    // What the command line asks is checked before any file is read or anything contacted.
    match &cli.command {
        Command::Invoke(args) => rjob::checks::invoke(args)?,
        Command::Start(args) => rjob::checks::start(args)?,
        _ => {}
    }
    match &cli.command {
        Command::Invoke(args) if args.session.is_some() => {
            runtime()?.block_on(cmd::session::invoke(args, &daemon_addr(&cli)?))
        }
        Command::Invoke(args) if args.as_job => {
            let daemon = daemon_addr(&cli)?;
            runtime()?.block_on(cmd::start::invoke_as_job(args, &daemon))
        }
        Command::Invoke(args) => {
            // Through the daemon when some hosts dialled in to it; else dialled from here.
            let state_dir = daemon::state_dir(cli.state_dir.as_deref()).ok();
            let tls = || Ok(Tls::load(&identity_dir(cli.identity.as_deref())?)?);
            runtime()?.block_on(cmd::route::invoke(args, state_dir.as_deref(), tls))
        }
        Command::Start(args) => runtime()?.block_on(cmd::start::start(args, &daemon_addr(&cli)?)),
        Command::Jobs(args) => runtime()?.block_on(cmd::jobs::run(args, &daemon_addr(&cli)?)),
        Command::Wait(args) => runtime()?.block_on(cmd::wait::run(args, &daemon_addr(&cli)?)),
        Command::Daemon(command) => runtime()?.block_on(cmd::daemon::run(command, &daemon_addr(&cli)?)),
        Command::Session(command) => runtime()?.block_on(cmd::session::run(command, &daemon_addr(&cli)?)),
        Command::Rerun(args) => runtime()?.block_on(cmd::rerun::run(args, &daemon_addr(&cli)?)),
        Command::Receive(args) => runtime()?.block_on(cmd::receive::run(args, &daemon_addr(&cli)?)),
        Command::Watch(args) => runtime()?.block_on(cmd::watch::run(args, &daemon_addr(&cli)?)),
        Command::Stop(args) => {
            runtime()?.block_on(cmd::control::run(Action::Stop, args, &daemon_addr(&cli)?))
        }
        Command::Suspend(args) => {
            runtime()?.block_on(cmd::control::run(Action::Suspend, args, &daemon_addr(&cli)?))
        }
        Command::Resume(args) => {
            runtime()?.block_on(cmd::control::run(Action::Resume, args, &daemon_addr(&cli)?))
        }
        Command::Remove(args) => runtime()?.block_on(cmd::control::remove(args, &daemon_addr(&cli)?)),
        Command::Serve(args) => {
            let state_dir = daemon::state_dir(cli.state_dir.as_deref())?;
            let identity = identity_dir(cli.identity.as_deref()).ok();
            let tls = match identity_dir(cli.identity.as_deref()).and_then(|dir| Tls::load(&dir)) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    tracing::warn!(error = %e, "no controller identity yet: only local jobs (rjob start) run until it is there; it is loaded then, with no restart");
                    None
                }
            };
            let config = DaemonConfig {
                state_dir,
                tls,
                identity_dir: identity,
                reconnect_window: args.reconnect_window,
                store: args.store.clone(),
                retention: rjob::store::retention::Policy {
                    max_age: args.retention,
                    max_size: args.max_store_size,
                    force: args.force_retention,
                },
                retention_interval: args
                    .retention_interval
                    .unwrap_or(rjob::daemon::retention::DEFAULT_INTERVAL),
                agent_listen: args.agent_listen,
            };
            runtime()?.block_on(daemon::serve(config, rjob::signals::shutdown_signal()))?;
            Ok(0)
        }
        Command::Pki(command) => cmd::pki::run(command, cli.identity.as_deref()).map(|()| 0),
        Command::Hosts(args) => Ok(cmd::hosts::run(args)?),
        Command::Config(ConfigCommand::Show(args)) => {
            print!("{}", cmd::config::show(&cli, args, matches, rjob::config::get())?);
            Ok(0)
        }
        Command::Completions(args) => cmd::completions::completions(args.shell),
        Command::Man { dir } => cmd::completions::man(dir),
        Command::Schema { record } => cmd::schema::run(record.as_deref()),
        Command::CompleteGroups => Ok(cmd::completions::groups()),
        Command::CompleteJobs => {
            let state_dir = daemon::state_dir(cli.state_dir.as_deref())?;
            Ok(runtime()?.block_on(cmd::completions::jobs(&state_dir)))
        }
    }
}
