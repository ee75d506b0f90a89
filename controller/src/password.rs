//! Reading the run-as user's password: asked once with no echo, or from a file or standard
//! input for automation. It is only ever sent inside the mutual-TLS channel; it is never
//! logged, stored, put on a command line or in an environment.
//!
//! A file or standard input is read up to the end of its first line and never past
//! [`MAX_PASSWORD_BYTES`], so `--password-file /dev/zero` is refused at once.
//!
//! One password is sent to every host, so it is for one user: `--user`, or the one user the
//! inventory and the config give every host. Hosts that run as several users (or some as a
//! user and some as the policy's default) are refused with the users named: give `--user`,
//! or run each user's hosts apart (`-H @group`).

use zeroize::Zeroizing;

use crate::cli::ScriptArgs;
use crate::limits::{read_line_capped, MAX_PASSWORD_BYTES};
use crate::UsageError;

/// The password the command line asks for, if any, for hosts that run as `users` (each
/// host's user; `None`: the policy's default).
pub fn read(args: &ScriptArgs, users: &[Option<String>]) -> Result<Option<Zeroizing<String>>, UsageError> {
    let how = Source {
        ask: args.ask_password,
        file: args.password_file.as_deref(),
        stdin: args.password_stdin,
    };
    if !how.ask && how.file.is_none() && !how.stdin {
        return Ok(None);
    }
    let user = one_user(users)?;
    read_from(&how, &format!("password for {}: ", crate::escape::text(user)))
}

/// Each child's user: its own, else `default` (the request's run_as; empty: none).
pub fn users_of(own: &[Option<String>], default: &str) -> Vec<Option<String>> {
    let default = (!default.is_empty()).then(|| default.to_string());
    own.iter()
        .map(|u| u.clone().or_else(|| default.clone()))
        .collect()
}

/// The one user a password is for, when every host runs as it; otherwise why not, in a line.
pub fn one_user(users: &[Option<String>]) -> Result<&str, UsageError> {
    let mut named: Vec<&str> = users.iter().flatten().map(String::as_str).collect();
    named.sort_unstable();
    named.dedup();
    let unnamed = users.iter().filter(|u| u.is_none()).count();
    match (named.as_slice(), unnamed) {
        ([one], 0) => Ok(one),
        ([], _) => Err(UsageError(
            "a password is for a run-as user: give --user USER, or a user for these hosts in the inventory or the config's [hosts.\"pattern\"] tables".into(),
        )),
        (_, 0) => Err(UsageError(format!(
            "one password is sent to every host, but these hosts run as {} users ({}): give --user USER, or run each user's hosts apart (-H @group)",
            named.len(),
            shown_users(&named)
        ))),
        _ => Err(UsageError(format!(
            "one password is sent to every host, but {unnamed} of these hosts have no run-as user (the policy's default) and the others run as {}: give --user USER, or run each user's hosts apart (-H @group)",
            shown_users(&named)
        ))),
    }
}

/// Up to five users, escaped, then how many more.
fn shown_users(users: &[&str]) -> String {
    let mut text: Vec<String> = users
        .iter()
        .take(5)
        .map(|u| crate::escape::text(u).into_owned())
        .collect();
    if users.len() > 5 {
        text.push(format!("and {} more", users.len() - 5));
    }
    text.join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn users(list: &[Option<&str>]) -> Vec<Option<String>> {
        list.iter().map(|u| u.map(String::from)).collect()
    }

    #[test]
    fn a_password_is_for_one_user_and_the_refusal_names_the_users() {
        assert_eq!(one_user(&users(&[Some("a"), Some("a")])).ok(), Some("a"));
        let two = one_user(&users(&[Some("b"), Some("a"), Some("b")]))
            .expect_err("refused")
            .0;
        assert!(two.contains("2 users (a, b)") && two.contains("--user"), "{two}");
        let mixed = one_user(&users(&[Some("a"), None])).expect_err("refused").0;
        assert!(
            mixed.contains("1 of these hosts have no run-as user") && mixed.contains("as a:"),
            "{mixed}"
        );
        let none = one_user(&users(&[None, None])).expect_err("refused").0;
        assert!(none.contains("give --user USER"), "{none}");
    }

    #[test]
    fn a_child_without_a_user_of_its_own_runs_as_the_request_says() {
        assert_eq!(
            users_of(&users(&[Some("a"), None]), "r"),
            users(&[Some("a"), Some("r")])
        );
        assert_eq!(users_of(&users(&[None]), ""), users(&[None]));
    }
}
