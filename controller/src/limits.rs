//! Size-checked reads of what the command line names: a file (regular, a pipe, a device
//! such as /dev/zero) is read up to its limit and one byte more, never further, so an
//! over-size input is refused without holding it in memory.

use std::io::Read;
use std::path::Path;

use crate::UsageError;

/// Largest `--stdin-file`; the agents' default `max_stdin_bytes`.
pub const MAX_STDIN_BYTES: u64 = 4 << 20;
/// Largest `--hosts-file` (100,000 hosts of 80 characters fit).
pub const MAX_HOSTS_FILE_BYTES: u64 = 8 << 20;
/// Largest password file or password line.
pub const MAX_PASSWORD_BYTES: u64 = 4096;

/// `n` bytes in the units users think in (`1 MiB`, `4096 bytes`).
pub fn size_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB ({n} bytes)", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `path` (`what` names it in errors, e.g. "script file"), refusing more than `limit`
/// bytes.
pub fn read_file(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, UsageError> {
    let file = std::fs::File::open(path)
        .map_err(|e| UsageError(format!("cannot read {what} {}: {e}", path.display())))?;
    read_capped(file, limit)
        .map_err(|e| UsageError(format!("cannot read {what} {}: {e}", path.display())))?
        .ok_or_else(|| {
            UsageError(format!(
                "{what} {} is larger than {}, the most rjob accepts",
                path.display(),
                size_text(limit)
            ))
        })
}

/// Like [`read_file`], for text: the file must be UTF-8.
pub fn read_text_file(path: &Path, limit: u64, what: &str) -> Result<String, UsageError> {
    String::from_utf8(read_file(path, limit, what)?)
        .map_err(|_| UsageError(format!("{what} {} is not UTF-8 text", path.display())))
}

/// Reads all of `reader` if it holds at most `limit` bytes; `None` when it holds more.
pub fn read_capped(reader: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// Reads one line (without its `\n`) of at most `limit` bytes, byte by byte so that nothing
/// after the line is consumed; `None` when the line is longer. The line is made with room for
/// `limit` bytes (it is meant for small secrets: it never moves, so no copy is left behind).
pub fn read_line_capped(mut reader: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::with_capacity(usize::try_from(limit).unwrap_or(usize::MAX).min(1 << 16));
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if line.len() as u64 >= limit {
                    line.fill(0);
                    return Ok(None);
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_one_byte_more() {
        let ok = read_capped(&[1u8; 10][..], 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.map(|v| v.len()), Some(10));
        let over = read_capped(&[1u8; 11][..], 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(over.is_none());
    }

    #[test]
    fn an_endless_source_is_refused_at_the_limit() {
        let zero = std::io::repeat(0);
        assert!(read_capped(zero, 1 << 20)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
        let zero = std::io::repeat(0);
        assert!(read_line_capped(zero, 4096)
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none());
    }

    #[test]
    fn a_line_stops_at_its_newline() {
        let line = read_line_capped(&b"secret\nmore"[..], 4096).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line.as_deref(), Some(&b"secret"[..]));
    }

    #[test]
    fn sizes_read_as_users_write_them() {
        assert_eq!(size_text(1 << 20), "1 MiB (1048576 bytes)");
        assert_eq!(size_text(4096), "4096 bytes");
    }
}
