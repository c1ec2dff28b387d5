//! The transport the suite's clients speak: `CHATD_TEST_TRANSPORT=tcp`
//! (the default), `ws`, `tls` or `wss`. The whole suite runs unchanged
//! over each (tests/run.sh runs it once per transport): a client's
//! [`Wire`] reads and writes the *command stream* whatever carries it.
//!
//! - `tcp`: the service's TCP listener.
//! - `tls`: the same listener, the server started with a self-signed
//!   certificate ([`test_tls`]), rustls on the client side.
//! - `ws`, `wss`: the WebSocket listener, path `/chatd` or `/statusd`,
//!   spoken by tungstenite, an implementation no one here wrote: each
//!   write is one binary message, reads return the payloads of the
//!   server's messages, and every message is checked to hold whole
//!   commands (protocol section 8). The server's Close frame reads as end
//!   of stream and is kept ([`Wire::close_frame`]).
//!
//! The admin API is `https` under `tls` and `wss` (the harness's admin
//! client trusts the test certificate).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chatd_client::rustls::{self, ClientConfig, ClientConnection, StreamOwned};
use chatd_proto::chatd as cw;
use chatd_proto::statusd as sw;
use chatd_proto::Limits;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// Which transport the suite's clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestTransport {
    Tcp,
    Ws,
    Tls,
    Wss,
}

impl TestTransport {
    /// TLS on every listener.
    pub fn tls(self) -> bool {
        matches!(self, TestTransport::Tls | TestTransport::Wss)
    }

    /// The WebSocket listener.
    pub fn ws(self) -> bool {
        matches!(self, TestTransport::Ws | TestTransport::Wss)
    }
}

/// `CHATD_TEST_TRANSPORT` (default tcp).
pub fn transport() -> TestTransport {
    match std::env::var("CHATD_TEST_TRANSPORT").as_deref() {
        Err(_) | Ok("" | "tcp") => TestTransport::Tcp,
        Ok("ws") => TestTransport::Ws,
        Ok("tls") => TestTransport::Tls,
        Ok("wss") => TestTransport::Wss,
        Ok(other) => panic!("CHATD_TEST_TRANSPORT={other}: use tcp, ws, tls or wss"),
    }
}

/// The test certificate: self-signed for `localhost` and `127.0.0.1`,
/// made once per test process.
pub struct TestTls {
    /// The certificate file (`--tls-cert`).
    pub cert: PathBuf,
    /// The key file (`--tls-key`).
    pub key: PathBuf,
    /// The certificate, PEM.
    pub pem: String,
    /// A client configuration trusting it.
    pub client: Arc<ClientConfig>,
}

/// The process's test certificate.
pub fn test_tls() -> &'static TestTls {
    static TLS: OnceLock<TestTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("key");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        // Kept for the whole test process.
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        let roots = chatd_client::connect::roots_from_pem(cert.pem().as_bytes()).expect("roots");
        TestTls {
            cert: cert_path,
            key: key_path,
            pem: cert.pem(),
            client: chatd_client::connect::tls_config(roots),
        }
    })
}

/// Which service an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Svc {
    Chatd,
    Statusd,
}

/// Where a client of one service connects, over the suite's transport.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub service: Svc,
    /// The service's TCP listener (TLS under `tls`/`wss`).
    pub tcp: SocketAddr,
    /// The WebSocket listener.
    pub ws: SocketAddr,
    pub transport: TestTransport,
}

impl Endpoint {
    /// The address a client's socket connects to.
    pub fn addr(&self) -> SocketAddr {
        if self.transport.ws() {
            self.ws
        } else {
            self.tcp
        }
    }

    /// The WebSocket path.
    fn path(&self) -> &'static str {
        match self.service {
            Svc::Chatd => "/chatd",
            Svc::Statusd => "/statusd",
        }
    }

    /// Connects and runs the transport's handshakes.
    pub fn open(&self) -> Wire {
        let tcp = TcpStream::connect(self.addr()).expect("connect");
        self.over(tcp)
    }

    /// Runs the transport's handshakes over an already connected socket
    /// (made with special options). A server that closes the connection
    /// before the handshake finished (a drain) gives a [`Wire`] that reads
    /// end of stream, as a TCP client would see it.
    pub fn over(&self, tcp: TcpStream) -> Wire {
        tcp.set_nodelay(true).expect("nodelay");
        let inner = if self.transport.tls() {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let conn = ClientConnection::new(test_tls().client.clone(), name).expect("tls client");
            Inner::Tls(Box::new(StreamOwned::new(conn, tcp)))
        } else {
            Inner::Plain(tcp)
        };
        if !self.transport.ws() {
            return match inner {
                Inner::Plain(tcp) => Wire::Tcp(tcp),
                Inner::Tls(tls) => Wire::Tls(tls),
            };
        }
        let url = format!("ws://{}{}", self.ws, self.path());
        match tungstenite::client::client(url, inner) {
            Ok((ws, _)) => Wire::Ws(Box::new(WsWire {
                ws,
                service: self.service,
                pending: Vec::new(),
                at: 0,
                close: None,
                ended: false,
            })),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                panic!("the server refused the upgrade: {}", resp.status())
            }
            // Closed or reset before the upgrade finished.
            Err(_) => Wire::Closed,
        }
    }

    /// The URL of this endpoint for `chatd_client::Dial`.
    pub fn url(&self) -> String {
        match self.transport {
            TestTransport::Tcp => format!("tcp://{}", self.tcp),
            TestTransport::Tls => format!("tls://{}", self.tcp),
            TestTransport::Ws => format!("ws://{}{}", self.ws, self.path()),
            TestTransport::Wss => format!("wss://{}{}", self.ws, self.path()),
        }
    }

    /// A `chatd-client` connector for this endpoint.
    pub fn dial(&self) -> chatd_client::Dial {
        let dial = chatd_client::Dial::new(&self.url()).expect("url");
        if self.transport.tls() {
            dial.with_tls(test_tls().client.clone())
        } else {
            dial
        }
    }
}

/// A raw connection to the admin API (HTTPS when the suite runs over
/// TLS), for tests that write their own HTTP.
pub fn admin_socket(addr: SocketAddr) -> Wire {
    raw_socket(addr, transport().tls())
}

/// A connection to `addr` that is TCP, or TLS trusting the test
/// certificate, and nothing more: the test writes and reads the bytes of
/// what runs over it.
pub fn raw_socket(addr: SocketAddr, tls: bool) -> Wire {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    if !tls {
        return Wire::Tcp(tcp);
    }
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = ClientConnection::new(test_tls().client.clone(), name).expect("tls client");
    Wire::Tls(Box::new(StreamOwned::new(conn, tcp)))
}

/// A socket under a WebSocket: plain or TLS.
enum Inner {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Inner {
    fn tcp(&self) -> &TcpStream {
        match self {
            Inner::Plain(s) => s,
            Inner::Tls(s) => &s.sock,
        }
    }
}

impl Read for Inner {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Inner::Plain(s) => s.read(buf),
            Inner::Tls(s) => tls_read(s, buf),
        }
    }
}

impl Write for Inner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Inner::Plain(s) => s.write(buf),
            Inner::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}

/// A TLS read where a TCP close without close_notify reads as end of
/// stream, as over TCP (the server sends close_notify on every orderly
/// close; tests/transport.rs checks that on its own).
fn tls_read(s: &mut StreamOwned<ClientConnection, TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    match s.read(buf) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

/// A WebSocket client connection (tungstenite) as a command stream.
pub struct WsWire {
    ws: WebSocket<Inner>,
    service: Svc,
    /// The message being read, from `at`.
    pending: Vec<u8>,
    at: usize,
    /// The server's Close frame, once read.
    close: Option<CloseFrame>,
    /// The connection ended (Close, or closed without one).
    ended: bool,
}

impl WsWire {
    /// Checks that a server message holds whole commands only.
    fn check_whole_commands(&self, mut msg: &[u8]) {
        while !msg.is_empty() {
            let used = match self.service {
                Svc::Chatd => match cw::decode_event(msg, &Limits::ANY) {
                    Ok(Some((_, used))) => used,
                    Ok(None) => 0,
                    Err(_) => return,
                },
                Svc::Statusd => match sw::decode_event(msg) {
                    Ok(Some((_, used))) => used,
                    Ok(None) => 0,
                    Err(_) => return,
                },
            };
            assert!(
                used > 0,
                "a WebSocket message ends inside a command: {msg:02x?}"
            );
            msg = &msg[used..];
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.at);
                buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.ws.read() {
                Ok(Message::Binary(b)) => {
                    self.check_whole_commands(&b);
                    self.pending = b.to_vec();
                    self.at = 0;
                }
                Ok(Message::Text(t)) => panic!("the server sent a text message: {t}"),
                Ok(Message::Close(frame)) => {
                    self.close = frame;
                    self.ended = true;
                    // Sends tungstenite's Close answer.
                    let _ = self.ws.flush();
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.ended = true;
                    return Err(e);
                }
                Err(tungstenite::Error::Io(e)) => return Err(e),
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => self.ended = true,
                Err(e) => panic!("WebSocket: {e}"),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.ws.send(Message::binary(buf.to_vec())) {
            Ok(()) => Ok(buf.len()),
            Err(tungstenite::Error::Io(e)) => Err(e),
            Err(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string())),
        }
    }
}

/// A client's connection: the command stream both ways, over the suite's
/// transport.
pub enum Wire {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Ws(Box<WsWire>),
    /// Closed before a WebSocket handshake finished: end of stream.
    Closed,
}

impl Wire {
    /// The socket underneath (none for [`Wire::Closed`]).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Wire::Tcp(s) => Some(s),
            Wire::Tls(s) => Some(&s.sock),
            Wire::Ws(w) => Some(w.ws.get_ref().tcp()),
            Wire::Closed => None,
        }
    }

    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.tcp().map_or(Ok(()), |s| s.set_read_timeout(d))
    }

    /// Makes the socket (non-)blocking.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.tcp().map_or(Ok(()), |s| s.set_nonblocking(on))
    }

    /// Shuts the socket down.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().map_or(Ok(()), |s| s.shutdown(how))
    }

    /// Ends the client's sending side cleanly, the transport's way: end of
    /// stream over TCP, close_notify over TLS, a Close frame over
    /// WebSocket. What was sent before must still be handled.
    pub fn finish(&mut self) -> io::Result<()> {
        match self {
            Wire::Tcp(s) => s.shutdown(Shutdown::Write),
            Wire::Tls(s) => {
                s.conn.send_close_notify();
                s.flush()
            }
            Wire::Ws(w) => {
                w.ws.close(None)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                w.ws.flush().map_err(|e| io::Error::other(e.to_string()))
            }
            Wire::Closed => Ok(()),
        }
    }

    /// The server's WebSocket Close frame, if one was read.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        match self {
            Wire::Ws(w) => w.close.as_ref(),
            _ => None,
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.read(buf),
            Wire::Tls(s) => tls_read(s, buf),
            Wire::Ws(w) => w.read(buf),
            Wire::Closed => Ok(0),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Tcp(s) => s.write(buf),
            Wire::Tls(s) => {
                let n = s.write(buf)?;
                s.flush()?;
                Ok(n)
            }
            Wire::Ws(w) => w.write(buf),
            Wire::Closed => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Tcp(s) => s.flush(),
            Wire::Tls(s) => s.flush(),
            Wire::Ws(w) => w.ws.flush().map_err(|e| io::Error::other(e.to_string())),
            Wire::Closed => Ok(()),
        }
    }
}

impl AsRawFd for Wire {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().map_or(-1, AsRawFd::as_raw_fd)
    }
}
