//! Table cells by display width: a CJK character or an emoji takes two columns, a combining
//! mark none, so columns are lined up by what the terminal shows, not by `char` count.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Columns `text` takes on a terminal (control characters, already escaped by the caller,
/// count as none).
pub fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` cut to at most `max` columns, ending with `…` when something was cut.
pub fn cut(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    let budget = max.saturating_sub(1); // room for the `…`
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > budget {
            break;
        }
        used += w;
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// `text` padded with spaces to `columns` (never cut). By hand: a width in a format string
/// counts chars, and is capped at 65,535.
pub fn pad(text: &str, columns: usize) -> String {
    let mut out = text.to_string();
    out.extend(std::iter::repeat_n(' ', columns.saturating_sub(width(text))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_count_twice() {
        assert_eq!(width("パッチ確認"), 10);
        assert_eq!(width("abc"), 3);
        assert_eq!(pad("パッチ", 8), "パッチ  ");
    }

    #[test]
    fn cut_ends_with_an_ellipsis_and_never_exceeds_the_width() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdefghij", 5), "abcd…");
        // A wide character that does not fit whole is left out, not split.
        assert_eq!(cut("パッチ確認", 6), "パッ…");
        assert_eq!(width(&cut("パッチ確認", 6)), 5);
        assert_eq!(cut("パッチ確認", 5), "パッ…");
        assert_eq!(cut("abc", 0), "");
    }
}
