//! The socket I/O seam: the only place that knows which backend moves the
//! bytes. Everything above it reads into a `BytesMut` and writes a batch of
//! `Bytes`.
//!
//! - `Uring`: tokio-uring (io_uring). A read owns its buffer while it is in
//!   flight, and a dropped read future stays in flight in the kernel, so a
//!   connection has exactly one long-lived read loop and is ended with
//!   `shutdown()` (which completes the pending read) rather than by
//!   dropping the future.
//! - `Epoll`: tokio's readiness-based sockets, for hosts where io_uring is
//!   blocked (seccomp, `kernel.io_uring_disabled`, gVisor). Same behaviour.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use pin_project_lite::pin_project;
use tokio_uring::buf::{BoundedBuf, Slice};

/// Which backend a shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring through tokio-uring.
    Uring,
    /// epoll through tokio.
    Epoll,
}

impl Backend {
    /// Name, as in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// A listener on one backend.
pub enum Listener {
    /// io_uring.
    Uring(tokio_uring::net::TcpListener),
    /// epoll.
    Epoll(tokio::net::TcpListener),
}

impl Listener {
    /// Wraps a bound std listener; must run inside the shard's runtime.
    pub fn from_std(backend: Backend, l: std::net::TcpListener) -> io::Result<Self> {
        Ok(match backend {
            Backend::Uring => Listener::Uring(tokio_uring::net::TcpListener::from_std(l)),
            Backend::Epoll => Listener::Epoll(tokio::net::TcpListener::from_std(l)?),
        })
    }

    /// Accepts one connection.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Uring(l) => {
                let (s, a) = l.accept().await?;
                Ok((Stream::Uring(s), a))
            }
            Listener::Epoll(l) => {
                let (s, a) = l.accept().await?;
                Ok((Stream::Epoll(s), a))
            }
        }
    }
}

/// What a tokio-uring read of a buffer's spare capacity completes with.
pub type UringRead = (io::Result<usize>, Slice<BytesMut>);

pin_project! {
    /// The future of [`Stream::read`]: the backend's own read, nothing
    /// around it.
    #[project = ReadProj]
    pub enum Read<U, E> {
        /// io_uring: the read op, which owns the buffer slice.
        Uring { #[pin] fut: U },
        /// epoll: wait for readability, then read.
        Epoll { #[pin] fut: E },
    }
}

impl<U, E> Future for Read<U, E>
where
    U: Future<Output = UringRead>,
    E: Future<Output = (io::Result<usize>, BytesMut)>,
{
    type Output = (io::Result<usize>, BytesMut);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReadProj::Uring { fut } => fut.poll(cx).map(|(res, slice)| (res, slice.into_inner())),
            ReadProj::Epoll { fut } => fut.poll(cx),
        }
    }
}

/// An epoll read: waits until the socket is readable, then appends to
/// `buf`. Waits with `poll_read_ready`, which parks the waker in the
/// socket's registration, rather than `readable()`, whose future (152
/// bytes) would be held by every idle connection's read task.
async fn epoll_read(s: &tokio::net::TcpStream, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
    loop {
        if let Err(e) = std::future::poll_fn(|cx| s.poll_read_ready(cx)).await {
            return (Err(e), buf);
        }
        match s.try_read_buf(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return (r, buf),
        }
    }
}

/// A connected socket on one backend.
pub enum Stream {
    /// io_uring.
    Uring(tokio_uring::net::TcpStream),
    /// epoll.
    Epoll(tokio::net::TcpStream),
}

impl Stream {
    /// Reads into the spare capacity of `buf` (appending after its
    /// length). `Ok(0)` is end of stream.
    ///
    /// A plain function returning [`Read`] rather than an `async fn`: a
    /// connection's read task holds this future all the time it is idle,
    /// and an `async fn` wrapper would add a copy of its arguments to it
    /// (80 bytes, enough to put the task in a larger allocation class).
    pub fn read(
        &self,
        buf: BytesMut,
    ) -> Read<
        impl Future<Output = UringRead> + '_,
        impl Future<Output = (io::Result<usize>, BytesMut)> + '_,
    > {
        match self {
            Stream::Uring(s) => {
                // tokio-uring reads at the start of the buffer it is given,
                // so hand it only the spare capacity after what is kept.
                let (len, cap) = (buf.len(), buf.capacity());
                Read::Uring {
                    fut: s.read(buf.slice(len..cap)),
                }
            }
            Stream::Epoll(s) => Read::Epoll {
                fut: epoll_read(s, buf),
            },
        }
    }

    /// Writes as much of `bufs`, in order, as the socket takes in one
    /// vectored write; returns the bytes written.
    ///
    /// A batch of one buffer (the usual case: a connection's output chunk)
    /// is a plain write on io_uring, which spares tokio-uring's `writev`
    /// its iovec array (an allocation per write) and the kernel its copy.
    pub async fn writev(&self, mut bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
        match self {
            Stream::Uring(s) if bufs.len() == 1 => {
                let Some(one) = bufs.pop() else {
                    return (Ok(0), bufs);
                };
                let (res, one) = s.write(one).submit().await;
                bufs.push(one);
                (res, bufs)
            }
            Stream::Uring(s) => s.writev(bufs).await,
            Stream::Epoll(s) => loop {
                if let Err(e) = s.writable().await {
                    return (Err(e), bufs);
                }
                // A fixed array on the stack: no allocation per write.
                const MAX: usize = 64;
                let mut slices = [IoSlice::new(&[]); MAX];
                let n = bufs.len().min(MAX);
                for (slot, b) in slices.iter_mut().zip(&bufs[..n]) {
                    *slot = IoSlice::new(b);
                }
                match s.try_write_vectored(&slices[..n]) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return (r, bufs),
                }
            },
        }
    }

    /// Shuts both directions down: a pending read completes (with 0), and
    /// the peer sees end of stream after what was written.
    pub fn shutdown(&self) {
        // An error means the socket is already closed or reset: nothing left to do.
        let _ = match self {
            Stream::Uring(s) => s.shutdown(Shutdown::Both),
            Stream::Epoll(s) => socket2::SockRef::from(s).shutdown(Shutdown::Both),
        };
    }

    /// Ends the write direction only: the peer sees end of stream after
    /// what was written, and what it still sends can be read (and
    /// dropped) rather than left unread, which would make closing the
    /// socket a reset that loses the end of the output not sent yet.
    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Uring(s) => s.shutdown(Shutdown::Write),
            Stream::Epoll(s) => socket2::SockRef::from(s).shutdown(Shutdown::Write),
        };
    }

    /// Disables Nagle: frames are small and latency matters.
    pub fn set_nodelay(&self) {
        let _ = match self {
            Stream::Uring(s) => s.set_nodelay(true),
            Stream::Epoll(s) => s.set_nodelay(true),
        };
    }
}
