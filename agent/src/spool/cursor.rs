//! The reader side of a run's file: cursors that read its output chunks back in order.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rjob_proto::v1::Stream;

use super::{io_err, parse_header, Extent, Spool, SpoolError, HEADER_LEN, KIND_META};

/// A chunk read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seq: u64,
    pub stream: Stream,
    pub data: Vec<u8>,
}

impl Spool {
    /// A cursor positioned at the first record after `after_seq`.
    pub fn cursor(&self, after_seq: u64) -> Result<Cursor, SpoolError> {
        let inner = self.lock();
        let file = inner
            .file
            .try_clone()
            .map_err(|source| io_err(&self.path, source))?;
        let target = after_seq + 1;
        let (seq, offset) = match inner.index.partition_point(|(s, _)| *s <= target) {
            0 => (1, 0),
            i => inner.index[i - 1],
        };
        drop(inner);
        let mut cursor = Cursor {
            file,
            path: self.path.clone(),
            removed: self.removed.clone(),
            next_seq: seq,
            offset,
        };
        // Skip forward to the requested record (at most INDEX_EVERY - 1 chunks, and the meta
        // records among them).
        while cursor.next_seq < target {
            let end = self.extent().end_offset;
            if cursor.offset >= end {
                break;
            }
            let (_, kind, len) = cursor.read_header()?;
            cursor.offset += HEADER_LEN as u64 + u64::from(len);
            if kind != KIND_META {
                cursor.next_seq += 1;
            }
        }
        Ok(cursor)
    }
}

/// Reads records in order from a position in a spool.
pub struct Cursor {
    file: File,
    path: PathBuf,
    removed: Arc<AtomicBool>,
    next_seq: u64,
    offset: u64,
}

impl Cursor {
    fn read_header(&self) -> Result<(u64, u8, u32), SpoolError> {
        let mut header = [0u8; HEADER_LEN];
        self.file
            .read_exact_at(&mut header, self.offset)
            .map_err(|source| io_err(&self.path, source))?;
        let parsed = parse_header(&header);
        let expected = if parsed.1 == KIND_META { 0 } else { self.next_seq };
        if parsed.0 != expected {
            return Err(SpoolError::Corrupt {
                path: self.path.clone(),
                offset: self.offset,
            });
        }
        Ok(parsed)
    }

    /// The next chunk, if the complete part of the file (`extent`) holds one.
    pub fn next_chunk(&mut self, extent: Extent) -> Result<Option<Chunk>, SpoolError> {
        let (seq, stream, len) = loop {
            if self.offset >= extent.end_offset {
                return Ok(None);
            }
            let header = self.read_header()?;
            if header.1 != KIND_META {
                break header;
            }
            self.offset += HEADER_LEN as u64 + u64::from(header.2);
        };
        let mut data = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut data, self.offset + HEADER_LEN as u64)
            .map_err(|source| io_err(&self.path, source))?;
        // Checked after the read: a file is recycled only after the flag is set, so what was
        // read before the flag shows belongs to this run.
        if self.removed.load(Ordering::Acquire) {
            return Err(SpoolError::Removed {
                path: self.path.clone(),
            });
        }
        self.offset += HEADER_LEN as u64 + u64::from(len);
        self.next_seq += 1;
        let stream = Stream::try_from(i32::from(stream)).unwrap_or(Stream::Unspecified);
        Ok(Some(Chunk { seq, stream, data }))
    }
}
