//! A run on disk: one append-only file holding its numbered output chunks and its record.
//!
//! Record layout: `seq: u64 LE | kind: u8 | len: u32 LE | data[len]`. Output chunks have
//! the stream as their kind and sequence numbers that start at 1 and have no gaps. Meta
//! records (kind [`KIND_META`], seq 0) hold the run's record as the agent last wrote it
//! (before the spawn, with the pid, with the outcome); the last one wins. One file a run
//! keeps the file-system work of a short run to one create, one fdatasync and one unlink.
//! A sparse in-memory index (one entry every
//! [`INDEX_EVERY`] records) lets a reader start from any sequence number without
//! scanning the whole file, while memory stays small however large the output grows.
//!
//! The writer publishes how far the file is complete through a `watch` channel; readers
//! never read past that point, so they never see half a record.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rjob_proto::v1::Stream;

mod cursor;

pub use cursor::{Chunk, Cursor};

const HEADER_LEN: usize = 13;
const INDEX_EVERY: u64 = 256;
/// The kind byte of a meta record.
const KIND_META: u8 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool file {path} is damaged at byte {offset}")]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("the output in {path} was acknowledged and removed")]
    Removed { path: PathBuf },
}

/// How much of the spool is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    /// Sequence number of the last complete record (0: none).
    pub last_seq: u64,
    /// Bytes of output data (excluding headers) written so far.
    pub data_bytes: u64,
    /// File length up to the end of the last complete record.
    pub end_offset: u64,
}

struct Inner {
    file: File,
    extent: Extent,
    /// `(seq, offset)` of every [`INDEX_EVERY`]th record, starting with record 1.
    index: Vec<(u64, u64)>,
}

/// One run's file.
pub struct Spool {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// The file was removed or recycled (its output acknowledged): nothing is left to make
    /// durable, and readers must stop (a recycled file may hold another run's output).
    removed: Arc<AtomicBool>,
    /// The bytes of every run's file together (the agent's spool quota), which this file's
    /// writes and removal keep up to date once it is counted in ([`Spool::count_in`]).
    usage: OnceLock<Arc<AtomicU64>>,
}

/// Every file of the spool is opened without following a symlink: a link planted in the
/// spool directory is refused, never written through.
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(libc::O_NOFOLLOW)
}

/// Emptied run files kept for reuse. Creating a file costs an inode allocation (on a busy
/// ext4, the most expensive step of a short run) and deleting it a release; an emptied file
/// is simply written again. A file's name does not matter: the run's id is in its record.
pub struct FilePool {
    cap: usize,
    free: Mutex<Vec<PathBuf>>,
}

impl FilePool {
    /// A pool that keeps at most `cap` files.
    pub fn new(cap: usize) -> FilePool {
        FilePool {
            cap,
            free: Mutex::new(Vec::new()),
        }
    }

    /// Keeps an empty file for reuse if there is room; false: the caller deletes it.
    pub fn offer(&self, path: PathBuf) -> bool {
        let mut free = self.lock();
        if free.len() < self.cap {
            free.push(path);
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Spool {
    /// Creates a new, empty spool file (mode 0600).
    pub fn create(path: &Path) -> Result<Spool, SpoolError> {
        let file = no_follow(&mut OpenOptions::new())
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| io_err(path, source))?;
        Ok(Spool::new(path, file))
    }

    /// An emptied file from `pool` where there is one, else a new file at `path`.
    pub fn create_from(path: &Path, pool: &FilePool) -> Result<Spool, SpoolError> {
        let Some(free) = pool.lock().pop() else {
            return Spool::create(path);
        };
        let reused = no_follow(&mut OpenOptions::new())
            .read(true)
            .append(true)
            .open(&free)
            .and_then(|file| {
                use std::os::unix::fs::PermissionsExt as _;
                let meta = file.metadata()?;
                if meta.len() > 0 {
                    file.set_len(0)?;
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(file)
            });
        match reused {
            Ok(file) => Ok(Spool::new(&free, file)),
            Err(e) => {
                tracing::warn!(file = %free.display(), error = %e, "cannot reuse a spool file; creating a new one");
                let _ = std::fs::remove_file(&free);
                Spool::create(path)
            }
        }
    }

    fn new(path: &Path, file: File) -> Spool {
        Spool {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                file,
                extent: Extent::default(),
                index: Vec::new(),
            }),
            removed: Arc::new(AtomicBool::new(false)),
            usage: OnceLock::new(),
        }
    }

    /// Counts this file in `usage` from now on (its present size at once).
    pub fn count_in(&self, usage: Arc<AtomicU64>) {
        let inner = self.lock();
        if self.usage.set(usage.clone()).is_ok() && !self.is_removed() {
            usage.fetch_add(inner.extent.end_offset, Ordering::AcqRel);
        }
    }

    /// Opens an existing spool, rebuilding the index, and returns it with the data of its
    /// last meta record; a torn record at the end (from a crash mid-write) is cut off.
    pub fn open(path: &Path) -> Result<(Spool, Option<Vec<u8>>), SpoolError> {
        let file = no_follow(&mut OpenOptions::new())
            .read(true)
            .append(true)
            .open(path)
            .map_err(|source| io_err(path, source))?;
        let len = file.metadata().map_err(|source| io_err(path, source))?.len();
        let mut extent = Extent::default();
        let mut index = Vec::new();
        let mut meta = None;
        let mut header = [0u8; HEADER_LEN];
        while extent.end_offset + HEADER_LEN as u64 <= len {
            file.read_exact_at(&mut header, extent.end_offset)
                .map_err(|source| io_err(path, source))?;
            let (seq, kind, data_len) = parse_header(&header);
            let next = extent.end_offset + HEADER_LEN as u64 + u64::from(data_len);
            if next > len {
                break;
            }
            if kind == KIND_META && seq == 0 {
                let mut data = vec![0u8; data_len as usize];
                file.read_exact_at(&mut data, extent.end_offset + HEADER_LEN as u64)
                    .map_err(|source| io_err(path, source))?;
                meta = Some(data);
                extent.end_offset = next;
                continue;
            }
            if seq != extent.last_seq + 1 {
                break;
            }
            if (seq - 1).is_multiple_of(INDEX_EVERY) {
                index.push((seq, extent.end_offset));
            }
            extent.last_seq = seq;
            extent.data_bytes += u64::from(data_len);
            extent.end_offset = next;
        }
        if extent.end_offset < len {
            // Never drop what could not be read: keep a copy of the damaged tail beside the
            // spool, then cut the spool back to its last complete record.
            let aside = path.with_extension(format!("damaged-{}", extent.end_offset));
            let mut tail = vec![0u8; usize::try_from(len - extent.end_offset).unwrap_or(0)];
            file.read_exact_at(&mut tail, extent.end_offset)
                .map_err(|source| io_err(path, source))?;
            no_follow(&mut OpenOptions::new())
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&aside)
                .and_then(|mut f| f.write_all(&tail))
                .map_err(|source| io_err(&aside, source))?;
            tracing::warn!(spool = %path.display(), kept = %aside.display(), bytes = tail.len(), "the spool ended in a damaged record; cut it off and kept a copy");
            file.set_len(extent.end_offset)
                .map_err(|source| io_err(path, source))?;
        }
        let spool = Spool {
            path: path.to_owned(),
            inner: Mutex::new(Inner { file, extent, index }),
            removed: Arc::new(AtomicBool::new(false)),
            usage: OnceLock::new(),
        };
        Ok((spool, meta))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn extent(&self) -> Extent {
        self.lock().extent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data consistent (the extent is only
        // advanced after a complete write), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one chunk and returns the new extent.
    pub fn append(&self, stream: Stream, data: &[u8]) -> Result<Extent, SpoolError> {
        let mut inner = self.lock();
        let seq = inner.extent.last_seq + 1;
        let offset = self.write_record(&mut inner, seq, stream as u8, data)?;
        if (seq - 1).is_multiple_of(INDEX_EVERY) {
            inner.index.push((seq, offset));
        }
        inner.extent.last_seq = seq;
        inner.extent.data_bytes += data.len() as u64;
        Ok(inner.extent)
    }

    /// Appends a meta record (the run's record); readers of the output skip it.
    pub fn append_meta(&self, data: &[u8]) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        self.write_record(&mut inner, 0, KIND_META, data)?;
        Ok(())
    }

    /// Writes one record at the end of the file, advances `end_offset` past it and returns
    /// the offset it starts at.
    fn write_record(&self, inner: &mut Inner, seq: u64, kind: u8, data: &[u8]) -> Result<u64, SpoolError> {
        let len = u32::try_from(data.len())
            .map_err(|_| io_err(&self.path, std::io::Error::other("record larger than 4 GiB")))?;
        let mut record = Vec::with_capacity(HEADER_LEN + data.len());
        record.extend_from_slice(&seq.to_le_bytes());
        record.push(kind);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(data);
        let offset = inner.extent.end_offset;
        if let Err(source) = inner.file.write_all(&record) {
            // Cut off whatever part of the record made it, so the file stays parseable.
            let _ = inner.file.set_len(offset);
            return Err(io_err(&self.path, source));
        }
        inner.extent.end_offset = offset + record.len() as u64;
        if let Some(usage) = self.usage.get() {
            usage.fetch_add(record.len() as u64, Ordering::AcqRel);
        }
        Ok(offset)
    }

    /// Flushes the file to stable storage, unless it was removed.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let inner = self.lock();
        if self.removed.load(Ordering::Acquire) {
            return Ok(());
        }
        inner
            .file
            .sync_data()
            .map_err(|source| io_err(&self.path, source))
    }

    /// Removes the run: the file is emptied into `pool` while it has room, else deleted.
    /// Readers stop at their next chunk.
    pub fn remove(&self, pool: &FilePool) -> Result<(), SpoolError> {
        let inner = self.lock();
        if self.removed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(usage) = self.usage.get() {
            usage.fetch_sub(inner.extent.end_offset, Ordering::AcqRel);
        }
        if inner.file.set_len(0).is_ok() && pool.offer(self.path.clone()) {
            return Ok(());
        }
        std::fs::remove_file(&self.path).map_err(|source| io_err(&self.path, source))
    }

    /// Whether the run was removed (nothing left to flush).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

fn parse_header(h: &[u8; HEADER_LEN]) -> (u64, u8, u32) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[0..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&h[9..13]);
    (u64::from_le_bytes(seq), h[8], u32::from_le_bytes(len))
}

fn io_err(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn read_all(spool: &Spool, after: u64) -> Vec<Chunk> {
        let mut cursor = spool.cursor(after).unwrap();
        let extent = spool.extent();
        let mut out = Vec::new();
        while let Some(c) = cursor.next_chunk(extent).unwrap() {
            out.push(c);
        }
        out
    }

    #[test]
    fn resumes_from_any_sequence_number_with_nothing_lost_or_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::create(&dir.path().join("out")).unwrap();
        for i in 0..1000u32 {
            let stream = if i % 3 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            spool.append(stream, format!("line {i}\n").as_bytes()).unwrap();
        }
        for after in [0u64, 1, 255, 256, 257, 511, 512, 999, 1000] {
            let chunks = read_all(&spool, after);
            assert_eq!(chunks.len() as u64, 1000 - after, "after {after}");
            for (i, c) in chunks.iter().enumerate() {
                let seq = after + 1 + i as u64;
                assert_eq!(c.seq, seq);
                assert_eq!(c.data, format!("line {}\n", seq - 1).into_bytes());
            }
        }
    }

    #[test]
    fn reopening_rebuilds_the_index_and_cuts_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let spool = Spool::create(&path).unwrap();
        for i in 0..600u32 {
            spool.append(Stream::Stdout, &i.to_le_bytes()).unwrap();
        }
        drop(spool);
        // A crash in the middle of a record leaves a torn tail.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[601u64.to_le_bytes().as_slice(), &[1, 100, 0, 0, 0, 1, 2]].concat())
            .unwrap();
        drop(f);
        let (spool, meta) = Spool::open(&path).unwrap();
        assert_eq!(meta, None);
        assert_eq!(spool.extent().last_seq, 600);
        let chunks = read_all(&spool, 300);
        assert_eq!(chunks.first().map(|c| c.seq), Some(301));
        assert_eq!(chunks.len(), 300);
        spool.append(Stream::Stderr, b"after").unwrap();
        assert_eq!(read_all(&spool, 600)[0].data, b"after");
    }

    #[test]
    fn a_recycled_file_starts_empty_and_old_readers_stop() {
        let dir = tempfile::tempdir().unwrap();
        let pool = FilePool::new(1);
        let first = Spool::create_from(&dir.path().join("a.run"), &pool).unwrap();
        first.append(Stream::Stdout, b"secret of a").unwrap();
        let mut reader = first.cursor(0).unwrap();
        first.remove(&pool).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join("a.run")).unwrap().len(), 0);
        assert_eq!(pool.len(), 1);

        // The next run gets the emptied file, whatever the name it asked for.
        let second = Spool::create_from(&dir.path().join("b.run"), &pool).unwrap();
        assert_eq!(second.path(), dir.path().join("a.run"));
        assert!(pool.is_empty());
        assert!(!dir.path().join("b.run").exists());
        second.append(Stream::Stdout, b"output of b").unwrap();
        assert_eq!(read_all(&second, 0)[0].data, b"output of b");
        // The first run's reader must not see the second run's output through the same file.
        assert!(matches!(
            reader.next_chunk(first.extent()),
            Err(SpoolError::Removed { .. })
        ));

        // A full pool deletes instead.
        let third = Spool::create_from(&dir.path().join("c.run"), &pool).unwrap();
        second.remove(&pool).unwrap();
        third.remove(&pool).unwrap();
        assert_eq!(pool.len(), 1);
        assert!(dir.path().join("a.run").exists());
        assert!(!dir.path().join("c.run").exists());
    }

    #[test]
    fn meta_records_are_kept_apart_from_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let spool = Spool::create(&path).unwrap();
        spool.append_meta(b"first").unwrap();
        for i in 0..700u32 {
            spool.append(Stream::Stdout, &i.to_le_bytes()).unwrap();
            if i % 100 == 0 {
                spool.append_meta(format!("meta {i}").as_bytes()).unwrap();
            }
        }
        spool.append_meta(b"last").unwrap();
        let extent = spool.extent();
        assert_eq!((extent.last_seq, extent.data_bytes), (700, 2800));
        for after in [0u64, 1, 100, 255, 256, 257, 699, 700] {
            let chunks = read_all(&spool, after);
            assert_eq!(chunks.len() as u64, 700 - after, "after {after}");
            for (i, c) in chunks.iter().enumerate() {
                let seq = after + 1 + i as u64;
                assert_eq!(
                    (c.seq, c.data.as_slice()),
                    (seq, (seq as u32 - 1).to_le_bytes().as_slice())
                );
            }
        }
        drop(spool);
        let (spool, meta) = Spool::open(&path).unwrap();
        assert_eq!(meta.as_deref(), Some(b"last".as_slice()));
        assert_eq!(spool.extent(), extent);
        assert_eq!(read_all(&spool, 650).len(), 50);
    }
}
