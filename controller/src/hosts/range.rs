//! Host name patterns with bracket ranges (`web[01-20]`, `rack[1-2]-node[1,3,5-7]`): parsed
//! into numbers, counted and measured arithmetically (saturating, never overflowing), and
//! only then built, so a pattern that would make too many or too long names takes no memory.

use super::{shown, HostError, MAX_HOSTS, MAX_NAME_LEN};

/// One item of a bracket: the numbers `lo..=hi`, zero-padded to `width` digits.
#[derive(Debug, Clone, Copy)]
struct Item {
    lo: u64,
    hi: u64,
    width: usize,
}

impl Item {
    fn count(&self) -> u64 {
        self.hi - self.lo + 1
    }

    /// The longest number this item writes.
    fn max_len(&self) -> u64 {
        (self.hi.checked_ilog10().unwrap_or(0) as u64 + 1).max(self.width as u64)
    }
}

/// A piece of a host name: literal text, or the items of one bracket range.
#[derive(Debug)]
enum Segment {
    Literal(String),
    Choice(Vec<Item>),
}

/// A host name pattern, checked: it makes at most [`MAX_HOSTS`] names of at most
/// [`MAX_NAME_LEN`] characters.
#[derive(Debug)]
pub(super) struct Pattern {
    segments: Vec<Segment>,
    count: u64,
}

impl Pattern {
    /// Parses `name_part` (a prefix of `entry`, which errors quote).
    pub(super) fn parse(entry: &str, name_part: &str) -> Result<Pattern, HostError> {
        let segments = parse_segments(entry, name_part)?;
        let mut count: u64 = 1;
        let mut max_len: u64 = 0;
        for segment in &segments {
            match segment {
                Segment::Literal(text) => max_len = max_len.saturating_add(text.len() as u64),
                Segment::Choice(items) => {
                    count = count.saturating_mul(items.iter().map(Item::count).fold(0, u64::saturating_add));
                    let longest = items.iter().map(Item::max_len).max().unwrap_or(0);
                    max_len = max_len.saturating_add(longest);
                }
            }
        }
        if max_len > MAX_NAME_LEN {
            return Err(HostError::TooLong {
                spec: shown(entry),
                len: max_len,
            });
        }
        if count > MAX_HOSTS as u64 {
            return Err(HostError::TooMany {
                spec: shown(entry),
                limit: MAX_HOSTS,
            });
        }
        Ok(Pattern { segments, count })
    }

    /// How many names the pattern makes (duplicates included).
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// The names, in order: the cartesian product of the segments.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names = vec![String::new()];
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => names.iter_mut().for_each(|n| n.push_str(text)),
                Segment::Choice(items) => {
                    let choices: Vec<String> = items
                        .iter()
                        .flat_map(|item| (item.lo..=item.hi).map(move |n| format!("{n:0w$}", w = item.width)))
                        .collect();
                    names = names
                        .iter()
                        .flat_map(|prefix| choices.iter().map(move |c| format!("{prefix}{c}")))
                        .collect();
                }
            }
        }
        names
    }
}

/// Splits `name_part` (a prefix of `entry`) into literal text and ranges.
fn parse_segments(entry: &str, name_part: &str) -> Result<Vec<Segment>, HostError> {
    let unbalanced = || HostError::Unbalanced { spec: shown(entry) };
    let mut segments = Vec::new();
    let mut rest = name_part;
    let mut offset = 0; // byte offset of `rest` within `entry`
    while let Some(open) = rest.find(['[', ']']) {
        if rest[open..].starts_with(']') {
            return Err(unbalanced());
        }
        if open > 0 {
            segments.push(Segment::Literal(rest[..open].to_string()));
        }
        let after_open = &rest[open + 1..];
        let close = after_open.find(']').ok_or_else(unbalanced)?;
        let body = &after_open[..close];
        if body.contains('[') {
            return Err(HostError::BadRange {
                spec: shown(entry),
                reason: "brackets cannot be nested".to_string(),
            });
        }
        let body_offset = offset + open + 1;
        segments.push(Segment::Choice(parse_range_body(entry, body, body_offset)?));
        let consumed = open + 1 + close + 1;
        rest = &rest[consumed..];
        offset += consumed;
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_string()));
    }
    Ok(segments)
}

/// Parses the inside of one bracket: `1-9`, `01-20`, `1,3,5-7`.
/// `body_offset` is where `body` starts in `entry`, for the "counts down" hint.
fn parse_range_body(entry: &str, body: &str, body_offset: usize) -> Result<Vec<Item>, HostError> {
    let bad = |reason: String| HostError::BadRange {
        spec: shown(entry),
        reason,
    };
    if body.trim().is_empty() {
        return Err(bad("the brackets are empty".to_string()));
    }
    let mut items = Vec::new();
    let mut total: u64 = 0;
    let mut item_start = 0;
    for item in body.split(',') {
        let this_start = item_start;
        item_start += item.len() + 1;
        let trimmed = item.trim();
        if trimmed.is_empty() {
            return Err(bad(format!("[{}] has an empty item", shown(body))));
        }
        let not_a_number = || {
            bad(format!(
                "{:?} is not a number or a range of numbers",
                shown(trimmed)
            ))
        };
        let (lo_text, hi_text) = match trimmed.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (trimmed, trimmed),
        };
        let lo = parse_number(lo_text).ok_or_else(not_a_number)?;
        let hi = parse_number(hi_text).ok_or_else(not_a_number)?;
        if hi < lo {
            let item_at = body_offset + this_start;
            let fixed = format!(
                "{}{}-{}{}",
                &entry[..item_at],
                hi_text,
                lo_text,
                &entry[item_at + item.len()..]
            );
            return Err(HostError::Descending {
                spec: shown(entry),
                fixed: shown(&fixed),
            });
        }
        let width = if lo_text.len() > 1 && lo_text.starts_with('0') {
            lo_text.len()
        } else {
            0
        };
        let item = Item { lo, hi, width };
        total = total.saturating_add(item.count());
        if total > MAX_HOSTS as u64 {
            return Err(HostError::TooMany {
                spec: shown(entry),
                limit: MAX_HOSTS,
            });
        }
        items.push(item);
    }
    Ok(items)
}

/// Parses a decimal number of at most 18 digits (so ranges never overflow).
fn parse_number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
