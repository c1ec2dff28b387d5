//! The transport seam: what sits between a connection's socket (moved by
//! the backend in [`super::io`]) and its command stream (read by the
//! shard's input path, written from its [`OutQueue`](super::outbuf::OutQueue)).
//! The connection driver (`shard::driver`, `shard::writer`) calls the
//! hooks below at fixed points and knows nothing else of the transport,
//! so chatd's and statusd's logic never learn which transport a client
//! uses.
//!
//! Three transports, in layers ([`Transport::new`]; the listener that
//! accepted the socket decides):
//! - **TCP**: the socket's bytes *are* the command stream; [`Transport`]
//!   holds nothing (a null pointer) and every hook is the identity, so the
//!   seam costs TCP nothing: the driver writes its batches as they are.
//! - **WebSocket** (`ws.rs`, over [`crate::ws`]): the HTTP upgrade, then
//!   frames decoded in place into the command stream; one binary frame
//!   header per write.
//! - **TLS** (`tls.rs`, over [`crate::tls`]): decryption in place,
//!   encryption of a write's bytes into records. Under the WebSocket layer
//!   on the `wss` listener, under nothing on the chatd and statusd ones.
//!
//! The state of the other transports is boxed, so a
//! [`Conn`](crate::shard::Conn) grows by one pointer.
//!
//! # The hooks
//!
//! - **Before login.** A handshake (TLS, the WebSocket HTTP upgrade) runs
//!   while the connection is still in its login phase: it was registered
//!   with its login deadline at accept, so the login timeout covers the
//!   handshake too, and nothing reaches the input path until
//!   [`Transport::inbound`] yields command bytes. A WebSocket connection is
//!   registered as chatd and switched to the service its path names when
//!   the upgrade completes ([`Transport::take_upgrade`]).
//! - **Inbound** ([`Transport::inbound`]): a read appended raw bytes to the
//!   connection's read buffer; the transport turns them into command-stream
//!   bytes *in place* (TLS decrypts records over the ciphertext it took; a
//!   WebSocket unmasks payloads and closes the gaps of frame headers) and
//!   keeps what it cannot use yet in its own state, so that on return the
//!   buffer holds command bytes only. [`Inbound`] says what the driver
//!   does next.
//! - **Bytes of its own** (the first extension point: the 101 answer or an
//!   HTTP refusal, a Pong, TLS handshake messages and alerts). After
//!   `inbound`, [`Transport::wants_write`] says whether the transport has
//!   such bytes; the driver then queues a *marker*, an empty frame, on the
//!   connection's `OutQueue` like any frame. The marker fixes where the
//!   transport's bytes go among the command frames (after the frames queued
//!   before it, before the replies to the commands of the same read) and
//!   makes sure a writer writes them even when no command frame follows.
//!   The queue treats it as a frame of no bytes.
//! - **Outbound** ([`Transport::outbound`]): the driver takes a batch from
//!   the queue as always; TCP writes it as it is. Any other transport moves
//!   the frames of one write into a socket batch, putting in front of them
//!   the rest of a frame a short write cut (with no new header), its own
//!   bytes where the marker was, and one binary frame header for the
//!   command frames after it, up to the next marker (and at most
//!   [`WS_MESSAGE_MAX`] of them, or one larger frame): one header per
//!   write, never per command, and the shared frames themselves go out
//!   unchanged (zero-copy fan-out stays). With TLS, [`Transport::seal`]
//!   then encrypts the socket batch into one buffer of records (at most
//!   [`TLS_WRITE_PLAINTEXT_MAX`] of plaintext).
//! - **After the write** ([`Transport::written`]): the transport takes its
//!   own elements back out, gives the queue back exactly the frames it
//!   lent (the marker included) and says how many command bytes went out,
//!   so the queue's accounting (and `--max-outbuf-bytes`) stays about
//!   commands. **A WebSocket frame's header covers exactly its frames**, so
//!   a short write inside them leaves the rest *owed*: the next write sends
//!   it first, as the rest of that frame, before anything else. A short
//!   write inside bytes the transport made (a header, a control frame,
//!   records) returns their rest ([`Written::rest`]), which the driver
//!   writes before anything else. That owed rest is what a slow
//!   consumer's close must still send before its `OP_ERROR`
//!   ([`Transport::owed`]); what the queue holds after it is dropped.
//! - **Closing.** When a connection closes after an `OP_ERROR`, the driver
//!   says why ([`Transport::close_with`]); once its queue is flushed,
//!   [`Transport::finish`] gives the last bytes before the TCP close: the
//!   WebSocket Close frame (1000 after SHUTTING_DOWN, 1008 after another
//!   error, the client's status echoed, a framing error's status) and TLS
//!   close_notify.
//!
//! Until a transport is open (the upgrade or the TLS handshake not done),
//! command frames cannot be sent: the only ones queued then are a closing
//! `OP_ERROR` (SHUTTING_DOWN during a drain), which is dropped, since the
//! connection is closed after it anyway.

mod tls;
mod ws;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::server::ServerConfig;

use crate::ids::Service;
use crate::tls::SessionError;
use crate::ws::handshake::OriginPolicy;

pub use crate::limits::{TLS_WRITE_PLAINTEXT_MAX, WS_MESSAGE_MAX};

use self::tls::{TlsIn, TlsLayer};
use self::ws::{WsIn, WsLayer};

/// A connection's transport: nothing for TCP, else its boxed layers.
#[derive(Debug, Default)]
pub struct Transport(Option<Box<Layers>>);

/// The layers of a transport other than plain TCP.
#[derive(Debug)]
struct Layers {
    /// The WebSocket layer (the WebSocket listener).
    ws: Option<WsLayer>,
    /// The TLS layer (every listener, with `--tls-cert`), boxed: rustls's
    /// state is about 1 KB.
    tls: Option<Box<TlsLayer>>,
    /// How the write in flight laid out its socket batch.
    plan: Plan,
    /// Accepted over `--max-connections`: refused with `OP_ERROR` once
    /// open (an error cannot be sent before).
    refuse: bool,
}

/// The layout of a socket batch made by [`Transport::outbound`]:
/// `[owed frames][slot][header][data frames][slot]`, each part optional.
/// Counts fit 16 bits: a batch holds at most `WRITE_IOVECS_MAX` (1,024)
/// frames.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    /// Leading frames that finish the frame a short write cut.
    owed: u16,
    /// A marker's slot follows them.
    lead: bool,
    /// A WebSocket frame header follows.
    header: bool,
    /// Command frames under that header.
    data: u16,
    /// A marker's slot ends the batch.
    tail: bool,
    /// The index of the slot holding the transport's own bytes (the other
    /// slots hold their marker).
    own: Option<u16>,
    /// Not open yet: the batch's frames were dropped, only own bytes go
    /// out (the socket batch is at most the own bytes).
    discard: bool,
}

/// What an element of a socket batch is ([`Plan::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// A command frame of the queue's, of the owed frame or the new one.
    Command { owed: bool },
    /// A marker, holding nothing.
    Marker,
    /// The transport's own bytes, in a marker's slot.
    Own,
    /// The header of the new frame.
    Header,
}

impl Plan {
    fn kind(&self, i: usize) -> Part {
        let slot = |i| {
            if self.own.map(usize::from) == Some(i) {
                Part::Own
            } else {
                Part::Marker
            }
        };
        let lead = usize::from(self.owed);
        let header = lead + usize::from(self.lead);
        let data = header + usize::from(self.header);
        if i < lead {
            Part::Command { owed: true }
        } else if self.lead && i == lead {
            slot(i)
        } else if self.header && i == header {
            Part::Header
        } else if i < data + usize::from(self.data) {
            Part::Command { owed: false }
        } else {
            slot(i)
        }
    }
}

/// What the transport needs to know of the server's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// `--ws-allowed-origins`.
    pub origins: &'a OriginPolicy,
    /// The longest WebSocket message accepted: the longest command
    /// (`--max-rtmsg-len` + 25).
    pub max_message_len: usize,
}

/// What the input path does after [`Transport::inbound`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Inbound {
    /// The read buffer holds command-stream bytes only: handle them.
    Commands,
    /// Handle the command bytes, then close: the peer ended the transport
    /// cleanly after them (a WebSocket Close, TLS close_notify).
    CommandsThenClose,
    /// Nothing for the input path yet (a handshake in progress): keep the
    /// buffer as it is.
    Wait,
    /// The transport failed (a refused upgrade, broken framing, a failed
    /// TLS handshake): close; the buffer was emptied.
    Close,
}

/// Why the server closes a connection, for the WebSocket Close status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseWhy {
    /// After `OP_ERROR` SHUTTING_DOWN: 1000.
    ShuttingDown,
    /// After any other connection-closing `OP_ERROR`: 1008.
    Error,
}

/// What a write amounted to ([`Transport::written`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Command bytes written (what the queue accounts for).
    pub commands: usize,
    /// The rest of bytes the transport made that the write cut: write
    /// them next, before anything else.
    pub rest: Option<Bytes>,
}

impl Transport {
    /// Plain TCP.
    pub fn tcp() -> Transport {
        Transport(None)
    }

    /// The transport of a connection accepted on a `websocket` listener or
    /// not, with TLS when `tls` is given (the configuration current at
    /// accept; a reload does not change it).
    pub fn new(websocket: bool, tls: Option<Arc<ServerConfig>>) -> Result<Transport, SessionError> {
        if !websocket && tls.is_none() {
            return Ok(Transport::tcp());
        }
        let tls = match tls {
            Some(config) => Some(Box::new(TlsLayer::new(config)?)),
            None => None,
        };
        Ok(Transport(Some(Box::new(Layers {
            ws: websocket.then(WsLayer::new),
            tls,
            plan: Plan::default(),
            refuse: false,
        }))))
    }

    /// Plain TCP: the batches go to the socket as they are.
    #[inline]
    pub fn is_tcp(&self) -> bool {
        self.0.is_none()
    }

    /// Turns the `new` bytes a read just appended to `buf` into
    /// command-stream bytes, in place (see the module docs).
    #[inline]
    pub fn inbound(&mut self, buf: &mut BytesMut, new: usize, ctx: &Ctx<'_>) -> Inbound {
        debug_assert!(new <= buf.len());
        match &mut self.0 {
            None => Inbound::Commands,
            Some(l) => l.inbound(buf, new, ctx),
        }
    }

    /// The service a WebSocket upgrade just named (once): the connection
    /// serves it from now on.
    pub fn take_upgrade(&mut self) -> Option<Service> {
        self.0.as_mut()?.ws.as_mut()?.take_upgrade()
    }

    /// The transport has bytes of its own to write: queue a marker.
    #[inline]
    pub fn wants_write(&mut self) -> bool {
        match &mut self.0 {
            None => false,
            Some(l) => {
                l.ws.as_ref().is_some_and(WsLayer::has_own)
                    || l.tls.as_mut().is_some_and(|t| t.wants_write())
            }
        }
    }

    /// Prepares a write: TCP returns false (write `batch` as it is); any
    /// other transport moves the frames of one write from the front of
    /// `batch` into `sock` with its own elements (see the module docs) and
    /// returns true. `batch` keeps the frames left for a later write.
    pub fn outbound(&mut self, batch: &mut Vec<Bytes>, sock: &mut Vec<Bytes>) -> bool {
        match &mut self.0 {
            None => false,
            Some(l) => {
                l.outbound(batch, sock);
                true
            }
        }
    }

    /// With TLS: encrypts `sock` (after what rustls must send first) into
    /// the bytes to write instead. `None` without TLS.
    pub fn seal(&mut self, sock: &[Bytes]) -> Result<Option<Bytes>, SessionError> {
        match self.0.as_mut().and_then(|l| l.tls.as_mut()) {
            None => Ok(None),
            Some(tls) => tls.seal(sock).map(Some),
        }
    }

    /// After a write of the first `n` bytes of `sock` (all of it when
    /// sealed: records are written whole): moves the queue's frames back
    /// from `sock` to the front of `batch` (which then holds every frame
    /// the queue lent, in order, for `OutQueue::written`), leaves `sock`
    /// empty, and says how many command bytes went out and what of the
    /// transport's own bytes must still be written.
    pub fn written(&mut self, sock: &mut Vec<Bytes>, n: usize, batch: &mut Vec<Bytes>) -> Written {
        match &mut self.0 {
            None => Written {
                commands: n,
                rest: None,
            },
            Some(l) => l.written(sock, n, batch),
        }
    }

    /// Command bytes at the front of the queue that the transport must
    /// still send as they are: the rest of the WebSocket message a short
    /// write cut (its header promised them). Nothing for TCP, nor for TLS,
    /// whose records are written whole before the queue hears of them. A
    /// slow consumer's cut keeps at least these ([`OutQueue::cut`]).
    ///
    /// [`OutQueue::cut`]: super::outbuf::OutQueue::cut
    pub fn owed(&self) -> usize {
        self.0
            .as_ref()
            .and_then(|l| l.ws.as_ref())
            .map_or(0, WsLayer::owed)
    }

    /// The connection must be refused with an `OP_ERROR` as soon as the
    /// transport is open ([`Transport::take_refusal`]).
    pub fn refuse_when_open(&mut self) {
        if let Some(l) = &mut self.0 {
            l.refuse = true;
        }
    }

    /// True once, when the transport is open and the connection was to be
    /// refused: send the `OP_ERROR` now.
    pub fn take_refusal(&mut self) -> bool {
        match &mut self.0 {
            Some(l) if l.refuse && l.is_open() => {
                l.refuse = false;
                true
            }
            _ => false,
        }
    }

    /// The connection closes after an `OP_ERROR`: the Close status to
    /// end with (unless one was decided already).
    pub fn close_with(&mut self, why: CloseWhy) {
        if let Some(ws) = self.0.as_mut().and_then(|l| l.ws.as_mut()) {
            ws.close_with(why);
        }
    }

    /// The last bytes before the TCP close, once the queue is flushed: the
    /// WebSocket Close frame and TLS close_notify, as the transport has
    /// them (nothing for TCP, nor for a handshake never finished). Once.
    pub fn finish(&mut self) -> Bytes {
        let Some(l) = &mut self.0 else {
            return Bytes::new();
        };
        let mut close = BytesMut::new();
        if let Some(ws) = &mut l.ws {
            ws.finish(&mut close);
        }
        match &mut l.tls {
            Some(tls) => tls.finish(&[close.freeze()]),
            None => close.freeze(),
        }
    }
}

impl Layers {
    fn inbound(&mut self, buf: &mut BytesMut, new: usize, ctx: &Ctx<'_>) -> Inbound {
        let mut plain = new;
        let mut peer_closed = false;
        if let Some(tls) = &mut self.tls {
            match tls.inbound(buf, new, self.ws.is_some()) {
                TlsIn::Plaintext(n) => plain = n,
                TlsIn::PlaintextThenClose(n) => (plain, peer_closed) = (n, true),
                TlsIn::Close => return Inbound::Close,
            }
        }
        let next = match &mut self.ws {
            None => Inbound::Commands,
            Some(ws) => match ws.inbound(buf, plain, ctx) {
                WsIn::Commands => Inbound::Commands,
                WsIn::CommandsThenClose => Inbound::CommandsThenClose,
                WsIn::Wait => Inbound::Wait,
                WsIn::Close => Inbound::Close,
            },
        };
        match (next, peer_closed) {
            (Inbound::Commands, true) => Inbound::CommandsThenClose,
            (Inbound::Wait, true) => Inbound::Close,
            (next, _) => next,
        }
    }

    /// Open: command frames can be sent.
    fn is_open(&self) -> bool {
        self.ws.as_ref().is_none_or(WsLayer::is_open)
            && self.tls.as_ref().is_none_or(|t| t.is_open())
    }

    fn outbound(&mut self, batch: &mut Vec<Bytes>, sock: &mut Vec<Bytes>) {
        debug_assert!(sock.is_empty());
        self.plan = Plan::default();
        if !self.is_open() {
            self.plan.discard = true;
            if let Some(own) = self.ws.as_mut().and_then(WsLayer::take_own) {
                sock.push(own);
                self.plan.own = Some(0);
            }
            return;
        }
        // [owed frames]: what finishes the frame a short write cut.
        let mut i = 0;
        let mut owed = self.ws.as_ref().map_or(0, WsLayer::owed);
        while owed > 0 && i < batch.len() {
            owed -= owed.min(batch[i].len());
            i += 1;
        }
        debug_assert_eq!(owed, 0, "the queue lost frames of a cut frame");
        let owed_frames = i;
        let is_marker = |i: usize| batch.get(i).is_some_and(Bytes::is_empty);
        // [slot]: a marker, where the transport's own bytes go.
        let lead = is_marker(i);
        i += usize::from(lead);
        // [data frames]: up to the next marker, and up to what one
        // message carries (and, with TLS, the plaintext a write encrypts
        // at once).
        let mut cap = usize::MAX;
        if self.ws.is_some() {
            cap = WS_MESSAGE_MAX;
        }
        if self.tls.is_some() {
            cap = cap.min(TLS_WRITE_PLAINTEXT_MAX);
        }
        let (data_start, mut size) = (i, 0);
        while let Some(f) = batch.get(i) {
            if f.is_empty() || (i > data_start && size + f.len() > cap) {
                break;
            }
            size += f.len();
            i += 1;
        }
        let data = i - data_start;
        // [slot]: a marker right after them comes too. The queue counts a
        // marker as written once the frames before it are, so one must
        // never be the first frame left for a later write.
        let tail = is_marker(i);
        i += usize::from(tail);
        let header = data > 0 && self.ws.is_some();
        let mut own = match lead || tail {
            true => self.ws.as_mut().and_then(WsLayer::take_own),
            false => None,
        };
        let mut own_at = None;
        for (k, frame) in batch.drain(..i).enumerate() {
            if k == data_start && header {
                sock.push(WsLayer::header(size));
            }
            let slot = (lead && k == owed_frames) || (tail && k == i - 1);
            match own.take() {
                Some(bytes) if slot => {
                    own_at = Some(sock.len());
                    sock.push(bytes);
                }
                o => {
                    own = o;
                    sock.push(frame);
                }
            }
        }
        debug_assert!(own.is_none(), "own bytes without a marker");
        // At most WRITE_IOVECS_MAX frames a batch: the counts fit.
        self.plan = Plan {
            owed: owed_frames as u16,
            lead,
            header,
            data: data as u16,
            tail,
            own: own_at.map(|i| i as u16),
            discard: false,
        };
    }

    fn written(&mut self, sock: &mut Vec<Bytes>, n: usize, batch: &mut Vec<Bytes>) -> Written {
        let plan = std::mem::take(&mut self.plan);
        if plan.discard {
            // Nothing of the queue's was written; it is dropped.
            let rest = match sock.first() {
                Some(own) if plan.own.is_some() && n < own.len() => Some(own.slice(n..)),
                _ => None,
            };
            sock.clear();
            return Written {
                commands: batch.iter().map(Bytes::len).sum(),
                rest,
            };
        }
        let mut out = Written::default();
        let mut left = n;
        let mut owed = self.ws.as_ref().map_or(0, WsLayer::owed);
        let data_bytes = || -> usize {
            (0..sock.len())
                .filter(|&i| plan.kind(i) == Part::Command { owed: false })
                .map(|i| sock[i].len())
                .sum()
        };
        // Walk the batch to where the write stopped.
        let (mut stopped, mut own_reached) = (false, false);
        for (i, b) in sock.iter().enumerate() {
            match plan.kind(i) {
                Part::Command { owed: in_owed } => {
                    let k = left.min(b.len());
                    out.commands += k;
                    left -= k;
                    if in_owed || plan.header {
                        owed -= k.min(owed);
                    }
                    if k < b.len() {
                        stopped = true;
                        break;
                    }
                }
                Part::Marker => {}
                // Everything before went out, so the queue counts its
                // marker as written: its bytes are finished now.
                Part::Own if left < b.len() => {
                    out.rest = Some(b.slice(left..));
                    own_reached = true;
                    stopped = true;
                    break;
                }
                Part::Own => {
                    own_reached = true;
                    left -= b.len();
                }
                Part::Header if left == 0 => {
                    stopped = true;
                    break;
                }
                Part::Header => {
                    owed = data_bytes();
                    if left < b.len() {
                        out.rest = Some(b.slice(left..));
                        stopped = true;
                        break;
                    }
                    left -= b.len();
                }
            }
        }
        debug_assert!(stopped || left == 0);
        if let Some(ws) = &mut self.ws {
            ws.set_owed(owed);
        }
        // Back to the queue's frames: each marker in its slot, no header;
        // own bytes the write never reached wait for the next one.
        if let Some(at) = plan.own.map(usize::from) {
            let own = std::mem::take(&mut sock[at]);
            if !own_reached {
                if let Some(ws) = &mut self.ws {
                    ws.untake_own(own);
                }
            }
        }
        let owed_frames = usize::from(plan.owed);
        if plan.header {
            sock.remove(owed_frames + usize::from(plan.lead));
        }
        debug_assert_eq!(
            sock.len(),
            owed_frames + usize::from(plan.lead) + usize::from(plan.data) + usize::from(plan.tail)
        );
        sock.append(batch);
        std::mem::swap(sock, batch);
        out
    }
}
