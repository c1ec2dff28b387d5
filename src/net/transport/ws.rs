//! The WebSocket layer of a connection's transport (protocol section 8):
//! the driver's side of [`crate::ws`]. Inbound it runs the HTTP upgrade,
//! then decodes frames in place into the command stream; outbound it puts
//! one binary frame header in front of the command frames of a write and
//! owes the rest of a frame a short write cut; it keeps the bytes of its
//! own (the 101 answer, an HTTP refusal, a Pong) until the write that
//! carries them, and says which Close ends the connection.
//!
//! It does no I/O: [`super::Transport`] calls it with the read buffer and
//! the write batches.

use bytes::{Bytes, BytesMut};

use super::{CloseWhy, Ctx};
use crate::ids::Service;
use crate::ws::encode::{self, Header};
use crate::ws::handshake::{self, Parsed};
use crate::ws::{CloseCode, Decoder};

/// Where the connection is in its WebSocket life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the whole upgrade request (the login timeout runs).
    Handshake,
    /// Upgraded: frames in (until the client's Close or a framing error,
    /// which the decoder then keeps), frames out.
    Open,
    /// The upgrade was refused: an HTTP answer, no frames.
    Refused,
    /// The last bytes went out ([`WsLayer::finish`]).
    Finished,
}

/// What one call to [`WsLayer::inbound`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WsIn {
    /// The buffer holds command bytes only.
    Commands,
    /// The buffer holds command bytes only; the client sent Close after
    /// them: handle them, then close.
    CommandsThenClose,
    /// Still in the handshake: the buffer holds the request so far.
    Wait,
    /// Refused or broken: close (the answer, if any, is in the own bytes).
    Close,
}

/// One connection's WebSocket state, kept small (it is in every idle
/// WebSocket connection): 104 bytes.
#[derive(Debug)]
pub(super) struct WsLayer {
    /// The frame decoder (made for the limit at the upgrade).
    decoder: Decoder,
    phase: Phase,
    /// The service the upgrade named, until the driver takes it.
    upgraded: Option<Service>,
    /// The Close frame that ends the connection, once decided.
    close: Option<CloseWith>,
    /// Bytes of its own waiting to be written at the next write: the 101
    /// answer or an HTTP refusal, a Pong. The driver queues a marker for
    /// them ([`super::Transport::wants_write`]).
    own: Vec<u8>,
    /// Payload bytes of the binary frame in progress that a short write
    /// left unwritten: the next write sends them first, with no header.
    owed: usize,
}

/// Which Close frame the server sends last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseWith {
    /// The answer to a client's Close: its status (none for none).
    Echo(Option<CloseCode>),
    /// A framing error (the decoder keeps it): its status, its text as
    /// the reason.
    Error,
    /// After an `OP_ERROR`, or any other close the server decides.
    Status(CloseCode),
}

impl WsLayer {
    /// A connection just accepted on the WebSocket listener.
    pub(super) fn new() -> WsLayer {
        WsLayer {
            decoder: Decoder::new(0),
            phase: Phase::Handshake,
            upgraded: None,
            close: None,
            own: Vec::new(),
            owed: 0,
        }
    }

    /// Upgraded and no Close sent yet: command frames can be sent (after
    /// the client's Close or a framing error too: what was queued before
    /// goes out ahead of the server's Close).
    pub(super) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Own bytes wait for a write.
    pub(super) fn has_own(&self) -> bool {
        !self.own.is_empty()
    }

    /// Takes the service the upgrade named (once).
    pub(super) fn take_upgrade(&mut self) -> Option<Service> {
        self.upgraded.take()
    }

    /// Handles the `new` bytes at the end of `buf` (plaintext: TLS, if
    /// any, is undone already). See [`super::Transport::inbound`].
    pub(super) fn inbound(&mut self, buf: &mut BytesMut, new: usize, ctx: &Ctx<'_>) -> WsIn {
        match self.phase {
            Phase::Handshake => match handshake::parse(buf, ctx.origins) {
                Parsed::Incomplete => WsIn::Wait,
                Parsed::Reject(why) => {
                    why.write(&mut self.own);
                    self.phase = Phase::Refused;
                    buf.clear();
                    WsIn::Close
                }
                Parsed::Upgrade { request, used } => {
                    handshake::accept(&request, &mut self.own);
                    self.upgraded = Some(request.service);
                    self.phase = Phase::Open;
                    self.decoder = Decoder::new(ctx.max_message_len);
                    bytes::Buf::advance(buf, used);
                    // Bytes after the request are already frames.
                    self.decode(buf, 0)
                }
            },
            Phase::Open => {
                let start = buf.len() - new;
                self.decode(buf, start)
            }
            Phase::Refused | Phase::Finished => {
                buf.clear();
                WsIn::Close
            }
        }
    }

    /// Decodes the frames in `buf[start..]`.
    fn decode(&mut self, buf: &mut BytesMut, start: usize) -> WsIn {
        match self.decoder.decode(buf, start) {
            Ok(inbound) => {
                if let Some(close) = inbound.close {
                    self.close = Some(CloseWith::Echo(close.code));
                    return WsIn::CommandsThenClose;
                }
                if let Some(ping) = inbound.ping {
                    encode::pong(ping.as_slice(), &mut self.own);
                }
                WsIn::Commands
            }
            Err(e) => {
                tracing::debug!("websocket: {e}");
                self.close = Some(CloseWith::Error);
                buf.clear();
                WsIn::Close
            }
        }
    }

    /// The connection closes after an `OP_ERROR` (or for another reason
    /// of the server's): the Close status, unless one is decided already.
    pub(super) fn close_with(&mut self, why: CloseWhy) {
        let code = match why {
            CloseWhy::ShuttingDown => CloseCode::NORMAL,
            CloseWhy::Error => CloseCode::POLICY_VIOLATION,
        };
        self.close.get_or_insert(CloseWith::Status(code));
    }

    /// The Close frame to send last, if the connection was upgraded (an
    /// unfinished handshake just ends). Without a decided status (a login
    /// or idle timeout): 1000. Own bytes still waiting are dropped.
    pub(super) fn finish(&mut self, out: &mut BytesMut) {
        let upgraded = self.phase == Phase::Open;
        self.phase = Phase::Finished;
        self.own = Vec::new();
        if !upgraded {
            return;
        }
        debug_assert_eq!(self.owed, 0, "a frame is still owed at the close");
        match self.close.unwrap_or(CloseWith::Status(CloseCode::NORMAL)) {
            CloseWith::Echo(code) => encode::close(code, "", out),
            CloseWith::Error => match self.decoder.error() {
                Some(e) => encode::close(Some(e.close_code()), &e.to_string(), out),
                None => encode::close(Some(CloseCode::PROTOCOL_ERROR), "", out),
            },
            CloseWith::Status(code) => encode::close(Some(code), "", out),
        }
    }

    /// Payload bytes of the frame in progress still owed.
    pub(super) fn owed(&self) -> usize {
        self.owed
    }

    /// Sets the bytes owed of the frame in progress.
    pub(super) fn set_owed(&mut self, owed: usize) {
        self.owed = owed;
    }

    /// Takes the own bytes for a write.
    pub(super) fn take_own(&mut self) -> Option<Bytes> {
        if self.own.is_empty() {
            return None;
        }
        // Taken whole, so an idle connection keeps no buffer for them.
        Some(Bytes::from(std::mem::take(&mut self.own)))
    }

    /// Puts back own bytes a write did not send at all, in front of any
    /// that arrived meanwhile.
    pub(super) fn untake_own(&mut self, own: Bytes) {
        let mut all = Vec::with_capacity(own.len() + self.own.len());
        all.extend_from_slice(&own);
        all.extend_from_slice(&self.own);
        self.own = all;
    }

    /// The header of a binary frame carrying `len` bytes.
    pub(super) fn header(len: usize) -> Bytes {
        Bytes::copy_from_slice(Header::binary(len).as_bytes())
    }
}
