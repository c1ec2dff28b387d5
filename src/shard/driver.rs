//! The connection driver, read side: the accept loop, and per connection
//! one long-lived read loop, which also writes the replies its own input
//! produced ([`super::writer`] is the write side). Thin: the backend
//! ([`crate::net::io`]) moves the bytes, the transport
//! ([`crate::net::transport`]) turns them into the command stream, and the
//! input path ([`super::input`]) decides what they mean, with the service
//! implementation ([`super::chatd::ChatdInput`],
//! [`super::statusd::StatusdInput`]) the listener names.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

use super::chatd::ChatdInput;
use super::conn;
use super::input;
use super::msg::ConnRef;
use super::statusd::StatusdInput;
use super::writer::{self, Replies};
use super::{dispatch, Phase, Shard};
use crate::ids::Service;
use crate::limits;
use crate::metrics;
use crate::net::io::{Listener, Stream};
use crate::net::transport::{Inbound, Transport};

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
                // Where a listener for another transport (WebSocket, TLS)
                // names the connection's transport.
                let conn = run_conn(shard.clone(), Rc::new(stream), Transport::Tcp, service);
                tokio::task::spawn_local(conn);
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
/// ([`writer::write_loop`], started when a frame is queued).
///
/// This task is most of what an idle connection costs, so it is kept
/// small: the read buffer is sized for the login, dropped to
/// [`limits::READ_BUF_IDLE`] once the login is through (the buffer a
/// pending io_uring read pins is what an idle connection holds), doubles
/// while reads fill it and shrinks back when traffic stops; the rest of the
/// work is in [`on_read`], and writing replies, the one large future, is
/// boxed and awaited only when there are replies to write.
async fn run_conn(shard: Rc<Shard>, stream: Rc<Stream>, transport: Transport, service: Service) {
    let c = conn::register(&shard, stream.clone(), transport, service);
    tracing::debug!(?c, service = service.name(), "connected");
    let mut want = limits::READ_BUF_INITIAL;
    let mut logged_in = false;
    loop {
        // Between reads the buffer waits in the connection's state, not
        // here: a local moved into the read would still take its room in
        // this future, so only the read future holds it while idle.
        let (res, mut buf) = {
            let Some(buf) = conn::take_read_buf(&mut shard.state.borrow_mut(), c, want) else {
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
        conn::put_read_buf(&mut shard.state.borrow_mut(), c, buf);
        let alive = match writer::take_replies(&shard, c, &stream) {
            Replies::None { alive } => alive,
            Replies::Batch(batch) => {
                Box::pin(writer::write_replies(&shard, c, &stream, batch)).await
            }
        };
        if !alive {
            break;
        }
    }
    stream.shutdown();
    conn::unregister(&shard, c);
    dispatch::flush(&shard);
    tracing::debug!(?c, "closed");
}

/// The connection's phase; `None` once it is gone.
fn phase(shard: &Shard, c: ConnRef) -> Option<Phase> {
    shard.state.borrow_mut().conn(c).map(|conn| conn.phase)
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
    metrics::add(&shard.metrics.bytes_in[service.index()], n as u64);
    let inbound = {
        let mut st = shard.state.borrow_mut();
        match st.conn(c) {
            Some(conn) => {
                conn.last_rx_ms = shard.shared.now_ms();
                conn.out.reader_turn();
                conn.transport.inbound(buf, n)
            }
            None => Inbound::Commands,
        }
    };
    match inbound {
        Inbound::Commands => match service {
            Service::Chatd => input::on_bytes::<ChatdInput>(shard, c, buf),
            Service::Statusd => input::on_bytes::<StatusdInput>(shard, c, buf),
        },
        Inbound::Close => {
            buf.clear();
            conn::close(shard, &mut shard.state.borrow_mut(), c);
        }
    }
    dispatch::flush(shard);
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

#[cfg(test)]
mod tests {
    /// Size of the future an async fn of four arguments returns, without
    /// calling it.
    fn future_size<A, B, C, D, F>(_f: impl FnOnce(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The read task is most of an idle connection's memory, and tokio
    /// rounds a task up to a multiple of 128 bytes: at 264 bytes its future
    /// makes a 384-byte task (docs/architecture.md, "Connection life";
    /// bench/README.md measures the RSS). A change that grows it past that
    /// must be a deliberate one.
    #[test]
    fn the_idle_read_task_future_stays_at_264_bytes() {
        let size = future_size(super::run_conn);
        assert!(size <= 264, "run_conn's future grew to {size} bytes");
    }
}
