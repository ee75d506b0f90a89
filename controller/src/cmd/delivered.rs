//! What `rjob receive` has really delivered, so that it confirms nothing more.
//!
//! Output goes to stdout through a buffer. A position in a child's output (a [`Mark`]) is
//! delivered once every byte printed for it has left this process and, when stdout is a
//! pipe, its reader has read it out of the pipe (`FIONREAD` tells what the pipe still holds).
//! Positions are taken at line ends, so a later receive resumes at a line boundary.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use crate::store::Mark;

/// Counts the bytes the inner writer accepted.
pub struct Counting<W> {
    inner: W,
    count: Rc<Cell<u64>>,
}

impl<W: Write> Counting<W> {
    pub fn new(inner: W, count: Rc<Cell<u64>>) -> Self {
        Counting { inner, count }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Stdout, as far as delivery goes.
pub struct Sink {
    /// Bytes handed to the output buffer (the printer's position).
    pub printed: Rc<Cell<u64>>,
    /// Bytes written to the file descriptor.
    pub written: Rc<Cell<u64>>,
    pipe: bool,
}

impl Sink {
    pub fn stdout() -> Sink {
        let pipe =
            nix::sys::stat::fstat(io::stdout()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
        Sink {
            printed: Rc::new(Cell::new(0)),
            written: Rc::new(Cell::new(0)),
            pipe,
        }
    }

    /// Bytes the reader has taken: written, less what a pipe still holds.
    pub fn taken(&self) -> io::Result<u64> {
        Ok(self.written.get().saturating_sub(self.unread()?))
    }

    /// Bytes written into the pipe that its reader has not read yet (0 for anything else).
    fn unread(&self) -> io::Result<u64> {
        if !self.pipe {
            return Ok(0);
        }
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which outlives the call.
        let rc = unsafe { libc::ioctl(io::stdout().as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether stdout is a pipe whose reader has closed it.
    pub fn reader_gone(&self) -> bool {
        if !self.pipe {
            return false;
        }
        let mut fds = libc::pollfd {
            fd: io::stdout().as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call; a zero timeout never blocks.
        let rc = unsafe { libc::poll(&mut fds, 1, 0) };
        rc > 0 && fds.revents & libc::POLLERR != 0
    }
}

/// Positions printed and not yet known delivered, and the newest delivered one per slot (a
/// child's stream).
#[derive(Default)]
pub struct Tracker {
    /// (printed bytes once the position's output was printed, child, position), in order.
    pending: VecDeque<(u64, usize, Mark)>,
    delivered: Vec<Option<Mark>>,
    acked: Vec<Option<Mark>>,
}

impl Tracker {
    pub fn new(children: usize) -> Self {
        Tracker {
            pending: VecDeque::new(),
            delivered: vec![None; children],
            acked: vec![None; children],
        }
    }

    /// `child`'s output is printed up to `mark`, once `printed` bytes are out.
    pub fn printed(&mut self, printed: u64, child: usize, mark: Mark) {
        if let Some(last) = self.pending.back_mut() {
            if last.0 == printed && last.1 == child {
                last.2 = last.2.max(mark);
                return;
            }
        }
        self.pending.push_back((printed, child, mark));
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The reader has taken `taken` bytes: every position printed within them is delivered.
    pub fn taken(&mut self, taken: u64) {
        while let Some(&(at, child, mark)) = self.pending.front() {
            if at > taken {
                break;
            }
            self.pending.pop_front();
            if let Some(slot) = self.delivered.get_mut(child) {
                *slot = Some(slot.map_or(mark, |m| m.max(mark)));
            }
        }
    }

    /// Children whose delivered position moved since the last call, with that position.
    pub fn to_ack(&mut self) -> Vec<(usize, Mark)> {
        let mut out = Vec::new();
        for (child, (d, a)) in self.delivered.iter().zip(self.acked.iter_mut()).enumerate() {
            if let Some(mark) = *d {
                if a.is_none_or(|a| mark > a) {
                    *a = Some(mark);
                    out.push((child, mark));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn only_positions_within_what_was_taken_are_delivered() {
        let mut t = Tracker::new(2);
        t.printed(10, 0, Mark { seq: 0, off: 4 });
        t.printed(20, 1, Mark { seq: 1, off: 0 });
        t.printed(30, 0, Mark { seq: 1, off: 0 });
        t.taken(19);
        assert_eq!(t.to_ack(), vec![(0, Mark { seq: 0, off: 4 })]);
        assert_eq!(t.to_ack(), vec![]);
        t.taken(30);
        assert_eq!(
            t.to_ack(),
            vec![(0, Mark { seq: 1, off: 0 }), (1, Mark { seq: 1, off: 0 })]
        );
        assert!(!t.has_pending());
    }
}
