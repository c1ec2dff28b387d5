//! Connection tasks: the accept loop, and per connection one long-lived
//! read loop and one writer. Thin: bytes in go to the shard's service
//! handler, frames out come from the connection's [`OutQueue`].
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
async fn run_conn(shard: Rc<Shard>, stream: Rc<Stream>, service: Service) {
    let c = sconn::register(&shard, stream.clone(), service);
    tracing::debug!(?c, service = service.name(), "connected");
    read_loop(&shard, c, &stream, service).await;
    stream.shutdown();
    sconn::unregister(&shard, c);
    tracing::debug!(?c, "closed");
}

/// Reads until end of stream or error. The buffer starts small, so an idle
/// connection pins little memory in its pending read, doubles while reads
/// fill it, and shrinks back when traffic stops.
async fn read_loop(shard: &Shard, c: ConnRef, stream: &Stream, service: Service) {
    let mut buf = BytesMut::with_capacity(limits::READ_BUF_INITIAL);
    let mut want = limits::READ_BUF_INITIAL;
    loop {
        if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
        let spare = buf.capacity() - buf.len();
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        shard.metrics.bytes_in[service.index()].fetch_add(n as u64, Relaxed);
        {
            let mut st = shard.state.borrow_mut();
            if let Some(conn) = sconn::get(&mut st, c) {
                conn.last_rx_ms = shard.shared.now_ms();
            }
        }
        match service {
            Service::Chatd => chatd::on_bytes(shard, c, &mut buf),
            Service::Statusd => statusd::on_bytes(shard, c, &mut buf),
        }
        shard.flush();
        if n == spare {
            want = (want * 2).min(limits::READ_BUF_MAX);
        } else if n < want / 4 && want > limits::READ_BUF_INITIAL {
            want /= 2;
            if buf.is_empty() && buf.capacity() > 2 * want {
                // Give the large buffer back while traffic is light.
                buf = BytesMut::with_capacity(want);
            }
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
        let (res, b) = stream.writev(std::mem::take(&mut batch)).await;
        batch = b;
        let mut st = shard.state.borrow_mut();
        let Some(conn) = sconn::get(&mut st, c) else {
            return;
        };
        match res {
            Ok(n) if n > 0 => {
                let service = conn.service;
                conn.out.written(&mut batch, n);
                shard.metrics.bytes_out[service.index()].fetch_add(n as u64, Relaxed);
            }
            _ => {
                // The peer is gone: stop writing; the read loop ends too.
                batch.clear();
                conn.out.clear();
                stream.shutdown();
                return;
            }
        }
    }
}
