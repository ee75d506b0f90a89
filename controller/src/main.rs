use std::process::ExitCode;

use clap::Parser as _;
use rjob::cli::{Cli, Command, PkiCommand};
use rjob::connect::{identity_dir, Tls};
use rjob::EXIT_USAGE;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RJOB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rjob: error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Invoke(args) => {
            let dir = identity_dir(cli.identity.as_deref())?;
            let tls = Tls::load(&dir)?;
            let runtime = tokio::runtime::Runtime::new()?;
            Ok(runtime.block_on(rjob::invoke::run(&args, tls))?)
        }
        Command::Pki(cmd) => pki(cmd, cli.identity.as_deref()).map(|()| 0),
    }
}

fn pki(cmd: PkiCommand, identity: Option<&std::path::Path>) -> anyhow::Result<()> {
    let ca_dir = |flag: Option<std::path::PathBuf>| -> anyhow::Result<std::path::PathBuf> {
        Ok(match flag {
            Some(d) => d,
            None => identity_dir(identity)?,
        })
    };
    match cmd {
        PkiCommand::Init { dir, client_name } => {
            rjob::pki::init(&dir, &client_name)?;
            println!(
                "created a CA and the client identity {client_name:?} in {}",
                dir.display()
            );
        }
        PkiCommand::IssueAgent {
            name,
            san,
            ca_dir: flag,
            out,
        } => {
            let ca = ca_dir(flag)?;
            let out = out.unwrap_or_else(|| ca.join("agents").join(&name));
            rjob::pki::issue_agent(&ca, &name, &san, &out)?;
            println!("issued agent certificate {name:?} in {}", out.display());
        }
        PkiCommand::IssueClient {
            name,
            ca_dir: flag,
            out,
        } => {
            let ca = ca_dir(flag)?;
            let out = out.unwrap_or_else(|| ca.join("clients").join(&name));
            rjob::pki::issue_client(&ca, &name, &out)?;
            println!("issued client certificate {name:?} in {}", out.display());
        }
    }
    Ok(())
}
