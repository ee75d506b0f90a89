//! Colour at the terminal: `--color auto|always|never`, `NO_COLOR`, `CLICOLOR_FORCE`.
//!
//! `auto` colours a stream only when it is a terminal, `NO_COLOR` (set and not empty) turns
//! colour off, `CLICOLOR_FORCE` (set, not empty and not `0`) turns it on even when piped;
//! `--color always` and `--color never` win over both. `TERM=dumb` means no colour in `auto`.

use std::ffi::OsStr;

use anstyle::{AnsiColor, Style};

use crate::state::State;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal (and `NO_COLOR` is not set)
    #[default]
    Auto,
    /// Always colour, even when piped
    Always,
    /// Never colour
    Never,
}

/// Whether to colour a stream, from the choice, the environment and whether it is a terminal.
pub fn decide(
    choice: ColorChoice,
    no_color: Option<&OsStr>,
    clicolor_force: Option<&OsStr>,
    term: Option<&OsStr>,
    is_tty: bool,
) -> bool {
    let set = |v: Option<&OsStr>| v.is_some_and(|v| !v.is_empty());
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto if set(no_color) => false,
        ColorChoice::Auto if set(clicolor_force) && clicolor_force != Some(OsStr::new("0")) => true,
        ColorChoice::Auto => is_tty && term != Some(OsStr::new("dumb")),
    }
}

/// [`decide`] with this process's environment.
pub fn enabled(choice: ColorChoice, is_tty: bool) -> bool {
    decide(
        choice,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("CLICOLOR_FORCE").as_deref(),
        std::env::var_os("TERM").as_deref(),
        is_tty,
    )
}

/// Colours for host labels: never red (kept for failures and stderr).
const HOST_COLOURS: [AnsiColor; 10] = [
    AnsiColor::Cyan,
    AnsiColor::Green,
    AnsiColor::Yellow,
    AnsiColor::Blue,
    AnsiColor::Magenta,
    AnsiColor::BrightCyan,
    AnsiColor::BrightGreen,
    AnsiColor::BrightYellow,
    AnsiColor::BrightBlue,
    AnsiColor::BrightMagenta,
];

/// Paints text, or leaves it alone when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    pub fn new(on: bool) -> Paint {
        Paint { on }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    fn with(&self, style: Style, text: &str) -> String {
        if self.on {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    /// A host label in its own colour, the same for the same label on every run.
    pub fn host(&self, label: &str) -> String {
        self.with(host_style(label), label)
    }

    /// The `[stderr]` mark.
    pub fn stderr_mark(&self) -> String {
        self.with(AnsiColor::Red.on_default(), "[stderr]")
    }

    /// Text about a failure (a failed host, a group that did not exit 0).
    pub fn failure(&self, text: &str) -> String {
        self.with(AnsiColor::Red.on_default().bold(), text)
    }

    /// A count of a state: Completed green, Failed red, Stopped yellow.
    pub fn state(&self, state: State, text: &str) -> String {
        let style = match state {
            State::Completed => AnsiColor::Green.on_default(),
            State::Failed => AnsiColor::Red.on_default().bold(),
            State::Stopped => AnsiColor::Yellow.on_default(),
            _ => Style::new(),
        };
        self.with(style, text)
    }
}

/// The style of a host label: picked by an FNV-1a hash of the label, so it is stable.
pub fn host_style(label: &str) -> Style {
    let mut hash: u32 = 0x811c_9dc5;
    for b in label.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    HOST_COLOURS[hash as usize % HOST_COLOURS.len()].on_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn auto_follows_the_terminal_and_the_environment() {
        use ColorChoice::*;
        assert!(decide(Auto, None, None, None, true));
        assert!(!decide(Auto, None, None, None, false));
        assert!(!decide(Auto, os("1"), None, None, true), "NO_COLOR");
        assert!(
            decide(Auto, os(""), None, None, true),
            "an empty NO_COLOR is not set"
        );
        assert!(decide(Auto, None, os("1"), None, false), "CLICOLOR_FORCE");
        assert!(!decide(Auto, None, os("0"), None, false));
        assert!(!decide(Auto, os("1"), os("1"), None, true), "NO_COLOR wins");
        assert!(!decide(Auto, None, None, os("dumb"), true));
        assert!(decide(Always, os("1"), None, None, false));
        assert!(!decide(Never, None, os("1"), None, true));
    }

    #[test]
    fn host_colours_are_stable_and_off_means_plain() {
        assert_eq!(host_style("web01"), host_style("web01"));
        assert_eq!(Paint::new(false).host("web01"), "web01");
        let on = Paint::new(true).host("web01");
        assert!(on.starts_with("\u{1b}[") && on.contains("web01"), "{on:?}");
        assert_eq!(Paint::new(false).state(State::Failed, "2 Failed"), "2 Failed");
    }
}
