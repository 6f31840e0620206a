//! What a connection runs over. The protocol code sees a reading half and a writing half and
//! nothing of TCP: a TLS stream, or an in-memory one in tests, fits without touching it.
//!
//! Reading is two steps, `readable` then `try_read_buf`, so that an idle connection holds no
//! read buffer (10,000 idle connections cost 4.6 KB each): it waits for data first and only
//! then makes a buffer for it. TCP does that natively. Any other stream ([`Stream`]) waits by
//! reading into a small buffer of its own that exists only while it waits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A byte stream a connection can run over.
pub(crate) trait Transport: Send + 'static {
    type Reader: TransportRead;
    type Writer: AsyncWrite + Unpin + Send + 'static;
    /// The client's address and the address it connected to.
    fn addrs(&self) -> (SocketAddr, SocketAddr);
    /// The two halves, to read and write independently.
    fn split(self) -> (Self::Reader, Self::Writer);
    /// The common name of the client's verified TLS certificate, if it sent one (SASL
    /// EXTERNAL logs in as that user).
    fn identity(&self) -> Option<String> {
        None
    }
}

/// The reading half of a transport.
pub(crate) trait TransportRead: AsyncRead + Unpin + Send + 'static {
    /// Waits until a read would return data, or the end of the stream, or an error.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Appends what has arrived to `buf`, at most `limit` bytes, without waiting:
    /// `WouldBlock` if nothing has, 0 at the end of the stream.
    fn try_read(&mut self, buf: &mut BytesMut, limit: usize) -> io::Result<usize>;
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn addrs(&self) -> (SocketAddr, SocketAddr) {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        (
            self.peer_addr().unwrap_or(unspecified),
            self.local_addr().unwrap_or(unspecified),
        )
    }

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl TransportRead for OwnedReadHalf {
    async fn readable(&mut self) -> io::Result<()> {
        OwnedReadHalf::readable(self).await
    }

    fn try_read(&mut self, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
        OwnedReadHalf::try_read_buf(self, &mut buf.limit(limit))
    }
}

/// Any `AsyncRead + AsyncWrite` stream as a transport (TLS, in-memory pipes), with the
/// addresses to report for it.
pub(crate) struct Stream<S> {
    pub inner: S,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// See [`Transport::identity`].
    pub identity: Option<String>,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> Transport for Stream<S> {
    type Reader = StreamReader<S>;
    type Writer = WriteHalf<S>;

    fn addrs(&self) -> (SocketAddr, SocketAddr) {
        (self.peer, self.local)
    }

    fn identity(&self) -> Option<String> {
        self.identity.clone()
    }

    fn split(self) -> (StreamReader<S>, WriteHalf<S>) {
        let (rd, wr) = tokio::io::split(self.inner);
        (
            StreamReader {
                inner: rd,
                waiting: BytesMut::new(),
                scratch: Vec::new(),
                eof: false,
            },
            wr,
        )
    }
}

/// The reading half of a [`Stream`].
pub(crate) struct StreamReader<S> {
    inner: ReadHalf<S>,
    /// What `readable` read while waiting, handed out by the next reads.
    waiting: BytesMut,
    /// Where `readable` reads while it waits (kept if the wait is cancelled, so nothing half
    /// read is ever handed out).
    scratch: Vec<u8>,
    /// `readable` saw the end of the stream: the next read returns 0.
    eof: bool,
}

/// How much `readable` reads while it waits.
const WAIT_BUFFER: usize = 4 * 1024;

impl<S: AsyncRead + Send + 'static> TransportRead for StreamReader<S> {
    async fn readable(&mut self) -> io::Result<()> {
        if !self.waiting.is_empty() || self.eof {
            return Ok(());
        }
        self.scratch.resize(WAIT_BUFFER, 0);
        let n = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut self.scratch[..]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        // No await between the read and here: what was read is kept.
        self.waiting.extend_from_slice(&self.scratch[..n]);
        self.scratch = Vec::new();
        self.eof = n == 0;
        Ok(())
    }

    fn try_read(&mut self, buf: &mut BytesMut, limit: usize) -> io::Result<usize> {
        if !self.waiting.is_empty() {
            let n = self.waiting.len().min(limit);
            buf.put_slice(&self.waiting.split_to(n));
            if self.waiting.is_empty() {
                self.waiting = BytesMut::new();
            }
            return Ok(n);
        }
        if self.eof {
            return Ok(0);
        }
        // Nothing waiting: one poll with no waker to register (`readable` registers the real
        // one when the caller waits next), into zeroed spare room (no unsafe).
        let start = buf.len();
        buf.resize(start + limit, 0);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rb = ReadBuf::new(&mut buf[start..]);
        let r = match Pin::new(&mut self.inner).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        };
        buf.truncate(start + *r.as_ref().unwrap_or(&0));
        r
    }
}

impl<S: AsyncRead> AsyncRead for StreamReader<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.waiting.is_empty() {
            let n = self.waiting.len().min(buf.remaining());
            let part = self.waiting.split_to(n);
            buf.put_slice(&part);
            return Poll::Ready(Ok(()));
        }
        if self.eof {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}
