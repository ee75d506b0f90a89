//! A run request built from the command line: the hosts, the script and the options around it.
//! `rjob invoke` sends it to each agent; `rjob start` and `rjob invoke --as-job` hand it to the
//! daemon.

use rjob_proto::v1 as pb;

use crate::cli::{InvokeArgs, ScriptArgs};
use crate::hosts::{self, Host};
use crate::inventory::select::Target;
use crate::UsageError;

/// Largest script the controller sends (agents may allow less).
pub const MAX_SCRIPT_BYTES: usize = 1 << 20;

/// The hosts named by `-H` and `--hosts-file` (less `-x`), each with the user it runs as:
/// `--user` (or `RJOB_USER`) for every host, else the inventory's user for it (its host entry,
/// then its groups), else the config file's `[hosts."pattern"]` user; `None`: the agents'
/// policy default.
pub fn targets(args: &InvokeArgs) -> Result<Vec<Target>, UsageError> {
    let mut specs = args.hosts.clone();
    if let Some(path) = &args.hosts_file {
        specs.extend(hosts::parse_hosts_file(path).map_err(|e| UsageError(e.to_string()))?);
    }
    let mut targets = crate::inventory::select::from_command_line(&specs, &args.exclude)?;
    if let Some(user) = &args.script.user {
        for t in &mut targets {
            t.user = Some(user.clone());
        }
    }
    Ok(targets)
}

/// The hosts to dial and each one's run-as user, in the same order.
pub fn host_list(args: &InvokeArgs) -> Result<(Vec<Host>, Vec<Option<String>>), UsageError> {
    Ok(targets(args)?.into_iter().map(|t| (t.host, t.user)).unzip())
}

/// What to run, from `--script`/`--file` and the options around them, for hosts that run as
/// `users` (each host's; the password, if any, is for their one user).
pub fn run_request(args: &ScriptArgs, users: &[Option<String>]) -> Result<pb::StartRunRequest, UsageError> {
    let script = match (&args.script, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => crate::limits::read_text_file(path, MAX_SCRIPT_BYTES as u64, "script file")?,
        (None, None) => {
            return Err(UsageError(
                "give the script with --script TEXT or --file PATH".into(),
            ))
        }
    };
    if script.len() > MAX_SCRIPT_BYTES {
        return Err(UsageError(format!(
            "the script is {} bytes; rjob sends at most {MAX_SCRIPT_BYTES}: copy large payloads separately and run a small script",
            script.len()
        )));
    }
    if script.trim().is_empty() {
        return Err(UsageError("the script is empty".into()));
    }
    let stdin = match &args.stdin_file {
        Some(path) => Some(crate::limits::read_file(
            path,
            crate::limits::MAX_STDIN_BYTES,
            "stdin file",
        )?),
        None => None,
    };
    let timeout_ms = match args.timeout {
        Some(d) if d.is_zero() => return Err(UsageError("--timeout must be more than 0".into())),
        Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        None => 0,
    };
    Ok(pb::StartRunRequest {
        script,
        interpreter: args.shell.clone(),
        args: args.args.clone(),
        stdin,
        env: args.env.iter().cloned().collect(),
        working_dir: args.cwd.clone().unwrap_or_default(),
        timeout_ms,
        label: String::new(),
        run_as: args.user.clone().unwrap_or_default(),
        password: crate::password::read(args, users)?
            .map(|p| p.to_string())
            .unwrap_or_default(),
        // Set for each run as it starts (crate::flow), from how many hosts stream then.
        max_chunk_bytes: 0,
    })
}

/// How a job lists its command: the script's first line, or the file's name.
pub fn command_text(args: &ScriptArgs) -> String {
    match (&args.script, &args.file) {
        (Some(text), _) => {
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim();
            if first.chars().count() > 60 || text.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
                format!("{}…", first.chars().take(60).collect::<String>())
            } else {
                first.to_string()
            }
        }
        (None, Some(path)) => path.display().to_string(),
        (None, None) => String::new(),
    }
}
