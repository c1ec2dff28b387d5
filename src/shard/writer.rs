//! The write side of the connection driver: a connection's queued frames
//! go out in vectored writes, through its transport
//! ([`crate::net::transport`]).
//!
//! Two tasks write: the connection's read task writes the replies its own
//! input produced before it reads again ([`write_replies`]), so a
//! request-response exchange needs no other task; and a writer task
//! ([`write_loop`]) exists only while other output (deliveries, notices)
//! flows: the first frame queued to a connection without one starts it
//! ([`spawn_writer`]), and it retires after a timer tick with nothing
//! written. Which of them owns the output at a time is the
//! [`OutQueue`](crate::net::outbuf::OutQueue)'s business.
//!
//! A batch goes to the socket as it is over TCP; any other transport
//! turns it into a socket batch first (headers, its own bytes, records:
//! [`crate::net::transport`]), and bytes of its own that a short write cut
//! are finished before anything else is written. When a closing
//! connection's queue is flushed, its transport's last bytes (a WebSocket
//! Close, TLS close_notify) go out before the socket is shut down
//! ([`finish`]).
//!
//! The contract with the output queue, whatever the transport: the queue
//! lends a batch of frames (`Vec<Bytes>`, in order); one write goes out
//! (`write_batch`); the transport's `written` says how many of the
//! batch's bytes that was (`commands`: command-stream bytes, headers and
//! records not counted) and hands every lent frame back in `batch`; then
//! `OutQueue::written(batch, commands, chunks)` drops what went out and
//! keeps the rest, a cut piece included, for the next write. An element
//! of the batch is a segment of the queue, not a command: usually one
//! contiguous chunk holding every small frame queued since the last
//! write, then any large frames shared as they are, and a transport's
//! markers (empty elements) in their places. So a WebSocket write is one
//! header over that whole run of commands, and a TLS write encrypts it
//! as one plaintext.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Buf, Bytes};

use super::msg::ConnRef;
use super::{Phase, Shard, State};
use crate::ids::Service;
use crate::limits;
use crate::metrics;
use crate::net::io::Stream;
use crate::net::outbuf::{FrameLen, Next};
use chatd_proto::Limits;

/// Starts the writer task of `c`, which had none.
pub fn spawn_writer(shard: &Shard, st: &mut State, c: ConnRef) {
    let (Some(me), Some(conn)) = (shard.this.upgrade(), st.conn(c)) else {
        return;
    };
    let stream = conn.stream.clone();
    st.writers.push(c);
    tokio::task::spawn_local(write_loop(me, c, stream));
}

/// What handling the last input left for the read task to write.
pub enum Replies {
    /// Nothing; `alive` is false when the connection is gone.
    None {
        /// The connection is still registered.
        alive: bool,
    },
    /// A first batch of frames, taken from the connection's queue.
    Batch(Vec<Bytes>),
    /// The connection closes and its queue is flushed: the transport's
    /// last bytes go out, then the socket is shut down ([`finish`]).
    Finish,
}

/// Takes the first batch of replies the last input queued (and whatever
/// else arrived meanwhile), or, with none, finishes the turn: a closing
/// connection with everything flushed and no writer task is shut down.
pub fn take_replies(shard: &Shard, c: ConnRef) -> Replies {
    let mut batch = shard.take_write_batch();
    let mut st = shard.state.borrow_mut();
    let Some(conn) = st.conn(c) else {
        drop(st);
        shard.give_write_batch(batch);
        return Replies::None { alive: false };
    };
    if conn.out.reader_take(&mut batch, limits::WRITE_IOVECS_MAX) {
        return Replies::Batch(batch);
    }
    if conn.phase == Phase::Closing && conn.out.is_idle() {
        if !conn.transport.is_tcp() {
            drop(st);
            shard.give_write_batch(batch);
            return Replies::Finish;
        }
        st.flushed(c);
    }
    drop(st);
    shard.give_write_batch(batch);
    Replies::None { alive: true }
}

/// Writes the replies (the batch [`take_replies`] found first, then
/// whatever it finds next) from the read task itself, before the next
/// read: a request-response exchange needs no writer task. Returns false
/// when the connection is done (closed, or the socket failed).
pub async fn write_replies(shard: &Shard, c: ConnRef, stream: &Stream, replies: Replies) -> bool {
    let mut replies = replies;
    loop {
        match replies {
            Replies::None { alive } => return alive,
            Replies::Finish => {
                finish(shard, c, stream).await;
                return true;
            }
            Replies::Batch(mut batch) => {
                let ok = write_batch(shard, c, stream, &mut batch).await;
                shard.give_write_batch(batch);
                if !ok {
                    return false;
                }
            }
        }
        replies = take_replies(shard, c);
    }
}

/// A closing connection whose queue is flushed: writes its transport's
/// last bytes (nothing over TCP), then shuts the socket down, which ends
/// the read loop.
pub async fn finish(shard: &Shard, c: ConnRef, stream: &Stream) {
    let last = {
        let mut st = shard.state.borrow_mut();
        st.conn(c).map(|conn| conn.transport.finish())
    };
    if let Some(last) = last.filter(|b| !b.is_empty()) {
        if !write_all(shard, c, stream, last).await {
            return;
        }
    }
    shard.state.borrow_mut().flushed(c);
}

/// Writes queued frames in vectored batches; on close, flushes and shuts
/// the socket down (which ends the read loop); ends when the connection is
/// gone or its queue stayed empty for a whole timer tick.
pub async fn write_loop(shard: Rc<Shard>, c: ConnRef, stream: Rc<Stream>) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let next = poll_fn(|cx| {
            let mut st = shard.state.borrow_mut();
            let Some(conn) = st.conn(c) else {
                return Poll::Ready(None);
            };
            let closing = conn.phase == Phase::Closing;
            match conn
                .out
                .poll_writer(&mut batch, limits::WRITE_IOVECS_MAX, closing, cx.waker())
            {
                Some(next) => Poll::Ready(Some(next)),
                None => Poll::Pending,
            }
        })
        .await;
        match next {
            None | Some(Next::Retire) => return,
            Some(Next::Close) => {
                finish(&shard, c, &stream).await;
                return;
            }
            Some(Next::Write) => {}
        }
        if !write_batch(&shard, c, &stream, &mut batch).await {
            return;
        }
    }
}

/// One vectored write of `batch` (taken from `c`'s queue), through its
/// transport; puts back what did not go out. Returns false when the
/// connection is gone or the peer is (then the socket is shut down, which
/// ends the read loop too).
async fn write_batch(shard: &Shard, c: ConnRef, stream: &Stream, batch: &mut Vec<Bytes>) -> bool {
    let mut sock = shard.take_write_batch();
    let (out, service) = {
        let mut st = shard.state.borrow_mut();
        let Some(conn) = st.conn(c) else {
            drop(st);
            shard.give_write_batch(sock);
            return false;
        };
        let out = if !conn.transport.outbound(batch, &mut sock) {
            Out::Tcp
        } else {
            match conn.transport.seal(&sock) {
                Ok(None) => Out::Sock,
                Ok(Some(records)) => Out::Sealed(records),
                Err(e) => {
                    tracing::debug!(?c, "{e}");
                    Out::Failed
                }
            }
        };
        (out, conn.service)
    };
    // Whether the write had bytes to write (else writing none is no error).
    let expect = match &out {
        Out::Tcp => true,
        Out::Sock => sock.iter().any(|b| !b.is_empty()),
        Out::Sealed(records) => !records.is_empty(),
        Out::Failed => true,
    };
    // Counted when issued, not when done: a peer that has read the bytes
    // then knows the write is counted (the completion reaches this task
    // only after the peer may already have them).
    if expect && !matches!(out, Out::Failed) {
        metrics::add(&shard.metrics.socket_writes[service.index()], 1);
    }
    // (bytes of the socket batch written, socket bytes written)
    let res = match out {
        Out::Tcp => {
            let (res, b) = stream.writev(std::mem::take(batch)).await;
            *batch = b;
            res.map(|n| (n, n))
        }
        // Only empty elements (a marker and nothing of the transport's).
        Out::Sock if !expect => Ok((0, 0)),
        Out::Sock => {
            let (res, s) = stream.writev(std::mem::take(&mut sock)).await;
            sock = s;
            res.map(|n| (n, n))
        }
        Out::Sealed(records) => {
            let (plain, wire) = (sock.iter().map(Bytes::len).sum(), records.len());
            if write_all(shard, c, stream, records).await {
                Ok((plain, wire))
            } else {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        Out::Failed => Err(std::io::ErrorKind::InvalidData.into()),
    };
    let wrote = match res {
        Ok((n, wire)) if wire > 0 || !expect => Some((n, wire)),
        _ => None,
    };
    let rest = after_write(shard, c, batch, &mut sock, wrote);
    shard.give_write_batch(sock);
    match rest {
        None => false,
        Some(None) => true,
        Some(Some(rest)) => write_all(shard, c, stream, rest).await,
    }
}

/// Accounts for a write of `(n, wire)` (bytes of the socket batch, bytes
/// on the wire; `None`: the socket failed): the queue gets back what did
/// not go out. Returns the transport's own bytes to finish, `None` when
/// the connection is done.
fn after_write(
    shard: &Shard,
    c: ConnRef,
    batch: &mut Vec<Bytes>,
    sock: &mut Vec<Bytes>,
    wrote: Option<(usize, usize)>,
) -> Option<Option<Bytes>> {
    let mut st = shard.state.borrow_mut();
    let (conn, chunks) = st.conn_and_chunks(c)?;
    let Some((n, wire)) = wrote else {
        batch.clear();
        conn.out.clear(chunks);
        st.shut_down(c);
        return None;
    };
    let service = conn.service;
    let written = conn.transport.written(sock, n, batch);
    conn.out.written(batch, written.commands, chunks);
    // A slow consumer closed during the write: its cut, now that the
    // write's rest is known.
    conn.out.cut_after_write(conn.transport.owed(), chunks);
    if wire > 0 {
        metrics::add(&shard.metrics.bytes_out[service.index()], wire as u64);
    }
    Some(written.rest)
}

/// The length of the command at the start of `bytes` as `service` sends
/// them, for a slow consumer's cut
/// ([`OutQueue::cut`](crate::net::outbuf::OutQueue::cut)).
pub fn command_len(service: Service) -> FrameLen {
    fn chatd(bytes: &[u8]) -> Option<usize> {
        let (_, used) = chatd_proto::chatd::decode_event(bytes, &Limits::ANY).ok()??;
        Some(used)
    }
    fn statusd(bytes: &[u8]) -> Option<usize> {
        let (_, used) = chatd_proto::statusd::decode_event(bytes).ok()??;
        Some(used)
    }
    match service {
        Service::Chatd => chatd,
        Service::Statusd => statusd,
    }
}

/// What goes to the socket for one batch.
enum Out {
    /// TCP: the batch itself.
    Tcp,
    /// The socket batch the transport made.
    Sock,
    /// TLS records of the socket batch, written whole.
    Sealed(Bytes),
    /// The transport cannot send (a TLS failure): the connection ends.
    Failed,
}

/// Writes all of `bytes` (bytes the transport made, which must go out
/// whole), in as many writes as the socket needs. False when the socket
/// failed.
async fn write_all(shard: &Shard, c: ConnRef, stream: &Stream, mut bytes: Bytes) -> bool {
    let mut one = shard.take_write_batch();
    while !bytes.is_empty() {
        one.push(bytes);
        let (res, b) = stream.writev(one).await;
        one = b;
        bytes = one.pop().unwrap_or_default();
        match res {
            Ok(n) if n > 0 => bytes.advance(n.min(bytes.len())),
            _ => {
                shard.give_write_batch(one);
                shard.state.borrow_mut().shut_down(c);
                return false;
            }
        }
    }
    shard.give_write_batch(one);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::chatd::{self as cw, Event};
    use chatd_proto::statusd as sw;

    #[test]
    fn command_lengths_are_each_services_own() {
        let mut chatd = Vec::new();
        let data = [1u8; 300];
        cw::encode_event(
            &Event::RtMsg {
                chatid: 7,
                sender_userid: 1,
                sender_clientid: 2,
                msgtype: 3,
                data: &data,
            },
            &mut chatd,
        );
        let one = chatd.len();
        cw::encode_join(7, &mut chatd);
        assert_eq!(command_len(Service::Chatd)(&chatd), Some(one));
        assert_eq!(command_len(Service::Chatd)(&chatd[one..]), Some(9));
        assert_eq!(command_len(Service::Chatd)(&chatd[..one - 1]), None);
        let mut statusd = Vec::new();
        sw::encode_pres(5, 1, &mut statusd);
        assert_eq!(command_len(Service::Statusd)(&statusd), Some(10));
        // OP_RTMSG's opcode means nothing to statusd.
        assert_eq!(command_len(Service::Statusd)(&chatd), None);
    }
}
