//! One connection's TLS, server side, sans-IO: a thin wrapper around
//! `rustls::ServerConnection` shaped for the connection driver.
//!
//! - [`Session::receive`]: ciphertext a read returned in, plaintext
//!   appended to the buffer the command (or WebSocket) decoder reads;
//! - [`Session::pending`]: ciphertext rustls wants sent (handshake
//!   messages, alerts, session tickets), appended to an output buffer;
//! - [`Session::send`]: plaintext out, as one optional header (the
//!   WebSocket frame header) and the queued frames, encrypted together
//!   into as few records as their size allows;
//! - [`Session::close_notify`]: the TLS close before a TCP close.
//!
//! Plaintext is copied once each way (decryption and encryption produce
//! new bytes anyway). Memory is bounded: everything decrypted is handed
//! over at once, and `send` drains rustls's output buffer (64 KiB by
//! default) as it fills.

use std::io::{IoSlice, Read as _, Write as _};
use std::sync::Arc;

use bytes::{BufMut as _, Bytes, BytesMut};
use rustls::server::{ServerConfig, ServerConnection};

/// Slices handed to rustls per vectored write (rustls gathers them into
/// records of up to 16 KiB).
const SLICES_PER_WRITE: usize = 64;

/// Why a TLS session ends. The driver sends what [`Session::pending`]
/// still holds (an alert, if rustls queued one) and closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer broke TLS: not TLS at all (a plaintext client), a failed
    /// handshake, a bad record, or an alert it sent.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls refused bytes it was given (its buffers are drained after
    /// every record, so this means a bug rather than a peer's doing).
    #[error("TLS buffer: {0}")]
    Io(#[from] std::io::Error),
    /// Plaintext sent before the handshake finished: the driver sends
    /// nothing before it (and rustls would hold it unencrypted).
    #[error("TLS: plaintext sent before the handshake finished")]
    NotReady,
}

/// What a [`Session::receive`] call found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Plaintext bytes appended to the buffer.
    pub plaintext: usize,
    /// The peer sent close_notify: it sends nothing more. Answer with
    /// [`Session::close_notify`] and close.
    pub peer_closed: bool,
}

/// One connection's TLS state (rustls's, about 1 KB plus its buffers while
/// records are in flight).
#[derive(Debug)]
pub struct Session {
    conn: ServerConnection,
}

impl Session {
    /// A session for a connection just accepted, with the configuration
    /// current at accept time (a reload does not change it).
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, SessionError> {
        Ok(Session {
            conn: ServerConnection::new(config)?,
        })
    }

    /// Whether the handshake is still going on (nothing may be sent yet;
    /// the login timeout is running).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether rustls has bytes to send (handshake messages, alerts,
    /// tickets): [`Session::pending`] gives them.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The ALPN protocol agreed, if any (`http/1.1` on the admin listener).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Feeds `ciphertext` (what a read returned) and appends the plaintext
    /// it carries to `plain`. Afterwards call [`Session::pending`]: the
    /// handshake answers. On error the session is over; what `pending`
    /// still yields (an alert) may be sent before closing.
    pub fn receive(
        &mut self,
        mut ciphertext: &[u8],
        plain: &mut BytesMut,
    ) -> Result<Received, SessionError> {
        let mut got = Received::default();
        loop {
            // rustls takes at most what its record buffer has room for, so
            // a large read is fed in pieces, each processed before the next.
            let n = if ciphertext.is_empty() {
                0
            } else {
                self.conn.read_tls(&mut ciphertext)?
            };
            let state = self.conn.process_new_packets()?;
            let len = state.plaintext_bytes_to_read();
            if len > 0 {
                let at = plain.len();
                plain.resize(at + len, 0);
                self.conn.reader().read_exact(&mut plain[at..])?;
                got.plaintext += len;
            }
            got.peer_closed |= state.peer_has_closed();
            if ciphertext.is_empty() || n == 0 {
                return Ok(got);
            }
        }
    }

    /// [`Session::receive`] in the connection's read buffer: `buf[start..]`
    /// is ciphertext a read just appended, `buf[..start]` plaintext an
    /// earlier call left; on return `buf` holds plaintext only, the new
    /// plaintext right after the old. rustls copies ciphertext into its
    /// own buffer as it takes it, so the plaintext it hands back is written
    /// over ciphertext already taken: no second buffer, no allocation. When
    /// a record begun in an earlier read makes the plaintext outgrow the
    /// ciphertext taken so far, the ciphertext not yet taken is moved out
    /// first and the rest is appended (rare: a record cut by a read).
    ///
    /// On error `buf` keeps the plaintext decoded before the fault.
    pub fn receive_in_place(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
    ) -> Result<Received, SessionError> {
        debug_assert!(start <= buf.len());
        let mut got = Received::default();
        // buf = [plaintext ..w | taken w..r | ciphertext r..end]
        let (mut w, mut r, end) = (start, start, buf.len());
        while r < end {
            let mut input = &buf[r..end];
            let n = self.conn.read_tls(&mut input);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    buf.truncate(w);
                    return Err(e.into());
                }
            };
            r += n;
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    buf.truncate(w);
                    return Err(e.into());
                }
            };
            got.peer_closed |= state.peer_has_closed();
            let len = state.plaintext_bytes_to_read();
            if len > r - w {
                // More plaintext than room: take the rest of the
                // ciphertext out and append from here on.
                let rest = buf.split_off(r);
                buf.truncate(w);
                // This plaintext first: rustls takes no more ciphertext
                // while it holds more plaintext than its limit (16 KiB).
                buf.resize(w + len, 0);
                self.conn.reader().read_exact(&mut buf[w..])?;
                w += len;
                let more = self.receive(&rest, buf)?;
                got.plaintext += more.plaintext + (w - start);
                got.peer_closed |= more.peer_closed;
                return Ok(got);
            }
            self.conn.reader().read_exact(&mut buf[w..w + len])?;
            w += len;
            if n == 0 {
                break;
            }
        }
        buf.truncate(w);
        got.plaintext = w - start;
        Ok(got)
    }

    /// Appends the ciphertext waiting to be sent (handshake messages,
    /// alerts, close_notify) to `out`.
    pub fn pending(&mut self, out: &mut BytesMut) -> Result<(), SessionError> {
        let mut w = out.writer();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut w)?;
        }
        Ok(())
    }

    /// Encrypts `head` (the WebSocket frame header; empty over raw TCP)
    /// followed by `frames`, and appends the records to `out`. Only after
    /// the handshake ([`SessionError::NotReady`] before).
    pub fn send(
        &mut self,
        head: &[u8],
        frames: &[Bytes],
        out: &mut BytesMut,
    ) -> Result<(), SessionError> {
        if self.conn.is_handshaking() {
            return Err(SessionError::NotReady);
        }
        let head = (!head.is_empty()).then_some(head);
        let mut parts = head
            .into_iter()
            .chain(frames.iter().map(|f| &f[..]))
            .filter(|p| !p.is_empty());
        // The part being written, from its first byte not yet taken.
        let mut current = parts.next();
        while let Some(first) = current {
            let mut slices = [IoSlice::new(&[]); SLICES_PER_WRITE];
            slices[0] = IoSlice::new(first);
            let mut count = 1;
            let mut rest = parts.clone();
            while count < SLICES_PER_WRITE {
                let Some(p) = rest.next() else { break };
                slices[count] = IoSlice::new(p);
                count += 1;
            }
            let mut taken = self.conn.writer().write_vectored(&slices[..count])?;
            if taken == 0 {
                // rustls's output buffer is full: drain it and go on.
                if !self.conn.wants_write() {
                    return Err(SessionError::NotReady);
                }
                self.pending(out)?;
                continue;
            }
            // Skip the parts wholly taken; keep the rest of a part cut.
            current = Some(first);
            while let Some(p) = current {
                if taken < p.len() {
                    current = Some(&p[taken..]);
                    break;
                }
                taken -= p.len();
                current = parts.next();
            }
            self.pending(out)?;
        }
        Ok(())
    }

    /// Queues close_notify and appends it (with anything else waiting) to
    /// `out`: send it, then close the TCP connection.
    pub fn close_notify(&mut self, out: &mut BytesMut) -> Result<(), SessionError> {
        self.conn.send_close_notify();
        self.pending(out)
    }
}
