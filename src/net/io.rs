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

use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};

use bytes::{Bytes, BytesMut};
use tokio_uring::buf::BoundedBuf;

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
    pub async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            Stream::Uring(s) => {
                // tokio-uring reads at the start of the buffer it is given,
                // so hand it only the spare capacity after what is kept.
                let (len, cap) = (buf.len(), buf.capacity());
                let (res, slice) = s.read(buf.slice(len..cap)).await;
                (res, slice.into_inner())
            }
            Stream::Epoll(s) => loop {
                if let Err(e) = s.readable().await {
                    return (Err(e), buf);
                }
                match s.try_read_buf(&mut buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return (r, buf),
                }
            },
        }
    }

    /// Writes as much of `bufs`, in order, as the socket takes in one
    /// vectored write; returns the bytes written.
    pub async fn writev(&self, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
        match self {
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

    /// Disables Nagle: frames are small and latency matters.
    pub fn set_nodelay(&self) {
        let _ = match self {
            Stream::Uring(s) => s.set_nodelay(true),
            Stream::Epoll(s) => s.set_nodelay(true),
        };
    }
}
