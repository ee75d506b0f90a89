//! Reading the run-as user's password: asked once with no echo, or from a file or standard
//! input for automation. It is only ever sent inside the mutual-TLS channel; it is never
//! logged, stored, put on a command line or in an environment.

use std::io::BufRead as _;

use zeroize::Zeroizing;

use crate::cli::ScriptArgs;
use crate::UsageError;

/// The password the command line asks for, if any.
pub fn read(args: &ScriptArgs) -> Result<Option<Zeroizing<String>>, UsageError> {
    let password = if args.ask_password {
        let user = args.user.as_deref().unwrap_or_default();
        let prompt = format!("password for {user}: ");
        Zeroizing::new(
            rpassword::prompt_password(prompt)
                .map_err(|e| UsageError(format!("cannot read the password from the terminal: {e}")))?,
        )
    } else if let Some(path) = &args.password_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read password file {}: {e}", path.display())))?,
        );
        Zeroizing::new(first_line(&text))
    } else if args.password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| UsageError(format!("cannot read the password from standard input: {e}")))?;
        Zeroizing::new(first_line(&line))
    } else {
        return Ok(None);
    };
    if password.is_empty() {
        return Err(UsageError("the password is empty".into()));
    }
    Ok(Some(password))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}
