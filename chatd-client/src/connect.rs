//! The stream seam: how a client gets a byte stream to the server. The
//! clients are generic over it, so a transport plugs in here without
//! touching the protocol logic.
//!
//! - [`Tcp`] (what [`ChatBuilder::connect`](crate::ChatBuilder::connect)
//!   and [`PresenceBuilder::connect`](crate::PresenceBuilder::connect)
//!   use): a TCP connection with `TCP_NODELAY`, resolved again on every
//!   (re)connect.
//! - TLS: a [`Connect`] whose stream is, for example, a
//!   `tokio_rustls::client::TlsStream<TcpStream>`: connect TCP, then run
//!   the handshake inside [`Connect::connect`]; the login timeout covers
//!   both.
//! - WebSocket: a [`Connect`] whose stream is an adapter that implements
//!   `AsyncRead`/`AsyncWrite` over binary messages (the command stream is
//!   the concatenation of the message payloads in either direction), after
//!   doing the HTTP upgrade in [`Connect::connect`].

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Opens a new byte stream to the server, for the first connection and
/// for every reconnect.
pub trait Connect: Send + Sync + 'static {
    /// The stream: the command stream both ways, nothing else.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens one stream (connect, and any handshake the transport needs).
    fn connect(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Plain TCP to an address (a `SocketAddr`, `"host:port"`, ...), resolved
/// again on every connect.
#[derive(Clone, Debug)]
pub struct Tcp<A>(pub A);

impl<A> Connect for Tcp<A>
where
    A: ToSocketAddrs + Clone + Send + Sync + 'static,
{
    type Stream = TcpStream;

    async fn connect(&self) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(self.0.clone()).await?;
        // Commands are small and latency matters.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
