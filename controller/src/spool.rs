//! Per-host output kept until the end (`--gather`, `--sort`, `--output-dir`): in memory up to
//! a budget, then in one unlinked temporary file, so memory stays bounded whatever the fleet
//! size and the output.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

/// Bytes of one host's stream kept in memory before it moves to the file.
pub const HOST_BUDGET: usize = 64 * 1024;
/// Bytes of all hosts kept in memory before new output goes to the file.
pub const TOTAL_BUDGET: usize = 32 * 1024 * 1024;
/// Block size for reading back.
const BLOCK: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Buf {
    /// Content while it fits the budget; empty once the stream is in the file.
    mem: Vec<u8>,
    /// Where the content is in the file (offset, length), in order.
    extents: Vec<(u64, u64)>,
    /// Logical offset where each extent starts.
    starts: Vec<u64>,
    len: u64,
    hash: u64,
}

/// One stdout and one stderr buffer per host.
#[derive(Debug)]
pub struct Spool {
    hosts: Vec<[Buf; 2]>,
    mem_used: usize,
    host_budget: usize,
    total_budget: usize,
    file: Option<File>,
    file_len: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl Spool {
    pub fn new(hosts: usize) -> Spool {
        Spool::with_budget(hosts, HOST_BUDGET, TOTAL_BUDGET)
    }

    pub fn with_budget(hosts: usize, host_budget: usize, total_budget: usize) -> Spool {
        Spool {
            hosts: (0..hosts).map(|_| [Buf::default(), Buf::default()]).collect(),
            mem_used: 0,
            host_budget,
            total_budget,
            file: None,
            file_len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Bytes held in memory now.
    pub fn mem_used(&self) -> usize {
        self.mem_used
    }

    /// Bytes written to the temporary file so far.
    pub fn spilled(&self) -> u64 {
        self.file_len
    }

    pub fn append(&mut self, host: usize, is_err: bool, data: &[u8]) -> io::Result<()> {
        let Some(bufs) = self.hosts.get_mut(host) else {
            return Ok(());
        };
        let buf = &mut bufs[usize::from(is_err)];
        let logical = buf.len;
        buf.len += data.len() as u64;
        buf.hash = fnv(
            if buf.len == data.len() as u64 {
                FNV_OFFSET
            } else {
                buf.hash
            },
            data,
        );
        let fits = buf.extents.is_empty()
            && buf.mem.len() + data.len() <= self.host_budget
            && self.mem_used + data.len() <= self.total_budget;
        if fits {
            buf.mem.extend_from_slice(data);
            self.mem_used += data.len();
            return Ok(());
        }
        let mem = std::mem::take(&mut buf.mem);
        self.mem_used -= mem.len();
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile()?);
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no spool file"))?;
        let mut logical = logical - mem.len() as u64;
        for part in [mem.as_slice(), data] {
            if part.is_empty() {
                continue;
            }
            file.write_all_at(part, self.file_len)?;
            match buf.extents.last_mut() {
                Some((at, len)) if *at + *len == self.file_len => *len += part.len() as u64,
                _ => {
                    buf.extents.push((self.file_len, part.len() as u64));
                    buf.starts.push(logical);
                }
            }
            self.file_len += part.len() as u64;
            logical += part.len() as u64;
        }
        Ok(())
    }

    /// Forgets a host's output (its file space is not reused: the file goes at the end).
    pub fn clear(&mut self, host: usize) {
        if let Some(bufs) = self.hosts.get_mut(host) {
            for buf in bufs {
                self.mem_used -= buf.mem.len();
                *buf = Buf::default();
            }
        }
    }

    /// Length and hash of a host's stream: equal streams have equal keys.
    pub fn key(&self, host: usize, is_err: bool) -> (u64, u64) {
        self.hosts.get(host).map_or((0, 0), |b| {
            (b[usize::from(is_err)].len, b[usize::from(is_err)].hash)
        })
    }

    /// Calls `f` with a host's stream, block by block.
    pub fn for_each(
        &self,
        host: usize,
        is_err: bool,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(bufs) = self.hosts.get(host) else {
            return Ok(());
        };
        let buf = &bufs[usize::from(is_err)];
        if !buf.mem.is_empty() {
            return f(&buf.mem);
        }
        let mut block = vec![0u8; BLOCK];
        for &(at, len) in &buf.extents {
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::other("no spool file"))?;
            let mut done = 0u64;
            while done < len {
                let n = usize::try_from((len - done).min(BLOCK as u64)).unwrap_or(BLOCK);
                file.read_exact_at(&mut block[..n], at + done)?;
                f(&block[..n])?;
                done += n as u64;
            }
        }
        Ok(())
    }

    /// A host's whole stream (for records that hold it in one string).
    pub fn read(&self, host: usize, is_err: bool) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.for_each(host, is_err, |b| {
            out.extend_from_slice(b);
            Ok(())
        })?;
        Ok(out)
    }

    /// Reads a host's stream from logical `offset` into `out`; returns how much was read.
    fn read_at(&self, host: usize, is_err: bool, offset: u64, out: &mut [u8]) -> io::Result<usize> {
        let Some(bufs) = self.hosts.get(host) else {
            return Ok(0);
        };
        let buf = &bufs[usize::from(is_err)];
        if buf.extents.is_empty() {
            let from = usize::try_from(offset).unwrap_or(usize::MAX).min(buf.mem.len());
            let n = (buf.mem.len() - from).min(out.len());
            out[..n].copy_from_slice(&buf.mem[from..from + n]);
            return Ok(n);
        }
        // The extent that holds `offset`: the last one starting at or before it.
        let i = buf.starts.partition_point(|&start| start <= offset);
        let Some(i) = i.checked_sub(1) else {
            return Ok(0);
        };
        let (at, len) = buf.extents[i];
        let within = offset - buf.starts[i];
        if within >= len {
            return Ok(0);
        }
        let n = usize::try_from((len - within).min(out.len() as u64)).unwrap_or(out.len());
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("no spool file"))?;
        file.read_exact_at(&mut out[..n], at + within)?;
        Ok(n)
    }

    /// Whether two hosts' streams hold the same bytes: compared block by block.
    pub fn same(&self, a: usize, b: usize, is_err: bool) -> io::Result<bool> {
        let (len, _) = self.key(a, is_err);
        if self.key(a, is_err) != self.key(b, is_err) {
            return Ok(false);
        }
        let mut mine = vec![0u8; BLOCK];
        let mut theirs = vec![0u8; BLOCK];
        let mut offset = 0u64;
        while offset < len {
            let n = self.read_at(a, is_err, offset, &mut mine)?;
            if n == 0 {
                return Ok(false);
            }
            let mut got = 0;
            while got < n {
                let m = self.read_at(b, is_err, offset + got as u64, &mut theirs[got..n])?;
                if m == 0 {
                    return Ok(false);
                }
                got += m;
            }
            if mine[..n] != theirs[..n] {
                return Ok(false);
            }
            offset += n as u64;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn small_output_stays_in_memory_and_big_output_goes_to_the_file() {
        let mut spool = Spool::with_budget(3, 8, 12);
        spool.append(0, false, b"abc").unwrap();
        spool.append(1, false, b"abc").unwrap();
        assert_eq!(spool.spilled(), 0);
        assert_eq!(spool.mem_used(), 6);
        // Host 2 goes past its own budget: its stream moves to the file.
        spool.append(2, false, b"abcdef").unwrap();
        spool.append(2, false, b"ghij").unwrap();
        assert_eq!(spool.mem_used(), 6);
        assert_eq!(spool.spilled(), 10);
        assert_eq!(spool.read(2, false).unwrap(), b"abcdefghij");
        // Past the total budget, new output goes to the file too.
        spool.append(0, true, b"1234567").unwrap();
        assert!(spool.mem_used() <= 12);
        assert_eq!(spool.read(0, true).unwrap(), b"1234567");
        assert!(spool.same(0, 1, false).unwrap());
        assert!(!spool.same(0, 2, false).unwrap());
    }

    #[test]
    fn equal_bytes_compare_equal_across_memory_and_file() {
        let mut spool = Spool::with_budget(2, 4, 1 << 20);
        spool.append(0, false, b"hello world").unwrap(); // in the file
        spool.append(1, false, b"hel").unwrap();
        spool.append(1, false, b"lo world").unwrap(); // moved to the file on the second chunk
        assert!(spool.same(0, 1, false).unwrap());
        assert!(spool.same(1, 0, false).unwrap());
        spool.clear(1);
        assert!(!spool.same(0, 1, false).unwrap());
        assert_eq!(spool.read(1, false).unwrap(), b"");
    }
}
