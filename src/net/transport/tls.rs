//! The TLS layer of a connection's transport (protocol section 9): the
//! driver's side of [`crate::tls::Session`]. Inbound it decrypts in the
//! read buffer; outbound it encrypts a write's bytes (after the WebSocket
//! layer framed them, on `wss`) into one buffer of records, and puts what
//! rustls itself must send (handshake messages, alerts, tickets) first.
//!
//! A plaintext HTTP client on the `wss` port gets a plaintext HTTP 400
//! saying the port speaks TLS, the one clear error its protocol allows; a
//! plaintext chatd or statusd client just sees the connection end (with
//! whatever alert rustls queued).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::server::ServerConfig;

use crate::tls::{Session, SessionError};

/// The answer to plaintext HTTP on the `wss` port.
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 45\r\n\r\nthis port speaks TLS: connect with wss://...\n";

/// What one call to [`TlsLayer::inbound`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TlsIn {
    /// Plaintext appended (possibly none: a handshake message).
    Plaintext(usize),
    /// The peer sent close_notify after the plaintext appended.
    PlaintextThenClose(usize),
    /// TLS failed: close (an alert or an HTTP answer may be waiting).
    Close,
}

/// One connection's TLS state.
#[derive(Debug)]
pub(super) struct TlsLayer {
    session: Session,
    /// Plaintext bytes of the server's own to send before (instead of)
    /// any record: the HTTP answer to plaintext on the `wss` port.
    raw: Option<Bytes>,
    /// Whether the peer completed the handshake once (a plaintext client
    /// is told only before that).
    established: bool,
    /// The session failed: only what rustls queued (an alert) goes out.
    failed: bool,
    /// close_notify was sent: nothing goes out any more.
    done: bool,
}

impl TlsLayer {
    /// A session with the configuration current at accept.
    pub(super) fn new(config: Arc<ServerConfig>) -> Result<TlsLayer, SessionError> {
        Ok(TlsLayer {
            session: Session::new(config)?,
            raw: None,
            established: false,
            failed: false,
            done: false,
        })
    }

    /// The handshake is done and the session healthy: plaintext may be
    /// sent.
    pub(super) fn is_open(&self) -> bool {
        !self.failed && !self.done && !self.session.is_handshaking()
    }

    /// Bytes of its own wait (handshake messages, an alert, an answer).
    pub(super) fn wants_write(&mut self) -> bool {
        self.raw.is_some() || (!self.done && self.session.wants_write())
    }

    /// Decrypts `buf[buf.len() - new..]` in place (see
    /// [`Session::receive_in_place`]). `http` says whether this is the
    /// WebSocket listener (a plaintext HTTP request there gets an answer).
    pub(super) fn inbound(&mut self, buf: &mut BytesMut, new: usize, http: bool) -> TlsIn {
        if self.failed || self.done {
            buf.clear();
            return TlsIn::Close;
        }
        let start = buf.len() - new;
        let http = http && !self.established && looks_like_http(&buf[start..]);
        match self.session.receive_in_place(buf, start) {
            Ok(got) => {
                self.established |= !self.session.is_handshaking();
                if got.peer_closed {
                    TlsIn::PlaintextThenClose(got.plaintext)
                } else {
                    TlsIn::Plaintext(got.plaintext)
                }
            }
            Err(e) => {
                tracing::debug!("{e}");
                self.failed = true;
                if http {
                    self.raw = Some(Bytes::from_static(PLAIN_HTTP_ON_TLS));
                }
                buf.clear();
                TlsIn::Close
            }
        }
    }

    /// Encrypts `plain` (a write's bytes, in order) after whatever rustls
    /// must send first, into one buffer of records. Before the handshake
    /// finished only rustls's own bytes go out (nothing else is sent then).
    pub(super) fn seal(&mut self, plain: &[Bytes]) -> Result<Bytes, SessionError> {
        if let Some(raw) = self.raw.take() {
            // Instead of TLS: nothing else follows it.
            self.done = true;
            return Ok(raw);
        }
        let size: usize = plain.iter().map(Bytes::len).sum();
        let mut out = BytesMut::with_capacity(size + size / 64 + 64);
        if self.done {
            return Ok(out.freeze());
        }
        // After a failure this is the alert rustls queued, if any.
        self.session.pending(&mut out)?;
        if size > 0 && self.is_open() {
            self.session.send(&[], plain, &mut out)?;
        }
        Ok(out.freeze())
    }

    /// The last bytes: `plain` (a WebSocket Close frame, or nothing)
    /// encrypted, then close_notify. Nothing when the session is not
    /// established or failed.
    pub(super) fn finish(&mut self, plain: &[Bytes]) -> Bytes {
        if let Some(raw) = self.raw.take() {
            self.done = true;
            return raw;
        }
        if !self.is_open() {
            self.done = true;
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        self.done = true;
        let sealed = self.session.pending(&mut out).and_then(|()| {
            self.session.send(&[], plain, &mut out)?;
            self.session.close_notify(&mut out)
        });
        if let Err(e) = sealed {
            tracing::debug!("{e}");
        }
        out.freeze()
    }
}

/// Whether plaintext `b` starts like an HTTP request (an upper-case method
/// and a space), where a TLS ClientHello starts with 0x16.
fn looks_like_http(b: &[u8]) -> bool {
    let method = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    method > 0 && b.get(method) == Some(&b' ')
}
