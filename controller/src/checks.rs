//! What the command line asks for, checked as the agents and the daemon check it, before
//! any file is read, any password asked or anything contacted. Each problem is a one-line
//! usage error (exit status 2). `rjob invoke`, `rjob invoke --as-job` and `rjob start` share
//! these checks.

use std::time::Duration;

use crate::cli::{InvokeArgs, ScriptArgs, StartArgs};
use crate::escape;
use crate::UsageError;

/// Longest job name, in bytes.
pub const MAX_JOB_NAME_BYTES: usize = 256;
/// Longest `--timeout`: the agents' `max_timeout` default.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest run-as user name, in bytes (the agents refuse longer ones before any lookup).
pub const MAX_USER_BYTES: usize = 32;

/// `rjob invoke`, with or without `--as-job`.
pub fn invoke(args: &InvokeArgs) -> Result<(), UsageError> {
    script(&args.script)?;
    if args.connect_timeout.is_zero() {
        return Err(UsageError(
            "--connect-timeout must be more than 0: write a duration like 5s".into(),
        ));
    }
    if let Some(name) = &args.job_name {
        job_name(name).map_err(UsageError)?;
    }
    Ok(())
}

/// `rjob start`.
pub fn start(args: &StartArgs) -> Result<(), UsageError> {
    script(&args.script)?;
    if let Some(name) = &args.name {
        job_name(name).map_err(UsageError)?;
    }
    Ok(())
}

/// A job as the daemon receives it, from any client of its socket: its name, if it has one,
/// and its hosts' names, checked as the CLI checks them.
pub fn create_job(req: &rjob_proto::v1::CreateJobRequest) -> Result<(), String> {
    if !req.name.is_empty() {
        job_name(&req.name)?;
    }
    for host in &req.hosts {
        crate::hosts::check_host_name(&host.name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What to run and how: environment, working directory, timeout, user.
pub fn script(args: &ScriptArgs) -> Result<(), UsageError> {
    for (name, _) in &args.env {
        env_name(name).map_err(UsageError)?;
    }
    if let Some(dir) = &args.cwd {
        // The agents' rule: an absolute path (the directory on each host; nothing to be
        // relative to there).
        if !dir.starts_with('/') {
            return Err(UsageError(format!(
                "--cwd \"{}\" must be an absolute path such as /srv/app: it names a directory on each host",
                escape::text(dir)
            )));
        }
    }
    match args.timeout {
        Some(t) if t.is_zero() => {
            return Err(UsageError("--timeout must be more than 0".into()));
        }
        Some(t) if t > MAX_TIMEOUT => {
            return Err(UsageError(format!(
                "--timeout {} is longer than agents allow ({}, their max_timeout default)",
                humantime::format_duration(t),
                humantime::format_duration(MAX_TIMEOUT)
            )));
        }
        _ => {}
    }
    if let Some(user) = &args.user {
        user_name(user).map_err(UsageError)?;
    }
    Ok(())
}

/// An environment variable name as the agents accept it: letters, digits and `_`, not
/// starting with a digit.
pub fn env_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "environment variable name \"{}\" is invalid: use letters, digits and _, not starting with a digit (-e NAME=VALUE)",
            escape::text(name)
        ))
    }
}

/// A run-as user name: a portable one (letters, digits, `.`, `_`, `-`, not starting with
/// `-`) of at most [`MAX_USER_BYTES`] bytes.
pub fn user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("--user needs a user name".into());
    }
    if name.len() > MAX_USER_BYTES {
        return Err(format!(
            "user name \"{}\"… is {} bytes long; user names have at most {MAX_USER_BYTES}",
            escape::text(&name.chars().take(16).collect::<String>()),
            name.len()
        ));
    }
    let portable = !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !portable {
        return Err(format!(
            "user name \"{}\" is invalid: use letters, digits, '.', '_' and '-', not starting with '-'",
            escape::text(name)
        ));
    }
    Ok(())
}

/// A job name as the daemon accepts it: 1 to [`MAX_JOB_NAME_BYTES`] bytes, no control
/// characters, no space around it, and nothing a job reference would read as an Id or an
/// InstanceId (`12`, `+3`, a UUID).
pub fn job_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a job name cannot be empty: leave the option out for JobN".into());
    }
    if name.len() > MAX_JOB_NAME_BYTES {
        return Err(format!(
            "the job name is {} bytes long; job names have at most {MAX_JOB_NAME_BYTES}",
            name.len()
        ));
    }
    let shown = escape::text(name);
    if name.chars().any(char::is_control) {
        return Err(format!(
            "job name \"{shown}\" holds control characters: use printable text"
        ));
    }
    if name.trim() != name {
        return Err(format!(
            "job name \"{shown}\" starts or ends with white space: jobs are named without it"
        ));
    }
    if name.parse::<i64>().is_ok() {
        return Err(format!(
            "job name \"{shown}\" is a number, which names a job by its Id: add a letter (e.g. job-{})",
            name.trim_start_matches('+')
        ));
    }
    if uuid::Uuid::try_parse(name).is_ok() {
        return Err(format!(
            "job name \"{shown}\" is a UUID, which names a job by its InstanceId: choose another"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_that_a_reference_would_misread_are_refused() {
        for bad in ["1", "007", "+3", "-1", " x", "x\n", "a\u{1b}b", ""] {
            assert!(job_name(bad).is_err(), "{bad:?}");
        }
        assert!(job_name("6f1c1b8e-3c2a-4a55-9d51-1d2c3b4a5f60").is_err());
        assert!(job_name(&"x".repeat(257)).is_err());
        for good in ["patch-check", "job 1", "1a", &"x".repeat(256)] {
            assert!(job_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn env_names_follow_the_agents_rule() {
        for bad in ["A B", "", "1X", "A-B", "Ä"] {
            assert!(env_name(bad).is_err(), "{bad:?}");
        }
        for good in ["A", "_x1", "PATH"] {
            assert!(env_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn user_names_are_portable_and_short() {
        for bad in ["", "-x", "a b", "a:b", &"u".repeat(33), "root\n"] {
            assert!(user_name(bad).is_err(), "{bad:?}");
        }
        for good in ["postgres", "svc.backup", "a_b-c", &"u".repeat(32)] {
            assert!(user_name(good).is_ok(), "{good:?}");
        }
    }
}
