//! Checks of a start request that need nothing but the request and the config: the run-as
//! name, sizes, the environment, the interpreter, the timeout. They run before any user
//! lookup, password check or other work, so a hostile request costs the agent nothing more.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rjob_proto::v1 as pb;
use tonic::Status;

use crate::config::{AgentConfig, DEFAULT_INTERPRETER};
use crate::runner::{RunSpec, RunUser};

/// The longest user name accepted (bytes): longer ones are refused before any lookup.
pub const MAX_USER_NAME_BYTES: usize = 32;

/// The most bytes one environment string (`NAME=value` and its NUL) or one argument may
/// have: Linux refuses longer ones at exec (`MAX_ARG_STRLEN`, 32 pages).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// At most this much of a caller's string is shown back in an error message.
const SHOWN: usize = 64;

/// A request's checked parts, everything but the user (decided by the policy later).
#[derive(Debug)]
pub struct Checked {
    pub interpreter: PathBuf,
    pub env: BTreeMap<String, String>,
    pub working_dir: Option<PathBuf>,
    pub timeout: Duration,
}

impl Checked {
    /// The run to start, once the policy has decided the user.
    pub fn into_spec(self, req: &pb::StartRunRequest, user: RunUser, lang: &str) -> RunSpec {
        RunSpec {
            interpreter: self.interpreter,
            script: req.script.clone(),
            args: req.args.clone(),
            stdin: req.stdin.clone(),
            env: self.env,
            working_dir: self.working_dir,
            user,
            lang: lang.to_string(),
        }
    }
}

/// A caller's string as it is shown in an error: escaped, and cut after 64 characters.
pub fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}... ({} bytes)", &s[..end], s.len()),
        None => format!("{s:?}"),
    }
}

/// A portable user name (POSIX's portable filename characters, as `useradd` accepts them):
/// letters, digits, `.`, `_` and `-`, not starting with `-`, at most
/// [`MAX_USER_NAME_BYTES`] bytes. Checked before the name reaches the user database, whose
/// modules are not written for hostile input (glibc aborts on a name of megabytes).
pub fn user_name(name: &str) -> Result<(), Status> {
    if name.len() > MAX_USER_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "run_as is {} bytes; a user name has at most {MAX_USER_NAME_BYTES}",
            name.len()
        )));
    }
    let portable = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !portable || name.starts_with('-') || name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "run_as {} is not a valid user name: use letters, digits, '.', '_' and '-' (not first)",
            shown(name)
        )));
    }
    Ok(())
}

/// Checks everything of `req` that needs no lookup, the environment's limits first.
pub fn request(req: &pb::StartRunRequest, c: &AgentConfig) -> Result<Checked, Status> {
    if !req.run_as.is_empty() {
        user_name(&req.run_as)?;
    }
    let env = environment(req, c)?;
    if req.script.len() as u64 > c.max_script_bytes {
        return Err(Status::invalid_argument(format!(
            "script is {} bytes; this agent accepts at most {} (max_script_bytes)",
            req.script.len(),
            c.max_script_bytes
        )));
    }
    if req.script.contains('\0') {
        return Err(Status::invalid_argument("script contains a NUL byte"));
    }
    let name = if req.interpreter.is_empty() {
        DEFAULT_INTERPRETER
    } else {
        &req.interpreter
    };
    let interpreter = c.interpreters.get(name).cloned().ok_or_else(|| {
        let offered: Vec<_> = c.interpreters.keys().map(String::as_str).collect();
        Status::invalid_argument(format!(
            "interpreter {} is not allowed on this agent; it offers: {}",
            shown(name),
            offered.join(", ")
        ))
    })?;
    for arg in &req.args {
        if arg.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "argument {} contains a NUL byte",
                shown(arg)
            )));
        }
        if arg.len() >= MAX_ARG_STRLEN {
            return Err(Status::invalid_argument(format!(
                "an argument is {} bytes; the system starts programs only with arguments under {MAX_ARG_STRLEN}",
                arg.len()
            )));
        }
    }
    let stdin_len = req.stdin.as_ref().map_or(0, Vec::len) as u64;
    if stdin_len > c.max_stdin_bytes {
        return Err(Status::invalid_argument(format!(
            "stdin is {stdin_len} bytes; this agent accepts at most {} (max_stdin_bytes)",
            c.max_stdin_bytes
        )));
    }
    let working_dir = if req.working_dir.is_empty() {
        None
    } else {
        let dir = PathBuf::from(&req.working_dir);
        if !dir.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "working directory {} must be an absolute path",
                shown(&req.working_dir)
            )));
        }
        Some(dir)
    };
    let timeout = match req.timeout_ms {
        0 => c.default_timeout,
        ms => Duration::from_millis(ms),
    };
    if timeout > c.max_timeout {
        return Err(Status::invalid_argument(format!(
            "timeout {} is longer than this agent allows ({})",
            humantime::format_duration(timeout),
            humantime::format_duration(c.max_timeout)
        )));
    }
    Ok(Checked {
        interpreter,
        env,
        working_dir,
        timeout,
    })
}

/// The caller's environment variables: counted and sized before anything else is looked at.
fn environment(req: &pb::StartRunRequest, c: &AgentConfig) -> Result<BTreeMap<String, String>, Status> {
    if req.env.len() as u64 > u64::from(c.max_env_entries) {
        return Err(Status::invalid_argument(format!(
            "{} environment variables; this agent accepts at most {} (max_env_entries)",
            req.env.len(),
            c.max_env_entries
        )));
    }
    // NAME=value and a NUL each, as exec counts them.
    let bytes: u64 = req.env.iter().map(|(k, v)| (k.len() + v.len() + 2) as u64).sum();
    if bytes > c.max_env_bytes {
        return Err(Status::invalid_argument(format!(
            "the environment variables take {bytes} bytes; this agent accepts at most {} (max_env_bytes)",
            c.max_env_bytes
        )));
    }
    let mut env = BTreeMap::new();
    for (k, v) in &req.env {
        let valid_name = !k.is_empty()
            && !k.starts_with(|ch: char| ch.is_ascii_digit())
            && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid_name {
            return Err(Status::invalid_argument(format!(
                "environment variable name {} is invalid: use letters, digits and _",
                shown(k)
            )));
        }
        if v.contains('\0') {
            return Err(Status::invalid_argument(format!(
                "environment variable {k} contains a NUL byte"
            )));
        }
        if k.len() + v.len() + 2 > MAX_ARG_STRLEN {
            return Err(Status::invalid_argument(format!(
                "environment variable {} is {} bytes; the system starts programs only with variables under {MAX_ARG_STRLEN}",
                shown(k),
                k.len() + v.len() + 1
            )));
        }
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_user_names_only() {
        for ok in ["root", "deploy", "a.b_c-d", "x1", "_svc", &"a".repeat(32)] {
            assert!(user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "é", "a$", "a\0b", &"a".repeat(33)] {
            let e = user_name(bad).err().map(|s| s.code());
            assert_eq!(e, Some(tonic::Code::InvalidArgument), "{bad:?}");
        }
        let long = "x".repeat(4 << 20);
        let message = user_name(&long).err().map(|s| s.message().to_string());
        assert_eq!(
            message.as_deref(),
            Some("run_as is 4194304 bytes; a user name has at most 32")
        );
    }

    #[test]
    fn shown_strings_are_cut() {
        assert_eq!(shown("ab"), "\"ab\"");
        assert!(shown(&"y".repeat(1000)).ends_with("... (1000 bytes)"));
    }
}
