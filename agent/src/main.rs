use clap::Parser as _;
use rjob_agent::config::{AgentConfig, Args};
use tracing_subscriber::EnvFilter;

// One thread serves every connection and run: the agent mostly waits, and a run's start is a
// handful of short system calls. Whatever may block for long (password checks, user database
// lookups, flushing spool files) goes to the blocking pool.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    rjob_agent::keep_freed_memory();
    let args = Args::parse();
    let json_logs = args.log_format.as_deref() == Some("json");
    let spec = std::env::var("RJOB_LOG").unwrap_or_else(|_| "info".to_string());
    let filter = EnvFilter::try_new(with_audit(&spec)).unwrap_or_else(|_| EnvFilter::new(with_audit("info")));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    raise_open_file_limit();
    no_inherited_descriptors();
    let config = match AgentConfig::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rjob-agent: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match rjob_agent::server::serve(config, rjob_agent::server::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rjob-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Audit records (target `audit`) are kept whatever level the rest of the log is at
/// (`RJOB_LOG=warn` quiets the agent, not its audit trail), unless the filter names the audit
/// target itself (`RJOB_LOG=warn,audit=off`).
fn with_audit(spec: &str) -> String {
    let names_audit = spec.split(',').any(|directive| {
        let directive = directive.trim();
        directive == "audit" || directive.starts_with("audit=") || directive.starts_with("audit[")
    });
    if names_audit {
        spec.to_string()
    } else {
        format!("{spec},audit=info")
    }
}

/// Whatever descriptors the agent was started with (beyond stdin, stdout and stderr) must not
/// reach the runs' processes: they are marked close-on-exec.
fn no_inherited_descriptors() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot mark inherited descriptors close-on-exec");
    }
}

/// Every run holds pipes and its spool file open, and every controller a connection: take
/// the hard limit on open files rather than the (often 1024) soft one.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_audit;

    #[test]
    fn audit_records_stay_on_unless_the_filter_names_them() {
        assert_eq!(with_audit("warn"), "warn,audit=info");
        assert_eq!(with_audit("info,h2=warn"), "info,h2=warn,audit=info");
        assert_eq!(with_audit("warn,audit=off"), "warn,audit=off");
        assert_eq!(with_audit("audit"), "audit");
        assert_eq!(with_audit("warn, audit[run]=debug"), "warn, audit[run]=debug");
        // A target that merely starts with the word is not the audit target.
        assert_eq!(with_audit("auditor=debug"), "auditor=debug,audit=info");
    }
}
