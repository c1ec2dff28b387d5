//! The connection driver, read side: the accept loop, and per connection
//! one long-lived read loop, which also writes the replies its own input
//! produced ([`super::writer`] is the write side). Thin: the backend
//! ([`crate::net::io`]) moves the bytes, the transport
//! ([`crate::net::transport`]) turns them into the command stream, and the
//! input path ([`super::input`]) decides what they mean, with the service
//! implementation ([`super::chatd::ChatdInput`],
//! [`super::statusd::StatusdInput`]) the listener names (on the WebSocket
//! listener, the path of the upgrade request).

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

use super::chatd::ChatdInput;
use super::conn;
use super::input;
use super::msg::ConnRef;
use super::statusd::StatusdInput;
use super::writer::{self, Replies};
use super::{dispatch, Phase, Shard, Shut};
use crate::ids::Service;
use crate::limits;
use crate::metrics;
use crate::net::io::{Listener, Stream};
use crate::net::transport::{Ctx, Inbound, Transport};
use chatd_proto::ErrorCode;

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepts {
    /// One service over TCP (TLS with `--tls-cert`).
    Service(Service),
    /// Both services over WebSocket (`wss` with `--tls-cert`), by path.
    WebSocket,
}

impl Accepts {
    /// Name, as in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Accepts::Service(s) => s.name(),
            Accepts::WebSocket => "ws",
        }
    }
}

/// Accepts connections until the shard drains.
pub async fn accept_loop(shard: Rc<Shard>, listener: Listener, accepts: Accepts) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if shard.state.borrow().draining {
                    stream.shutdown();
                    continue;
                }
                stream.set_nodelay();
                // With TLS, each connection takes the pair current now.
                let tls = shard.shared.tls.as_ref().map(|t| t.current().raw.clone());
                let (transport, service) = match accepts {
                    Accepts::Service(service) => (Transport::new(false, tls), service),
                    // chatd until the upgrade names the service.
                    Accepts::WebSocket => (Transport::new(true, tls), Service::Chatd),
                };
                match transport {
                    Ok(t) => {
                        // Registered here, so the read task does not keep
                        // the transport and the service as arguments.
                        let stream = Rc::new(stream);
                        let c = conn::register(&shard, stream.clone(), t, service);
                        tracing::debug!(?c, %peer, listener = accepts.name(), "connected");
                        tokio::task::spawn_local(run_conn(shard.clone(), stream, c));
                    }
                    Err(e) => {
                        tracing::warn!(shard = shard.id, "{}: {e}", accepts.name());
                        stream.shutdown();
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(shard = shard.id, "accept on {}: {e}", accepts.name());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection's life once registered: read until end of stream,
/// unregister.
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
///
/// A plain function returning an `async move` block rather than an `async
/// fn`: the block uses its captures in place, where an `async fn` keeps a
/// second copy of each argument it uses across an await.
#[allow(clippy::manual_async_fn)] // see above: an `async fn` would be larger
fn run_conn(
    shard: Rc<Shard>,
    stream: Rc<Stream>,
    c: ConnRef,
) -> impl std::future::Future<Output = ()> {
    async move {
        let mut want = limits::READ_BUF_INITIAL;
        let mut logged_in = false;
        let mut shut = Shut::No;
        loop {
            // Between reads the buffer waits in the connection's state, not
            // here: a local moved into the read would still take its room in
            // this future, so only the read future holds it while idle.
            let (res, mut buf) = {
                let Some(buf) = conn::take_read_buf(&mut shard.state.borrow_mut(), c, want) else {
                    match Box::pin(not_reading(&shard, c, &stream)).await {
                        NotReading::Resumed => continue,
                        NotReading::Gone => break,
                        NotReading::Shut(how) => {
                            shut = how;
                            break;
                        }
                    }
                };
                stream.read(buf)
            }
            .await;
            match res {
                Ok(n) if n > 0 => want = on_read(&shard, c, &mut buf, n, want),
                Ok(_) if conn::peer_finished(&shard, c) => {
                    // End of stream: the answers still on their way go
                    // out before the close.
                    conn::put_read_buf(&mut shard.state.borrow_mut(), c, buf);
                    dispatch::flush(&shard);
                    continue;
                }
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
            let alive = match writer::take_replies(&shard, c) {
                Replies::None { alive } => alive,
                replies => Box::pin(writer::write_replies(&shard, c, &stream, replies)).await,
            };
            if !alive {
                break;
            }
        }
        if shut != Shut::Write {
            stream.shutdown();
        }
        conn::unregister(&shard, c);
        dispatch::flush(&shard);
        match shut {
            // It stopped reading: what its peer sent meanwhile is read and
            // dropped before the socket is closed.
            Shut::Write => Box::pin(linger(&shard, stream)).await,
            Shut::Both => Box::pin(drop_unread(&stream)).await,
            Shut::No => {}
        }
        tracing::debug!(?c, "closed");
    }
}

/// After [`Shut::Write`] (its output all written, end of stream sent, the
/// connection unregistered): reads and drops what the peer still sends
/// until it closes, or [`limits::LINGER_MS`] passed
/// ([`conn::expire_lingering`] shuts the socket down both ways then).
async fn linger(shard: &Shard, stream: Rc<Stream>) {
    let deadline = shard.shared.now_ms().saturating_add(limits::LINGER_MS);
    let entry = (deadline, stream.clone());
    shard.state.borrow_mut().lingering.push(entry);
    drop_unread(&stream).await;
    stream.shutdown();
    let mut st = shard.state.borrow_mut();
    st.lingering.retain(|(_, s)| !Rc::ptr_eq(s, &stream));
}

/// Reads and drops input until end of stream (or an error): after
/// [`linger`]'s end of stream, or a shutdown both ways (reads return what
/// is queued, then end of stream), so the socket closes with nothing
/// unread, which would reset it.
async fn drop_unread(stream: &Stream) {
    let mut buf = BytesMut::with_capacity(limits::DRAIN_READ_BUF);
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}

/// What a read loop that may not read now does next.
enum NotReading {
    /// It was paused and has resumed: read on.
    Resumed,
    /// It was paused and is gone, or its replies could not be written.
    Gone,
    /// It is closing or its peer finished: the socket was shut down so.
    Shut(Shut),
}

/// The read loop of a connection that may not read now: a paused one
/// waits to resume ([`resume`]); a closing or finished one waits until
/// its socket is shut down (once its queue is flushed, or the flush fails
/// or runs out of time).
async fn not_reading(shard: &Shard, c: ConnRef, stream: &Stream) -> NotReading {
    let paused = {
        let mut st = shard.state.borrow_mut();
        st.conn(c).and_then(|cn| cn.waits_for)
    };
    match paused {
        Some(to) if resume(shard, c, stream, usize::from(to)).await => NotReading::Resumed,
        Some(_) => NotReading::Gone,
        None => NotReading::Shut(conn::wait_shut(shard, c).await),
    }
}

/// A paused connection ([`super::budget`]): waits until shard `to`'s
/// inbox is down to its resume mark, or the connection closes; then
/// handles the input left in its buffer (which may pause it again) and
/// writes the replies. Returns whether it is still alive.
///
/// A paused connection is not read, so the server sees no keepalive from
/// it: one paused for longer than `--idle-timeout-ms` is closed as idle,
/// which bounds how long a shard that far behind holds it.
async fn resume(shard: &Shard, c: ConnRef, stream: &Stream, to: usize) -> bool {
    let budget = shard.shared.mesh.budget();
    let service = loop {
        tokio::select! {
            () = budget.room_in(to) => {}
            () = conn::wait_closing(shard, c) => {}
        }
        let mut st = shard.state.borrow_mut();
        st.paused_waiters.remove(&c);
        let Some(cn) = st.conn(c) else { return false };
        if cn.phase == Phase::Closing {
            // Its read loop waits for the close instead.
            cn.waits_for = None;
            return true;
        }
        if budget.has_room(to) {
            cn.waits_for = None;
            // Its replies are the read task's to write, as after a read.
            cn.out.reader_turn();
            // What it sent while not read comes in at once now: the pause
            // does not count against its rate limit.
            let now = shard.shared.now_ms();
            cn.bucket
                .credit_pause(now.saturating_sub(cn.last_rx_ms), now);
            cn.last_rx_ms = now;
            break cn.service;
        }
    };
    let Some(mut buf) = conn::take_read_buf(&mut shard.state.borrow_mut(), c, 0) else {
        return true;
    };
    on_commands(shard, c, &mut buf, service);
    {
        let mut st = shard.state.borrow_mut();
        // Its input caused a closing error: the echo round closes it, after
        // that error ([`conn::error_after_answers`]).
        let finishing = st.finishing.contains_key(&c);
        match st.conn(c) {
            // The peer ended its transport after these commands.
            Some(cn) if cn.close_after_input && cn.waits_for.is_none() && !finishing => {
                buf.clear();
                conn::close(shard, &mut st, c);
            }
            _ => conn::put_read_buf(&mut st, c, buf),
        }
    }
    dispatch::flush(shard);
    match writer::take_replies(shard, c) {
        Replies::None { alive } => alive,
        replies => writer::write_replies(shard, c, stream, replies).await,
    }
}

/// The connection's phase; `None` once it is gone.
fn phase(shard: &Shard, c: ConnRef) -> Option<Phase> {
    shard.state.borrow_mut().conn(c).map(|conn| conn.phase)
}

/// Hands the command bytes in `buf` to the input path, with the
/// connection's service's implementation.
fn on_commands(shard: &Shard, c: ConnRef, buf: &mut BytesMut, service: Service) {
    match service {
        Service::Chatd => input::on_bytes::<ChatdInput>(shard, c, buf),
        Service::Statusd => input::on_bytes::<StatusdInput>(shard, c, buf),
    }
}

/// Handles `n` bytes just appended to `buf` by a read; returns the read
/// buffer size to aim for next.
fn on_read(shard: &Shard, c: ConnRef, buf: &mut BytesMut, n: usize, want: usize) -> usize {
    // The read filled the buffer: the peer may have more to say.
    let filled = buf.len() == buf.capacity();
    let (inbound, service) = transport_in(shard, c, buf, n);
    metrics::add(&shard.metrics.bytes_in[service.index()], n as u64);
    if matches!(inbound, Inbound::Commands | Inbound::CommandsThenClose) {
        on_commands(shard, c, buf, service);
    }
    if matches!(inbound, Inbound::CommandsThenClose | Inbound::Close) {
        let mut st = shard.state.borrow_mut();
        // Its commands caused a closing error: the echo round closes it,
        // after that error ([`conn::error_after_answers`]).
        let finishing = st.finishing.contains_key(&c);
        match st.conn(c) {
            // Paused before the last commands: closed once they are
            // handled ([`resume`]).
            Some(cn) if inbound == Inbound::CommandsThenClose && cn.waits_for.is_some() => {
                cn.close_after_input = true;
            }
            _ if finishing => buf.clear(),
            _ => {
                buf.clear();
                conn::close(shard, &mut st, c);
            }
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

/// Stamps the read and passes its bytes through the connection's
/// transport: a marker is queued for bytes of the transport's own (placed
/// before the replies to this read's commands), and a WebSocket upgrade
/// switches the connection to the service it named. Returns what to do
/// with the buffer and the connection's service.
fn transport_in(shard: &Shard, c: ConnRef, buf: &mut BytesMut, n: usize) -> (Inbound, Service) {
    let mut st = shard.state.borrow_mut();
    let st = &mut *st;
    let config = &shard.shared.config;
    let ctx = Ctx {
        origins: &config.ws_allowed_origins,
        max_message_len: limits::longest_command(config.max_rtmsg_len),
    };
    let Some(cn) = st.conn(c) else {
        return (Inbound::Commands, Service::Chatd);
    };
    cn.last_rx_ms = shard.shared.now_ms();
    cn.out.reader_turn();
    if cn.transport.is_tcp() {
        return (Inbound::Commands, cn.service);
    }
    let inbound = cn.transport.inbound(buf, n, &ctx);
    let upgrade = cn.transport.take_upgrade();
    let own = cn.transport.wants_write();
    let refuse = cn.transport.take_refusal();
    if let Some(service) = upgrade {
        conn::set_service(shard, st, c, service);
    }
    if own {
        conn::push_marker(shard, st, c);
    }
    if refuse {
        // Accepted over --max-connections; the handshake just finished.
        conn::send_error(shard, st, c, ErrorCode::TooManyConnections, 0, 0);
    }
    let service = st.conn(c).map_or(Service::Chatd, |cn| cn.service);
    (inbound, service)
}

#[cfg(test)]
mod tests {
    /// Size of the future an async fn of three arguments returns, without
    /// calling it.
    fn future_size<A, B, C, F>(_f: impl FnOnce(A, B, C) -> F) -> usize {
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
