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

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;

use super::msg::ConnRef;
use super::{Phase, Shard, State};
use crate::limits;
use crate::metrics;
use crate::net::io::Stream;
use crate::net::outbuf::Next;

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
    /// A first batch of frames, taken from the connection's queue and
    /// prepared by its transport.
    Batch(Vec<Bytes>),
}

/// Takes the first batch of replies the last input queued (and whatever
/// else arrived meanwhile), or, with none, finishes the turn: a closing
/// connection with everything flushed and no writer task is shut down.
pub fn take_replies(shard: &Shard, c: ConnRef, stream: &Stream) -> Replies {
    let mut batch = shard.take_write_batch();
    let mut st = shard.state.borrow_mut();
    let Some(conn) = st.conn(c) else {
        drop(st);
        shard.give_write_batch(batch);
        return Replies::None { alive: false };
    };
    if conn.out.reader_take(&mut batch, limits::WRITE_IOVECS_MAX) {
        conn.transport.outbound(&mut batch);
        return Replies::Batch(batch);
    }
    if conn.phase == Phase::Closing && conn.out.is_idle() {
        stream.shutdown();
    }
    drop(st);
    shard.give_write_batch(batch);
    Replies::None { alive: true }
}

/// Writes the replies (`batch` first, then whatever [`take_replies`]
/// finds next) from the read task itself, before the next read: a
/// request-response exchange needs no writer task. Returns false when the
/// connection is done (closed, or the socket failed).
pub async fn write_replies(
    shard: &Shard,
    c: ConnRef,
    stream: &Stream,
    mut batch: Vec<Bytes>,
) -> bool {
    loop {
        if !write_batch(shard, c, stream, &mut batch).await {
            shard.give_write_batch(batch);
            return false;
        }
        shard.give_write_batch(batch);
        match take_replies(shard, c, stream) {
            Replies::None { alive } => return alive,
            Replies::Batch(next) => batch = next,
        }
    }
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
                Some(next) => {
                    if next == Next::Write {
                        conn.transport.outbound(&mut batch);
                    }
                    Poll::Ready(Some(next))
                }
                None => Poll::Pending,
            }
        })
        .await;
        match next {
            None | Some(Next::Retire) => return,
            Some(Next::Close) => {
                stream.shutdown();
                return;
            }
            Some(Next::Write) => {}
        }
        if !write_batch(&shard, c, &stream, &mut batch).await {
            return;
        }
    }
}

/// One vectored write of `batch` (taken from `c`'s queue and prepared by
/// its transport); puts back what did not go out. Returns false when the
/// connection is gone or the peer is (then the socket is shut down, which
/// ends the read loop too).
async fn write_batch(shard: &Shard, c: ConnRef, stream: &Stream, batch: &mut Vec<Bytes>) -> bool {
    // Counted when issued, not when done: a peer that has read the bytes
    // then knows the write is counted (the completion reaches this task
    // only after the peer may already have them).
    if let Some(conn) = shard.state.borrow_mut().conn(c) {
        metrics::add(&shard.metrics.socket_writes[conn.service.index()], 1);
    }
    let (res, b) = stream.writev(std::mem::take(batch)).await;
    *batch = b;
    let mut st = shard.state.borrow_mut();
    let Some((conn, chunks)) = st.conn_and_chunks(c) else {
        return false;
    };
    match res {
        Ok(n) if n > 0 => {
            let service = conn.service;
            let commands = conn.transport.written(batch, n);
            conn.out.written(batch, commands, chunks);
            metrics::add(&shard.metrics.bytes_out[service.index()], n as u64);
            true
        }
        _ => {
            batch.clear();
            conn.out.clear(chunks);
            stream.shutdown();
            false
        }
    }
}
