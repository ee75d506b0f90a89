//! What the job commands print on stdout. A reader that went away (a closed pipe, as under
//! `head`) is not an error and never a panic: the command still does all its work (a `stop`
//! of several jobs stops every one), prints nothing more, and ends with 141, as `rjob receive`
//! does and as a shell shows for a process that SIGPIPE ended.

use std::io::{ErrorKind, Write};

/// Exit status when stdout is a pipe whose reader went away: what a shell shows for a
/// process that SIGPIPE ended (128 + 13), as `cat` or `yes` give under `head`.
pub const EXIT_PIPE_CLOSED: u8 = 141;

/// Stdout of one command; remembers whether its reader went away.
#[derive(Debug, Default)]
pub struct Out {
    closed: bool,
}

impl Out {
    pub fn new() -> Out {
        Out::default()
    }

    /// Writes `text` and flushes it; a closed pipe is noted, any other failure is an error.
    pub fn print(&mut self, text: &str) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
        }
    }

    /// `text` and a newline.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        self.print(&format!("{text}\n"))
    }

    /// The command's exit status: `code`, or 141 when stdout's reader went away.
    pub fn status(&self, code: u8) -> u8 {
        if self.closed {
            EXIT_PIPE_CLOSED
        } else {
            code
        }
    }
}
