//! Connection tasks: the accept loop; per connection one long-lived read
//! loop, which also writes the replies its own input produced; and a
//! writer task only while other output (deliveries, notices) flows. Thin:
//! bytes in go to the shard's service handler, frames out come from the
//! connection's [`OutQueue`].
//!
//! [`OutQueue`]: super::outbuf::OutQueue

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::io::{Listener, Stream};
use super::outbuf::Next;
use crate::ids::Service;
use crate::limits;
use crate::shard::conn::{self as sconn, Phase};
use crate::shard::msg::ConnRef;
use crate::shard::{chatd, statusd, Shard};

/// Accepts connections for one service until the shard drains.
pub async fn accept_loop(shard: Rc<Shard>, listener: Listener, service: Service) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                if shard.state.borrow().draining {
                    stream.shutdown();
                    continue;
                }
                stream.set_nodelay();
                tokio::task::spawn_local(run_conn(shard.clone(), Rc::new(stream), service));
            }
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(shard = shard.id, "accept on {}: {e}", service.name());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection's life: register, read until end of stream, unregister.
/// Its writer runs as a task of its own only while it has output
/// ([`write_loop`], started by the shard when a frame is queued).
///
/// This task is most of what an idle connection costs, so it is kept
/// small: the read buffer is sized for the login, dropped to
/// [`limits::READ_BUF_IDLE`] once the login is through (the buffer a
/// pending io_uring read pins is what an idle connection holds), doubles
/// while reads fill it and shrinks back when traffic stops; the rest of the
/// work is in [`on_read`], and writing replies, the one large future, is
/// boxed and awaited only when there are replies to write.
async fn run_conn(shard: Rc<Shard>, stream: Rc<Stream>, service: Service) {
    let c = sconn::register(&shard, stream.clone(), service);
    tracing::debug!(?c, service = service.name(), "connected");
    let mut want = limits::READ_BUF_INITIAL;
    let mut logged_in = false;
    loop {
        // Between reads the buffer waits in the connection's state, not
        // here: a local moved into the read would still take its room in
        // this future, so only the read future holds it while idle.
        let (res, mut buf) = {
            let Some(buf) = sconn::take_read_buf(&mut shard.state.borrow_mut(), c, want) else {
                break;
            };
            stream.read(buf)
        }
        .await;
        match res {
            Ok(n) if n > 0 => want = on_read(&shard, c, service, &mut buf, n, want),
            _ => break,
        }
        if !logged_in && phase(&shard, c) == Some(Phase::Ready) {
            logged_in = true;
            want = limits::READ_BUF_IDLE;
            if buf.is_empty() {
                buf = BytesMut::new();
            }
        }
        sconn::put_read_buf(&mut shard.state.borrow_mut(), c, buf);
        let alive = match take_replies(&shard, c, &stream) {
            Replies::None { alive } => alive,
            Replies::Batch(batch) => Box::pin(write_replies(&shard, c, &stream, batch)).await,
        };
        if !alive {
            break;
        }
    }
    stream.shutdown();
    sconn::unregister(&shard, c);
    tracing::debug!(?c, "closed");
}

/// The connection's phase; `None` once it is gone.
fn phase(shard: &Shard, c: ConnRef) -> Option<Phase> {
    sconn::get(&mut shard.state.borrow_mut(), c).map(|conn| conn.phase)
}

/// Handles `n` bytes just appended to `buf` by a read; returns the read
/// buffer size to aim for next.
fn on_read(
    shard: &Shard,
    c: ConnRef,
    service: Service,
    buf: &mut BytesMut,
    n: usize,
    want: usize,
) -> usize {
    // The read filled the buffer: the peer may have more to say.
    let filled = buf.len() == buf.capacity();
    shard.metrics.bytes_in[service.index()].fetch_add(n as u64, Relaxed);
    {
        let mut st = shard.state.borrow_mut();
        if let Some(conn) = sconn::get(&mut st, c) {
            conn.last_rx_ms = shard.shared.now_ms();
            conn.out.reader_turn();
        }
    }
    match service {
        Service::Chatd => chatd::on_bytes(shard, c, buf),
        Service::Statusd => statusd::on_bytes(shard, c, buf),
    }
    shard.flush();
    if filled {
        (want * 2).min(limits::READ_BUF_MAX)
    } else if n < want / 4 && want > limits::READ_BUF_IDLE {
        let want = want / 2;
        if buf.is_empty() && buf.capacity() > 2 * want {
            // Give the large buffer back while traffic is light; the next
            // read allocates `want`.
            *buf = BytesMut::new();
        }
        want
    } else {
        want
    }
}

/// What handling the last input left for the read task to write.
enum Replies {
    /// Nothing; `alive` is false when the connection is gone.
    None { alive: bool },
    /// A first batch of frames, taken from the connection's queue.
    Batch(Vec<Bytes>),
}

/// Takes the first batch of replies the last input queued (and whatever
/// else arrived meanwhile), or, with none, finishes the turn: a closing
/// connection with everything flushed and no writer task is shut down.
fn take_replies(shard: &Shard, c: ConnRef, stream: &Stream) -> Replies {
    let mut batch = shard.take_write_batch();
    let mut st = shard.state.borrow_mut();
    let Some(conn) = sconn::get(&mut st, c) else {
        drop(st);
        shard.give_write_batch(batch);
        return Replies::None { alive: false };
    };
    if conn.out.reader_take(&mut batch, limits::WRITE_IOVECS_MAX) {
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
async fn write_replies(shard: &Shard, c: ConnRef, stream: &Stream, mut batch: Vec<Bytes>) -> bool {
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
            let Some(conn) = sconn::get(&mut st, c) else {
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

/// One vectored write of `batch` (taken from `c`'s queue); puts back what
/// did not go out. Returns false when the connection is gone or the peer
/// is (then the socket is shut down, which ends the read loop too).
async fn write_batch(shard: &Shard, c: ConnRef, stream: &Stream, batch: &mut Vec<Bytes>) -> bool {
    let (res, b) = stream.writev(std::mem::take(batch)).await;
    *batch = b;
    let mut st = shard.state.borrow_mut();
    let Some(conn) = sconn::get(&mut st, c) else {
        return false;
    };
    match res {
        Ok(n) if n > 0 => {
            let service = conn.service;
            conn.out.written(batch, n);
            shard.metrics.bytes_out[service.index()].fetch_add(n as u64, Relaxed);
            shard.metrics.socket_writes[service.index()].fetch_add(1, Relaxed);
            true
        }
        _ => {
            batch.clear();
            conn.out.clear();
            stream.shutdown();
            false
        }
    }
}
