//! Checks of a start request that need nothing but the request and the config: the run-as
//! name, sizes, the environment, the interpreter, the timeout. They run before any user
//! lookup, password check or other work, so a hostile request costs the agent nothing more.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{AgentConfig, DEFAULT_INTERPRETER};
use crate::runner::{RunSpec, RunUser};
use rjob_proto::v1 as pb;

/// The longest user name accepted (bytes): longer ones are refused before any lookup.
pub const MAX_USER_NAME_BYTES: usize = 32;

/// The most bytes one environment string (`NAME=value` and its NUL) or one argument may
/// have: Linux refuses longer ones at exec (`MAX_ARG_STRLEN`, 32 pages).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The longest run label accepted (bytes). rjob's labels are `InstanceId/index` (under 50);
/// a label is kept with the run in memory and in its spool record, so it is bounded.
pub const MAX_LABEL_BYTES: usize = 256;

/// At most this much of a caller's string is shown back in an error message.
const SHOWN: usize = 64;

/// Why a start request is refused before any lookup (INVALID_ARGUMENT on the wire). The
/// caller's strings are carried as [`shown`] makes them.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("run_as is {len} bytes; a user name has at most {MAX_USER_NAME_BYTES}")]
    UserNameLength { len: usize },
    #[error("run_as {shown} is not a valid user name: use letters, digits, '.', '_' and '-' (not first)")]
    UserName { shown: String },
    #[error("script is {len} bytes; this agent accepts at most {max} (max_script_bytes)")]
    ScriptSize { len: usize, max: u64 },
    #[error("script contains a NUL byte")]
    ScriptNul,
    #[error("label is {len} bytes; this agent accepts labels of at most {MAX_LABEL_BYTES}")]
    LabelSize { len: usize },
    #[error("interpreter {shown} is not allowed on this agent; it offers: {offered}")]
    Interpreter { shown: String, offered: String },
    #[error("argument {shown} contains a NUL byte")]
    ArgumentNul { shown: String },
    #[error(
        "an argument is {len} bytes; the system starts programs only with arguments under {MAX_ARG_STRLEN}"
    )]
    ArgumentSize { len: usize },
    #[error("stdin is {len} bytes; this agent accepts at most {max} (max_stdin_bytes)")]
    StdinSize { len: u64, max: u64 },
    #[error("working directory {shown} must be an absolute path")]
    WorkingDir { shown: String },
    #[error("timeout {} is longer than this agent allows ({})", humantime::format_duration(*.timeout), humantime::format_duration(*.max))]
    Timeout { timeout: Duration, max: Duration },
    #[error("{count} environment variables; this agent accepts at most {max} (max_env_entries)")]
    EnvEntries { count: usize, max: u32 },
    #[error(
        "the environment variables take {bytes} bytes; this agent accepts at most {max} (max_env_bytes)"
    )]
    EnvBytes { bytes: u64, max: u64 },
    #[error("environment variable name {shown} is invalid: use letters, digits and _")]
    EnvName { shown: String },
    #[error("environment variable {name} contains a NUL byte")]
    EnvNul { name: String },
    #[error("environment variable {shown} is {len} bytes; the system starts programs only with variables under {MAX_ARG_STRLEN}")]
    EnvSize { shown: String, len: usize },
}

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
pub fn user_name(name: &str) -> Result<(), Invalid> {
    if name.len() > MAX_USER_NAME_BYTES {
        return Err(Invalid::UserNameLength { len: name.len() });
    }
    let portable = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !portable || name.starts_with('-') || name.is_empty() {
        return Err(Invalid::UserName { shown: shown(name) });
    }
    Ok(())
}

/// Checks everything of `req` that needs no lookup, the environment's limits first.
pub fn request(req: &pb::StartRunRequest, c: &AgentConfig) -> Result<Checked, Invalid> {
    if !req.run_as.is_empty() {
        user_name(&req.run_as)?;
    }
    let env = environment(req, c)?;
    if req.script.len() as u64 > c.max_script_bytes {
        return Err(Invalid::ScriptSize {
            len: req.script.len(),
            max: c.max_script_bytes,
        });
    }
    if req.script.contains('\0') {
        return Err(Invalid::ScriptNul);
    }
    if req.label.len() > MAX_LABEL_BYTES {
        return Err(Invalid::LabelSize { len: req.label.len() });
    }
    let name = if req.interpreter.is_empty() {
        DEFAULT_INTERPRETER
    } else {
        &req.interpreter
    };
    let interpreter = c
        .interpreters
        .get(name)
        .cloned()
        .ok_or_else(|| Invalid::Interpreter {
            shown: shown(name),
            offered: c
                .interpreters
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    for arg in &req.args {
        if arg.contains('\0') {
            return Err(Invalid::ArgumentNul { shown: shown(arg) });
        }
        if arg.len() >= MAX_ARG_STRLEN {
            return Err(Invalid::ArgumentSize { len: arg.len() });
        }
    }
    let stdin_len = req.stdin.as_ref().map_or(0, Vec::len) as u64;
    if stdin_len > c.max_stdin_bytes {
        return Err(Invalid::StdinSize {
            len: stdin_len,
            max: c.max_stdin_bytes,
        });
    }
    let working_dir = if req.working_dir.is_empty() {
        None
    } else {
        let dir = PathBuf::from(&req.working_dir);
        if !dir.is_absolute() {
            return Err(Invalid::WorkingDir {
                shown: shown(&req.working_dir),
            });
        }
        Some(dir)
    };
    let timeout = match req.timeout_ms {
        0 => c.default_timeout,
        ms => Duration::from_millis(ms),
    };
    if timeout > c.max_timeout {
        return Err(Invalid::Timeout {
            timeout,
            max: c.max_timeout,
        });
    }
    Ok(Checked {
        interpreter,
        env,
        working_dir,
        timeout,
    })
}

/// The caller's environment variables: counted and sized before anything else is looked at.
fn environment(req: &pb::StartRunRequest, c: &AgentConfig) -> Result<BTreeMap<String, String>, Invalid> {
    if req.env.len() as u64 > u64::from(c.max_env_entries) {
        return Err(Invalid::EnvEntries {
            count: req.env.len(),
            max: c.max_env_entries,
        });
    }
    // NAME=value and a NUL each, as exec counts them.
    let bytes: u64 = req.env.iter().map(|(k, v)| (k.len() + v.len() + 2) as u64).sum();
    if bytes > c.max_env_bytes {
        return Err(Invalid::EnvBytes {
            bytes,
            max: c.max_env_bytes,
        });
    }
    let mut env = BTreeMap::new();
    for (k, v) in &req.env {
        let valid_name = !k.is_empty()
            && !k.starts_with(|ch: char| ch.is_ascii_digit())
            && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid_name {
            return Err(Invalid::EnvName { shown: shown(k) });
        }
        if v.contains('\0') {
            return Err(Invalid::EnvNul { name: k.clone() });
        }
        if k.len() + v.len() + 2 > MAX_ARG_STRLEN {
            return Err(Invalid::EnvSize {
                shown: shown(k),
                len: k.len() + v.len() + 1,
            });
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
            assert!(user_name(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(4 << 20);
        let message = user_name(&long).err().map(|e| e.to_string());
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
