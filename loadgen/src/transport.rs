//! The transports loadgen reaches a server over (`--transport tcp|ws|tls|wss`),
//! below its own hot-path I/O ([`crate::client::Reader`], [`crate::client::Writer`]):
//!
//! - TCP: the socket's halves, as before.
//! - TLS: tokio-rustls over the socket, split into halves (both used by
//!   one thread's runtime).
//! - WebSocket (over either): a thin framing layer of loadgen's own. After
//!   the HTTP upgrade, each write is one masked binary frame (mask key 0,
//!   so the payload goes out unchanged: the server's work is the same, and
//!   loadgen's payloads are not attacker-chosen bytes the masking exists to
//!   scramble for proxies); server frames are stripped in the read buffer
//!   ([`Deframer`]), so the decoders read the command stream as over TCP.
//!
//! chatd over WebSocket uses the paths `/chatd` and `/statusd`; NATS's own
//! WebSocket listener (for the peer comparison), `/`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use chatd_client::rustls::{self, ClientConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Longest HTTP answer to an upgrade loadgen reads.
const UPGRADE_ANSWER_MAX: usize = 8 * 1024;

/// How one service of a server is reached.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The socket address (the WebSocket listener's for `ws`/`wss`).
    pub addr: SocketAddr,
    /// WebSocket: the path of the upgrade request.
    pub ws_path: Option<&'static str>,
    /// TLS: the client configuration (its roots trust the server).
    pub tls: Option<Arc<ClientConfig>>,
}

impl Endpoint {
    /// Plain TCP to `addr`.
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            ws_path: None,
            tls: None,
        }
    }

    /// Whether writes must be framed as WebSocket messages.
    pub fn ws(&self) -> bool {
        self.ws_path.is_some()
    }

    /// The transport's name, as in reports.
    pub fn name(&self) -> &'static str {
        match (self.ws(), self.tls.is_some()) {
            (false, false) => "tcp",
            (false, true) => "tls",
            (true, false) => "ws",
            (true, true) => "wss",
        }
    }

    /// Runs the transport's handshakes over a connected socket and splits
    /// it into its read and write halves. An error is the connection's
    /// (the client reports it as a failed connect; an `io::Error` here
    /// keeps this module below `crate::client`).
    pub async fn open(&self, tcp: TcpStream) -> io::Result<(Rd, Wr, Option<Deframer>)> {
        let (rd, wr) = match &self.tls {
            None => {
                let (rd, wr) = tcp.into_split();
                (Rd::Tcp(rd), Wr::Tcp(wr))
            }
            Some(config) => {
                let name = rustls::pki_types::ServerName::from(self.addr.ip());
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                let (rd, wr) = tokio::io::split(tls);
                (Rd::Tls(rd), Wr::Tls(wr))
            }
        };
        let (mut rd, mut wr) = (rd, wr);
        let Some(path) = self.ws_path else {
            return Ok((rd, wr, None));
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: bG9hZGdlbiBrZXkgMTIzNA==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.addr
        );
        wr.write_all(request.as_bytes()).await?;
        wr.flush().await?;
        // Read the answer byte by byte up to its blank line, so that no
        // frame after it is taken from the socket here.
        let mut answer = Vec::with_capacity(256);
        while !answer.ends_with(b"\r\n\r\n") {
            if answer.len() >= UPGRADE_ANSWER_MAX {
                return Err(upgrade_refused(&answer));
            }
            let mut b = [0u8; 1];
            if rd.read(&mut b).await? == 0 {
                return Err(upgrade_refused(&answer));
            }
            answer.push(b[0]);
        }
        if !answer.starts_with(b"HTTP/1.1 101") {
            return Err(upgrade_refused(&answer));
        }
        Ok((rd, wr, Some(Deframer::default())))
    }
}

fn upgrade_refused(answer: &[u8]) -> io::Error {
    let line = String::from_utf8_lossy(answer);
    let line = line.lines().next().unwrap_or("no answer");
    io::Error::other(format!("WebSocket upgrade refused: {line}"))
}

/// The read half of a connection.
pub enum Rd {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<TlsStream<TcpStream>>),
}

impl AsyncRead for Rd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Rd::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Rd::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The write half of a connection.
pub enum Wr {
    Tcp(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<TlsStream<TcpStream>>),
}

impl Wr {
    /// A write without waiting, when the transport allows one: TCP only
    /// (`None` for TLS, whose records may wait in rustls for a flush that
    /// needs a waker).
    pub fn try_write(&self, b: &[u8]) -> Option<io::Result<usize>> {
        match self {
            Wr::Tcp(w) => Some(w.try_write(b)),
            Wr::Tls(_) => None,
        }
    }
}

impl AsyncWrite for Wr {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Wr::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Wr::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wr::Tcp(w) => Pin::new(w).poll_flush(cx),
            Wr::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Wr::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Wr::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// The header of one client frame carrying `len` payload bytes: FIN,
/// binary, masked with key 0 (the payload follows unchanged).
pub fn client_header(len: usize, out: &mut Vec<u8>) {
    out.push(0x82);
    if len <= 125 {
        out.push(0x80 | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
}

/// Strips a server's WebSocket frames from the bytes a read appended, in
/// place: data payloads stay (moved over the headers before them), control
/// frames go (a Close ends the stream). Server frames are not masked.
#[derive(Debug, Default)]
pub struct Deframer {
    /// Payload bytes of the frame in progress still to come.
    left: u64,
    /// The frame in progress is a control frame: its payload is dropped.
    control: bool,
    /// A header cut by a read.
    head: [u8; 14],
    head_len: usize,
    /// The server sent Close.
    closed: bool,
}

impl Deframer {
    /// The server sent Close: the stream has ended.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// `buf[start..end]` is what a read appended; returns where the
    /// command bytes now end (`buf[start..returned]` is payload).
    pub fn deframe(&mut self, buf: &mut [u8], start: usize, end: usize) -> usize {
        let (mut w, mut r) = (start, start);
        while r < end && !self.closed {
            if self.left > 0 {
                let k = (self.left.min((end - r) as u64)) as usize;
                if !self.control {
                    buf.copy_within(r..r + k, w);
                    w += k;
                }
                r += k;
                self.left -= k as u64;
                continue;
            }
            // A header: collect it whole.
            let need = match self.head_len {
                0 | 1 => 2,
                _ => header_len(self.head[1]),
            };
            let k = (need - self.head_len).min(end - r);
            self.head[self.head_len..self.head_len + k].copy_from_slice(&buf[r..r + k]);
            self.head_len += k;
            r += k;
            if self.head_len < need || need == 2 && header_len(self.head[1]) > 2 {
                continue;
            }
            let h = &self.head[..self.head_len];
            let len = match h[1] & 0x7F {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                n => u64::from(n),
            };
            let op = h[0] & 0x0F;
            self.control = op >= 8;
            self.closed = op == 8;
            self.left = len;
            self.head_len = 0;
        }
        w
    }
}

/// Length of a server frame header whose second byte is `b1`.
fn header_len(b1: u8) -> usize {
    let ext = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | op];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Frames cut at every point give the payloads back in order; a Ping
    /// between them is dropped; a Close ends the stream.
    #[test]
    fn frames_cut_anywhere_give_their_payloads_in_order() {
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut wire = server_frame(2, b"abc");
        wire.extend(server_frame(9, b"ping"));
        wire.extend(server_frame(2, &big));
        wire.extend(server_frame(8, &[3, 232]));
        wire.extend(server_frame(2, b"after close"));
        let mut want = b"abc".to_vec();
        want.extend_from_slice(&big);
        for cut in 0..wire.len() {
            let mut d = Deframer::default();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                let start = buf.len();
                buf.extend_from_slice(part);
                let end = buf.len();
                let n = d.deframe(&mut buf, start, end);
                buf.truncate(n);
                got.extend_from_slice(&buf);
                buf.clear();
            }
            assert_eq!(got, want, "cut at {cut}");
            assert!(d.closed());
        }
    }

    #[test]
    fn client_headers_are_masked_with_key_zero() {
        let mut h = Vec::new();
        client_header(5, &mut h);
        assert_eq!(h, [0x82, 0x85, 0, 0, 0, 0]);
        h.clear();
        client_header(300, &mut h);
        assert_eq!(h, [0x82, 0xFE, 1, 44, 0, 0, 0, 0]);
    }
}
