//! A TCP stream that can hold back the small messages a connection opens with and send them
//! together, when the connection first waits for its peer.
//!
//! Once the TLS handshake is done, each HTTP/2 layer flushes its own opening message: the
//! client its connection preface, then its SETTINGS, then the first request; the server its
//! SETTINGS, then a WINDOW_UPDATE. On loopback or a LAN every flush is a packet, a wake-up of
//! the peer and a trip through both kernels' network stacks. With [`hold_until_read`] called
//! when the handshake is done, those writes are kept until the connection's task first
//! reads and finds nothing to read: it is about to wait for the peer, so everything held goes
//! out then, in one write. From then on the stream passes writes and flushes straight
//! through, so nothing later waits on anything.
//!
//! The one assumption: after [`hold_until_read`] the owner goes on to read from the stream
//! (an HTTP/2 connection always does, before it waits). Shutting down, or holding more than
//! [`HOLD_MAX`] bytes, sends what is held too.
//!
//! [`hold_until_read`]: CoalescingStream::hold_until_read

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most bytes held back.
pub const HOLD_MAX: usize = 16 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub struct CoalescingStream {
    tcp: TcpStream,
    /// Whether writes are being held (until the next read that finds nothing).
    hold: bool,
    held: Vec<u8>,
    /// How much of `held` is already written.
    sent: usize,
}

impl CoalescingStream {
    /// A stream that passes everything through until [`CoalescingStream::hold_until_read`].
    pub fn new(tcp: TcpStream) -> CoalescingStream {
        CoalescingStream {
            tcp,
            hold: false,
            held: Vec::new(),
            sent: 0,
        }
    }

    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }

    /// Holds writes, flushes included, until a read finds nothing to read.
    pub fn hold_until_read(&mut self) {
        self.hold = true;
    }

    /// Writes what is held; ready once nothing is.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Whether `len` more bytes are to be held; otherwise (not holding, or too much) what is
    /// held is sent first and they go straight to the socket.
    fn poll_hold(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.hold && self.held.len() + len <= HOLD_MAX {
            return Poll::Ready(Ok(true));
        }
        ready!(self.poll_send_held(cx))?;
        Poll::Ready(Ok(false))
    }
}

impl AsyncRead for CoalescingStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Pending => {
                // About to wait for the peer: what it is to answer must be on its way. If the
                // socket is full, the task is woken when it drains, and reads (and sends) again.
                this.hold = false;
                if let Poll::Ready(Err(e)) = this.poll_send_held(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            read => read,
        }
    }
}

impl AsyncWrite for CoalescingStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_hold(cx, buf.len()))? {
            return Pin::new(&mut this.tcp).poll_write(cx, buf);
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_hold(cx, len))? {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.hold {
            // Until the connection waits for its peer (see `poll_read`).
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.hold = false;
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl Drop for CoalescingStream {
    fn drop(&mut self) {
        // A last message (an alert, say) is still worth a try.
        if self.sent < self.held.len() {
            let _ = self.tcp.try_write(&self.held[self.sent..]);
        }
    }
}

impl tonic::transport::server::Connected for CoalescingStream {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (CoalescingStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            CoalescingStream::new(client.expect("connect")),
            accepted.expect("accept").0,
        )
    }

    #[tokio::test]
    async fn small_writes_go_out_together_when_the_writer_waits_to_read() {
        let (mut ours, mut peer) = pair().await;
        ours.hold_until_read();
        ours.write_all(b"one ").await.expect("write");
        ours.flush().await.expect("flush");
        ours.write_all(b"two").await.expect("write");
        ours.flush().await.expect("flush");
        // Nothing has left yet: the peer sees no data.
        let mut buf = [0u8; 16];
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), peer.read(&mut buf)).await;
        assert!(early.is_err(), "data left before the writer waited: {early:?}");
        // The writer waits for an answer: both messages go, in one piece.
        let (answered, got) = tokio::join!(
            async {
                let mut reply = [0u8; 2];
                ours.read_exact(&mut reply).await.map(|_| reply)
            },
            async {
                let n = peer.read(&mut buf).await.expect("read");
                peer.write_all(b"ok").await.expect("reply");
                buf[..n].to_vec()
            }
        );
        assert_eq!(got, b"one two");
        assert_eq!(&answered.expect("reply"), b"ok");
    }

    #[tokio::test]
    async fn bulk_data_and_shutdown_deliver_everything_in_order() {
        let (mut ours, mut peer) = pair().await;
        ours.hold_until_read();
        let big: Vec<u8> = (0..3 * HOLD_MAX + 17).map(|i| (i % 251) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).await.expect("read");
            all
        });
        ours.write_all(b"head").await.expect("write");
        ours.write_all(&big).await.expect("write");
        ours.write_all(b"tail").await.expect("write");
        ours.shutdown().await.expect("shutdown");
        let all = reader.await.expect("reader");
        let mut want = b"head".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert_eq!(all.len(), want.len());
        assert!(all == want, "bytes differ");
    }

    #[tokio::test]
    async fn after_the_first_wait_flushes_go_straight_out() {
        let (mut ours, mut peer) = pair().await;
        ours.hold_until_read();
        ours.write_all(b"held").await.expect("write");
        ours.flush().await.expect("flush");
        // The first read that finds nothing sends what was held...
        let mut one = [0u8; 1];
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), ours.read(&mut one)).await;
        assert!(waited.is_err(), "nothing was there to read");
        let mut buf = [0u8; 16];
        let n = peer.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"held");
        // ... and from then on a flush is a flush.
        ours.write_all(b"now").await.expect("write");
        ours.flush().await.expect("flush");
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), peer.read(&mut buf))
            .await
            .expect("the flushed write arrives without any read on our side")
            .expect("read");
        assert_eq!(&buf[..n], b"now");
    }
}
