//! Reading the run-as user's password: asked once with no echo, or from a file or standard
//! input for automation. It is only ever sent inside the mutual-TLS channel; it is never
//! logged, stored, put on a command line or in an environment.
//!
//! A file or standard input is read up to the end of its first line and never past
//! [`MAX_PASSWORD_BYTES`], so `--password-file /dev/zero` is refused at once.

use zeroize::Zeroizing;

use crate::cli::ScriptArgs;
use crate::limits::{read_line_capped, MAX_PASSWORD_BYTES};
use crate::UsageError;

/// The password the command line asks for, if any.
pub fn read(args: &ScriptArgs) -> Result<Option<Zeroizing<String>>, UsageError> {
    let user = args.user.as_deref().unwrap_or_default();
    let how = Source {
        ask: args.ask_password,
        file: args.password_file.as_deref(),
        stdin: args.password_stdin,
    };
    read_from(&how, &format!("password for {}: ", crate::escape::text(user)))
}

/// Where a password comes from: the terminal, a file or standard input (none: no password).
pub struct Source<'a> {
    pub ask: bool,
    pub file: Option<&'a std::path::Path>,
    pub stdin: bool,
}

/// The password from `how`, asked with `prompt` on a terminal.
pub fn read_from(how: &Source<'_>, prompt: &str) -> Result<Option<Zeroizing<String>>, UsageError> {
    let password = if how.ask {
        Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| UsageError(format!("cannot read the password from the terminal: {e}")))?,
        )
    } else if let Some(path) = how.file {
        let what = format!("password file {}", path.display());
        let file = std::fs::File::open(path).map_err(|e| UsageError(format!("cannot read {what}: {e}")))?;
        first_line(read_line_capped(&file, MAX_PASSWORD_BYTES), &what)?
    } else if how.stdin {
        first_line(
            read_line_capped(std::io::stdin().lock(), MAX_PASSWORD_BYTES),
            "the password from standard input",
        )?
    } else {
        return Ok(None);
    };
    if password.is_empty() {
        return Err(UsageError("the password is empty".into()));
    }
    Ok(Some(password))
}

/// The line read, without a trailing `\r`, as text.
fn first_line(read: std::io::Result<Option<Vec<u8>>>, what: &str) -> Result<Zeroizing<String>, UsageError> {
    let line = read.map_err(|e| UsageError(format!("cannot read {what}: {e}")))?;
    let Some(line) = line else {
        return Err(UsageError(format!(
            "{what}: the first line is longer than {MAX_PASSWORD_BYTES} bytes; is it the right file?"
        )));
    };
    let mut line = Zeroizing::new(line);
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(std::mem::take(&mut *line)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            Err(UsageError(format!("{what}: the password is not UTF-8 text")))
        }
    }
}
