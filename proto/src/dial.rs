//! The preamble of a connection an agent dials out to a controller (`rjob-agent --connect`).
//!
//! The TCP connection goes the other way than usual, the TLS roles do not: the controller
//! stays the TLS client and checks the agent's certificate against a name, so the agent says
//! first, in the clear, which name that is. The preamble is
//!
//! ```text
//! "RJOBDIAL" (8 bytes) | version (1 byte, 1) | name length (1 byte, 1..=253) | name (ASCII)
//! ```
//!
//! and then the TLS handshake starts, the agent as the server. The name is only a claim: the
//! controller registers the agent under it once the agent's certificate proved it.

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The first bytes of the preamble.
pub const MAGIC: &[u8; 8] = b"RJOBDIAL";

/// The preamble's version.
pub const VERSION: u8 = 1;

/// The longest name (a DNS name's limit).
pub const MAX_NAME: usize = 253;

#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    #[error("the peer does not speak the rjob dial-out preamble (an rjob-agent started with --connect)")]
    NotDialOut,
    #[error("the agent speaks dial-out preamble version {0}; this controller knows version 1")]
    Version(u8),
    #[error("the announced name is not a host name: {0}")]
    BadName(String),
    #[error("reading the preamble: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `name` can be announced: 1 to 253 characters of letters, digits, `-`, `.`, `_`
/// and `:` (an IPv6 address).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

/// The preamble announcing `name`.
pub fn encode(name: &str) -> Result<Vec<u8>, PreambleError> {
    if !valid_name(name) {
        return Err(PreambleError::BadName(name.escape_debug().to_string()));
    }
    let mut bytes = Vec::with_capacity(MAGIC.len() + 2 + name.len());
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    // valid_name: at most 253 bytes.
    bytes.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(name.as_bytes());
    Ok(bytes)
}

/// Reads the preamble from `stream` and answers the announced name. Nothing beyond the
/// preamble is read, so the TLS handshake can follow on the same stream.
pub async fn read(stream: &mut (impl AsyncRead + Unpin)) -> Result<String, PreambleError> {
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).await?;
    if &head[..8] != MAGIC {
        return Err(PreambleError::NotDialOut);
    }
    if head[8] != VERSION {
        return Err(PreambleError::Version(head[8]));
    }
    let mut name = vec![0u8; usize::from(head[9])];
    stream.read_exact(&mut name).await?;
    let name = String::from_utf8(name).map_err(|e| {
        PreambleError::BadName(String::from_utf8_lossy(e.as_bytes()).escape_debug().to_string())
    })?;
    if !valid_name(&name) {
        return Err(PreambleError::BadName(name.escape_debug().to_string()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_preamble_reads_back_as_its_name_and_nothing_more() {
        let mut bytes = encode("web01.example").expect("encode");
        bytes.extend_from_slice(b"\x16\x03\x01");
        let mut stream = &bytes[..];
        assert_eq!(read(&mut stream).await.expect("read"), "web01.example");
        assert_eq!(stream, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn other_speakers_and_bad_names_are_refused() {
        let mut tls = &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03"[..];
        assert!(matches!(read(&mut tls).await, Err(PreambleError::NotDialOut)));
        let mut v2 = &b"RJOBDIAL\x02\x01a"[..];
        assert!(matches!(read(&mut v2).await, Err(PreambleError::Version(2))));
        let mut bad = &b"RJOBDIAL\x01\x03a b"[..];
        assert!(matches!(read(&mut bad).await, Err(PreambleError::BadName(_))));
        let mut empty = &b"RJOBDIAL\x01\x00"[..];
        assert!(matches!(read(&mut empty).await, Err(PreambleError::BadName(_))));
        let mut short = &b"RJOBDIAL\x01\x05ab"[..];
        assert!(matches!(read(&mut short).await, Err(PreambleError::Io(_))));
        assert!(encode("").is_err());
        assert!(encode(&"a".repeat(254)).is_err());
        assert!(encode("web01\n").is_err());
        assert!(encode("fd00::2").is_ok());
    }
}
