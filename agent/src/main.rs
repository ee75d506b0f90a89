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
    let filter = EnvFilter::try_from_env("RJOB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
