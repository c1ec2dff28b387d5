//! The stream seam: how a client gets a byte stream to the server. The
//! clients are generic over it, so a transport plugs in here without
//! touching the protocol logic.
//!
//! - [`Tcp`] (what [`ChatBuilder::connect`](crate::ChatBuilder::connect)
//!   and [`PresenceBuilder::connect`](crate::PresenceBuilder::connect)
//!   use): a TCP connection with `TCP_NODELAY`, resolved again on every
//!   (re)connect.
//! - [`Tls`]: a TLS handshake (rustls, TLS 1.2 or 1.3, trusting the
//!   roots of a [`tls_config`]) over what another connector opens
//!   (usually [`Tcp`]); the login timeout covers both.
//! - [`Ws`]: a WebSocket over any of the above (`ws://` over [`Tcp`],
//!   `wss://` over [`Tls`]): the HTTP upgrade (tokio-tungstenite), then
//!   [`WsStream`], which reads and writes the command stream as binary
//!   messages (one message per write; what the server sends is the
//!   concatenation of its messages' payloads).
//! - [`Dial`]: one of them chosen by a URL at run time (`tcp://`,
//!   `tls://`, `ws://`, `wss://`), as the JavaScript client takes them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_core::Stream as _;
use futures_sink::Sink as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

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

/// A TLS client configuration (aws-lc-rs, TLS 1.2 and 1.3) trusting the
/// certificates of `roots` (for a server with a self-signed certificate,
/// that certificate; see [`roots_from_pem`]).
pub fn tls_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    // The default versions of the built-in provider are always valid.
    Arc::new(config.unwrap_or_else(|_| unreachable!("aws-lc-rs supports TLS 1.2 and 1.3")))
}

/// The certificates of a PEM file's text, as roots to trust.
pub fn roots_from_pem(pem: &[u8]) -> io::Result<RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no certificate in the PEM",
        ));
    }
    Ok(roots)
}

/// TLS over the streams `inner` opens (`Tls::new(Tcp(addr), ...)`),
/// checking the server's certificate for `server_name` (a DNS name or an
/// IP address).
#[derive(Clone, Debug)]
pub struct Tls<C> {
    inner: C,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl<C> Tls<C> {
    /// TLS over `inner`, expecting a certificate for `server_name`.
    pub fn new(inner: C, server_name: &str, config: Arc<ClientConfig>) -> io::Result<Self> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Tls {
            inner,
            name,
            config,
        })
    }
}

impl<C: Connect> Connect for Tls<C> {
    type Stream = tokio_rustls::client::TlsStream<C::Stream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let stream = self.inner.connect().await?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), stream)
            .await
    }
}

/// A WebSocket over the streams `inner` opens: `host` for the `Host`
/// header, `path` `/chatd` or `/statusd`.
#[derive(Clone, Debug)]
pub struct Ws<C> {
    inner: C,
    host: String,
    path: String,
}

impl<C> Ws<C> {
    /// A WebSocket to `path` on `host` (`"127.0.0.1:7402"`) over `inner`.
    pub fn new(inner: C, host: impl Into<String>, path: impl Into<String>) -> Self {
        Ws {
            inner,
            host: host.into(),
            path: path.into(),
        }
    }
}

impl<C: Connect> Connect for Ws<C> {
    type Stream = WsStream<C::Stream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        let stream = self.inner.connect().await?;
        // The scheme says nothing here (TLS, if any, is `inner`'s).
        let url = format!("ws://{}{}", self.host, self.path);
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(ws_error)?;
        Ok(WsStream {
            ws,
            read: Bytes::new(),
            closed: false,
        })
    }
}

/// The command stream over a WebSocket: each write is one binary message
/// (of at most [`WS_MESSAGE_MAX`](crate::limits::WS_MESSAGE_MAX) bytes: a
/// longer write is taken in parts), reads return the payloads of the
/// server's binary messages in order.
/// Pings are answered; a Close (or the end of the connection) reads as
/// end of stream; a text message is an error.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The rest of the message being read.
    read: Bytes,
    /// A Close was received or the connection ended.
    closed: bool,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("buffered", &self.read.len())
            .field("closed", &self.closed)
            .finish()
    }
}

/// An error of tungstenite's as an I/O error.
fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => self.read = payload,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server sent a text message",
                    )))
                }
                // Pings are answered by tungstenite, Pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.closed = true,
                Some(Err(e)) => match ws_error(e) {
                    e if e.kind() == io::ErrorKind::BrokenPipe => self.closed = true,
                    e => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = Pin::new(&mut self.ws);
        ready!(ws.poll_ready(cx)).map_err(ws_error)?;
        // A server closes a message longer than its longest command (1009),
        // and commands may span messages: cut long writes.
        let data = &data[..data.len().min(crate::limits::WS_MESSAGE_MAX)];
        let message = Message::Binary(Bytes::copy_from_slice(data));
        Pin::new(&mut self.ws)
            .start_send(message)
            .map_err(ws_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A Close, then the end of the stream.
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => match ws_error(e) {
                e if e.kind() == io::ErrorKind::BrokenPipe => Poll::Ready(Ok(())),
                e => Poll::Ready(Err(e)),
            },
        }
    }
}

/// Any stream [`Dial`] opens.
pub trait AnyStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AnyStream for T {}

/// A transport chosen by URL at run time: `tcp://host:port`,
/// `tls://host:port`, `ws://host:port/path`, `wss://host:port/path` (the
/// path `/chatd` or `/statusd`). `tls` and `wss` need a TLS configuration
/// ([`Dial::with_tls`]); the server name checked is the URL's host.
#[derive(Clone, Debug)]
pub struct Dial {
    scheme: Scheme,
    /// `host:port`.
    host: String,
    path: String,
    tls: Option<Arc<ClientConfig>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Dial {
    /// Parses `url`.
    pub fn new(url: &str) -> io::Result<Dial> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(bad("the scheme is not tcp, tls, ws or wss")),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if matches!(scheme, Scheme::Ws | Scheme::Wss) && path.is_empty() {
            return Err(bad("a WebSocket URL needs a path (/chatd or /statusd)"));
        }
        Ok(Dial {
            scheme,
            host: host.to_owned(),
            path: path.to_owned(),
            tls: None,
        })
    }

    /// The TLS configuration for `tls://` and `wss://`.
    #[must_use]
    pub fn with_tls(mut self, config: Arc<ClientConfig>) -> Dial {
        self.tls = Some(config);
        self
    }

    /// The host name in the URL, without the port (and without the
    /// brackets of an IPv6 address).
    fn server_name(&self) -> &str {
        let host = match self.host.rfind(':') {
            Some(i) if !self.host[i..].contains(']') => &self.host[..i],
            _ => &self.host[..],
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }

    fn tls<C>(&self, inner: C) -> io::Result<Tls<C>> {
        let config = self.tls.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "tls:// or wss:// without a TLS configuration",
            )
        })?;
        Tls::new(inner, self.server_name(), config)
    }

    /// Opens the URL's transport over the byte streams `inner` opens
    /// (instead of a TCP connection to the URL's host: a socket with
    /// special options, a test's cuttable link).
    pub async fn connect_over<C: Connect>(&self, inner: C) -> io::Result<Box<dyn AnyStream>>
    where
        C::Stream: 'static,
    {
        Ok(match self.scheme {
            Scheme::Tcp => Box::new(inner.connect().await?),
            Scheme::Tls => Box::new(self.tls(inner)?.connect().await?),
            Scheme::Ws => Box::new(Ws::new(inner, &self.host, &self.path).connect().await?),
            Scheme::Wss => {
                let tls = self.tls(inner)?;
                Box::new(Ws::new(tls, &self.host, &self.path).connect().await?)
            }
        })
    }
}

impl Connect for Dial {
    type Stream = Box<dyn AnyStream>;

    async fn connect(&self) -> io::Result<Self::Stream> {
        self.connect_over(Tcp(self.host.clone())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_transport_host_and_path() {
        let d = Dial::new("wss://chat.example:7402/statusd").unwrap();
        assert_eq!(
            (d.scheme, d.server_name(), &d.path[..]),
            (Scheme::Wss, "chat.example", "/statusd")
        );
        let d = Dial::new("tls://[::1]:7400").unwrap();
        assert_eq!((d.scheme, d.server_name()), (Scheme::Tls, "::1"));
        assert_eq!(
            Dial::new("tcp://127.0.0.1:7400").unwrap().scheme,
            Scheme::Tcp
        );
        for bad in ["127.0.0.1:7400", "http://x:1", "ws://x:1", "tcp://"] {
            assert!(Dial::new(bad).is_err(), "{bad}");
        }
    }
}
