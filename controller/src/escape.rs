//! Terminal safety: control characters shown as visible escapes.
//!
//! Remote output, job names and host names come from others; written raw to a terminal, an
//! `ESC ]0;…` retitles the window, `ESC [2J` clears the screen and a `\r` overwrites the
//! host label in front of a line with a forged one. What these functions return shows every
//! C0 control (but tab, where kept), DEL, every C1 control (U+0080 to U+009F) and every byte
//! that is not UTF-8 as a visible escape: `\r`, `\n`, `\t`, `\e`, `\xNN`, `\u{NN}`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown escaped: C0 controls, DEL and C1 controls; tab only if `tab`.
fn is_unsafe(c: char, tab: bool) -> bool {
    match c {
        '\t' => tab,
        c => c.is_control(), // C0, DEL and C1 (U+0080 to U+009F): Unicode's Cc category
    }
}

fn push_escape(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\u{1b}' => out.push_str("\\e"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// Whether output lines written to standard output are escaped: on a terminal, unless
/// `--raw`. Piped or redirected output is written as it came.
pub fn for_stdout(raw: bool) -> bool {
    !raw && std::io::IsTerminal::is_terminal(&std::io::stdout())
}

/// Output bytes for a terminal: control characters other than tab and bytes that are not
/// UTF-8 become visible escapes. Borrowed when there is nothing to escape (the usual case).
pub fn output(line: &[u8]) -> Cow<'_, [u8]> {
    if let Ok(text) = std::str::from_utf8(line) {
        if !text.chars().any(|c| is_unsafe(c, false)) {
            return Cow::Borrowed(line);
        }
    }
    let mut out = String::with_capacity(line.len() + 16);
    for chunk in line.utf8_chunks() {
        escape_into(&mut out, chunk.valid(), false);
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out.into_bytes())
}

/// A name (job, host, label) or a one-line message, always shown escaped, tab included.
pub fn text(name: &str) -> Cow<'_, str> {
    if !name.chars().any(|c| is_unsafe(c, true)) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 16);
    escape_into(&mut out, name, true);
    Cow::Owned(out)
}

fn escape_into(out: &mut String, text: &str, tab: bool) {
    for c in text.chars() {
        if is_unsafe(c, tab) {
            push_escape(out, c);
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(bytes: &[u8]) -> String {
        String::from_utf8(output(bytes).into_owned()).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    #[test]
    fn plain_text_and_tabs_pass_unchanged_and_borrowed() {
        assert!(matches!(output(b"a\tb \xc3\xa9"), Cow::Borrowed(_)));
        assert!(matches!(text("web01"), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_returns_become_visible() {
        assert_eq!(shown(b"\x1b]0;pwned\x07x"), "\\e]0;pwned\\x07x");
        assert_eq!(shown(b"\x1b[2J"), "\\e[2J");
        assert_eq!(shown(b"ok\rweb02: fake"), "ok\\rweb02: fake");
        assert_eq!(shown(b"\x7f\x00"), "\\x7f\\x00");
    }

    #[test]
    fn c1_controls_and_stray_bytes_become_visible() {
        assert_eq!(shown("\u{9b}2J".as_bytes()), "\\u{9b}2J");
        assert_eq!(shown(b"\x9b2J \xff"), "\\x9b2J \\xff");
        assert_eq!(shown("é\u{85}".as_bytes()), "é\\u{85}");
    }

    #[test]
    fn names_escape_tabs_and_newlines_too() {
        assert_eq!(text("a\tb\nc\x1b"), "a\\tb\\nc\\e");
    }
}
