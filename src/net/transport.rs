//! The transport seam: what sits between a connection's socket (moved by
//! the backend in [`super::io`]) and its command stream (read by the
//! shard's input path, written from its [`OutQueue`](super::outbuf::OutQueue)).
//! The connection driver (`shard::driver`, `shard::writer`) calls the
//! three hooks below at fixed points and knows nothing else of the
//! transport, so a new transport plugs in here without touching chatd's or
//! statusd's logic.
//!
//! Only plain TCP exists today: the socket's bytes *are* the command
//! stream, every hook is the identity, and [`Transport`] is zero-sized, so
//! the seam costs nothing (no copy, no allocation, no lookup of its own:
//! each hook runs where the driver already holds the connection).
//!
//! # Adding a transport (WebSocket, TLS)
//!
//! A variant of [`Transport`] carries the connection's transport state
//! (boxed, so [`Conn`](crate::shard::Conn) grows by one pointer at most);
//! the listener that accepted the socket decides which variant a
//! connection gets (`shard::driver::accept_loop`).
//!
//! - **Before login.** A handshake (TLS, the WebSocket HTTP upgrade) runs
//!   while the connection is still in its login phase: it was registered
//!   with its login deadline before the first byte arrived, so the login
//!   timeout covers the handshake too, and nothing reaches the input path
//!   until [`Transport::inbound`] yields command bytes.
//! - **Inbound** ([`Transport::inbound`]): a read appended raw bytes to the
//!   connection's read buffer; the transport turns them into command-stream
//!   bytes *in place* (a WebSocket unmasks payloads and drops frame
//!   headers; TLS decrypts records) and keeps whatever it cannot use yet (a
//!   partial header or record) in its own state, so that on return the
//!   buffer holds command bytes only. It may ask for the connection to be
//!   closed ([`Inbound::Close`]). A transport that must write bytes of its
//!   own (a handshake answer, a pong, a close frame) adds an [`Inbound`]
//!   variant carrying them, which the driver writes before the replies to
//!   the commands: the first such transport decides how they are ordered
//!   with queued frames.
//! - **Outbound** ([`Transport::outbound`]): just before a vectored write,
//!   the batch of shared command frames taken from the queue is prepared
//!   for the socket: as it is for TCP (zero-copy fan-out); with one
//!   WebSocket frame header put in front of the whole batch (server frames
//!   are not masked, so the shared frames still go out as they are);
//!   encrypted for TLS. After the write, [`Transport::written`] takes its
//!   own additions back out of the batch and says how many of the bytes
//!   written were command bytes, so the queue gets back exactly the frames
//!   it lent and its accounting (and `--max-outbuf-bytes`) stays about
//!   commands. A
//!   transport that writes a batch in several socket writes (a WebSocket
//!   frame cut short by a partial write) remembers how much of its current
//!   frame is still owed and adds no header for it next time.

use bytes::{Bytes, BytesMut};

/// A connection's transport. Zero-sized while TCP is the only one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: socket bytes are command bytes, both ways.
    #[default]
    Tcp,
}

/// What the input path does after [`Transport::inbound`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Inbound {
    /// The read buffer holds command-stream bytes only: handle them.
    Commands,
    /// The peer ended the transport (a WebSocket close frame, a TLS
    /// `close_notify`, a broken handshake): close the connection. Not
    /// produced by TCP.
    Close,
}

impl Transport {
    /// Turns the `new` bytes a read just appended to `buf` into
    /// command-stream bytes, in place (see the module docs). TCP: nothing
    /// to do.
    #[inline]
    pub fn inbound(&mut self, buf: &mut BytesMut, new: usize) -> Inbound {
        match self {
            Transport::Tcp => {
                debug_assert!(new <= buf.len());
                Inbound::Commands
            }
        }
    }

    /// Prepares `batch`, frames just taken from the connection's queue, for
    /// one vectored write. TCP: as they are.
    #[inline]
    pub fn outbound(&mut self, batch: &mut Vec<Bytes>) {
        match self {
            Transport::Tcp => {
                let _ = batch;
            }
        }
    }

    /// After a write of `n` socket bytes of a batch [`Transport::outbound`]
    /// prepared: takes back out of `batch` whatever the transport put in
    /// (so the queue gets back only its own frames) and returns how many
    /// of the bytes written were command bytes (what the queue accounts
    /// for). TCP: all of them.
    #[inline]
    pub fn written(&mut self, batch: &mut Vec<Bytes>, n: usize) -> usize {
        match self {
            Transport::Tcp => {
                let _ = batch;
                n
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TCP is the identity at every hook: what a read appended is the
    /// command stream, a batch goes out as queued, and every byte written
    /// is a command byte.
    #[test]
    fn tcp_passes_bytes_through_untouched_both_ways() {
        let mut t = Transport::default();
        assert_eq!(std::mem::size_of::<Transport>(), 0);

        let mut buf = BytesMut::from(&b"\x00\x01\x07\x00\x00\x00\x00\x00\x00\x00"[..]);
        let before = buf.clone();
        assert_eq!(t.inbound(&mut buf, 3), Inbound::Commands);
        assert_eq!(buf, before);

        let frames = vec![Bytes::from_static(b"\x00"), Bytes::from_static(b"\x02abc")];
        let mut batch = frames.clone();
        t.outbound(&mut batch);
        assert_eq!(batch, frames);
        assert_eq!(t.written(&mut batch, 5), 5);
        assert_eq!(batch, frames);
    }
}
