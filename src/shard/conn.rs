//! The connections a shard accepted: registering and unregistering them,
//! queueing frames on them (and delivering one frame to many:
//! [`Shard::deliver`]), timeouts, notices from home shards, closing and
//! draining. Their state is [`Conn`]; the bytes they send go through
//! [`super::input`], the bytes they are sent through [`super::writer`].
//!
//! A connection is closed in one way only: mark it `Closing` (after
//! queueing any final OP_ERROR), wake whoever owns its output (its writer
//! task, or its read task when the close came from its own input), which
//! flushes and shuts the socket down; that completes the pending read, and
//! the read loop's end unregisters it. A close deadline on the timer wheel
//! shuts down a peer that stopped reading.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use chatd_proto::chatd::{self as cw, IN_CALL_LEN, JOIN_LEN};
use chatd_proto::ErrorCode;

use super::msg::{ConnRef, Notice, ShardMsg};
use super::{route, writer, Conn, Finishing, Phase, Shard, Shut, State};
use crate::core::ratelimit::TokenBucket;
use crate::ids::{ChatId, Service};
use crate::limits;
use crate::net::io::Stream;
use crate::net::outbuf::{Flush, OutQueue, PushError, Wake};
use crate::net::transport::{CloseWhy, Transport};

/// The read buffer of `c` for its next read, with at least `want / 2`
/// bytes free (allocating `want` more when not); `None` once `c` is gone
/// or must not be read now: it is paused until another shard's inbox has
/// room ([`Conn::waits_for`]), or it must not be read any more: it is
/// closing (its input would be dropped, and a peer that floods a
/// connection closed as a slow consumer meets its own socket's
/// back-pressure instead), or its peer ended its stream
/// ([`peer_finished`]), and its read loop waits in [`wait_shut`].
pub fn take_read_buf(st: &mut State, c: ConnRef, want: usize) -> Option<BytesMut> {
    let finishing = st.finishing.contains_key(&c);
    let conn = st.conn(c)?;
    if conn.phase == Phase::Closing || finishing || conn.waits_for.is_some() {
        return None;
    }
    let mut buf = std::mem::take(&mut conn.read_buf);
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
    Some(buf)
}

/// Resolves once `c` is closing or gone: what a paused connection's read
/// loop waits for beside room in the inbox it waits for ([`close`] wakes
/// it).
pub async fn wait_closing(shard: &Shard, c: ConnRef) {
    std::future::poll_fn(|cx| {
        let mut st = shard.state.borrow_mut();
        match st.conn(c) {
            Some(conn) if conn.phase != Phase::Closing => {
                st.paused_waiters.insert(c, cx.waker().clone());
                std::task::Poll::Pending
            }
            _ => std::task::Poll::Ready(()),
        }
    })
    .await
}

/// Puts `c`'s read buffer back after its bytes were handled.
pub fn put_read_buf(st: &mut State, c: ConnRef, buf: BytesMut) {
    if let Some(conn) = st.conn(c) {
        conn.read_buf = buf;
    }
}

/// Resolves once `c`'s socket is shut down ([`State::flushed`],
/// [`State::shut_down`]) or `c` is gone: what the read loop of a
/// connection that no longer reads waits for. Returns how: after
/// [`Shut::Write`] the caller lingers.
pub async fn wait_shut(shard: &Shard, c: ConnRef) -> Shut {
    std::future::poll_fn(|cx| {
        let mut st = shard.state.borrow_mut();
        match st.conn(c) {
            Some(conn) if conn.shut == Shut::No => {
                st.shut_waiters.insert(c, cx.waker().clone());
                std::task::Poll::Pending
            }
            Some(conn) => std::task::Poll::Ready(conn.shut),
            None => std::task::Poll::Ready(Shut::Both),
        }
    })
    .await
}

/// Ends the linger of sockets whose deadline passed ([`State::lingering`]):
/// shut down both ways, so their pending read completes. Walks only
/// lingering sockets.
pub fn expire_lingering(shard: &Shard, now: u64) {
    shard
        .state
        .borrow_mut()
        .lingering
        .retain(|(deadline, stream)| {
            let due = *deadline <= now;
            if due {
                stream.shutdown();
            }
            !due
        });
}

/// The peer of `c` ended its stream (a read returned 0): it has nothing
/// more to say, but may still wait for the answers to what it said (a
/// half-close, `shutdown(SHUT_WR)`), some of them in flight between
/// shards. Every shard is sent an echo, which it answers after whatever it
/// handled before (one FIFO channel each way; a user's home answers after
/// a login dump in progress for `c`); once all echoes are back `c` closes
/// like any other connection, flushing its queue
/// ([`echoed`]). Returns false when there is nothing to wait for: `c` is
/// gone or closing, or had not authenticated (nothing of it reached
/// another shard). The caller flushes ([`super::dispatch::flush`]).
pub fn peer_finished(shard: &Shard, c: ConnRef) -> bool {
    let mut st = shard.state.borrow_mut();
    if st.finishing.contains_key(&c) {
        return true;
    }
    let Some(conn) = st.conn(c) else {
        return false;
    };
    if matches!(conn.phase, Phase::Closing | Phase::Auth) {
        return false;
    }
    start_finishing(shard, &mut st, c, None);
    true
}

/// A closing error that `c`'s input caused (a malformed command, a second
/// login): sent once the answers to its earlier commands are, some of them
/// in flight between shards (an OP_JOIN's, a login dump), because nothing
/// may follow a closing error and those answers are owed (issue found by
/// a conformance probe: a JOIN and a bad command in one write got only the
/// error). Meanwhile `c` reads nothing more, like a connection whose peer
/// finished ([`peer_finished`]). Before login nothing of `c` is elsewhere:
/// the error goes at once.
pub fn error_after_answers(
    shard: &Shard,
    st: &mut State,
    c: ConnRef,
    code: ErrorCode,
    opcode: u8,
    id: u64,
) {
    debug_assert!(
        code.closes_connection(),
        "{code:?} leaves the connection open"
    );
    let ready = st.conn(c).is_some_and(|conn| conn.phase == Phase::Ready);
    if !ready || st.finishing.contains_key(&c) {
        return send_error(shard, st, c, code, opcode, id);
    }
    start_finishing(shard, st, c, Some((code, opcode, id)));
}

/// Stops reading `c` and sends every shard an echo (see
/// [`peer_finished`]); `error` goes out when the last one is back.
fn start_finishing(shard: &Shard, st: &mut State, c: ConnRef, error: Option<(ErrorCode, u8, u64)>) {
    let shards = shard.shards();
    st.finishing.insert(
        c,
        Finishing {
            echoes_left: shards,
            error,
        },
    );
    for to in 0..shards {
        shard.send(to, ShardMsg::Echo { conn: c });
    }
}

/// One shard's echo for `c` is back (see [`peer_finished`]); with the last
/// one, `c` closes (with its error, if its input caused one).
pub fn echoed(shard: &Shard, c: ConnRef) {
    let mut st = shard.state.borrow_mut();
    let Some(f) = st.finishing.get_mut(&c) else {
        return;
    };
    f.echoes_left -= 1;
    if f.echoes_left > 0 {
        return;
    }
    let error = f.error;
    st.finishing.remove(&c);
    // Closed meanwhile (a timeout, a drain, a slow consumer's cut): its
    // error can no longer be sent, nor counted.
    let open = st.conn(c).is_some_and(|conn| conn.phase != Phase::Closing);
    match error {
        Some((code, opcode, id)) if open => send_error(shard, &mut st, c, code, opcode, id),
        _ => close(shard, &mut st, c),
    }
}

/// Adds a freshly accepted connection with its login deadline (which
/// covers its transport's handshake, if it has one).
pub fn register(
    shard: &Shard,
    stream: Rc<Stream>,
    transport: Transport,
    service: Service,
) -> ConnRef {
    let now = shard.shared.now_ms();
    let rate = match service {
        Service::Chatd => shard.shared.config.rtmsg_rate,
        Service::Statusd => shard.shared.config.setpres_rate,
    };
    let mut st = shard.state.borrow_mut();
    let inserted = st.conns.insert(Conn {
        service,
        stream,
        transport,
        phase: Phase::Auth,
        user: 0,
        client: 0,
        out: OutQueue::default(),
        read_buf: BytesMut::new(),
        last_rx_ms: now,
        login_deadline_ms: now.saturating_add(shard.shared.config.login_timeout_ms),
        timer: None,
        joined: Vec::new(),
        at_home: false,
        shut: Shut::No,
        bucket: TokenBucket::new(rate, rate.saturating_mul(limits::RATE_BURST_SECS), now),
        waits_for: None,
        close_after_input: false,
    });
    let Some((slot, gen)) = inserted else {
        // The shard holds all the connections a reference can name: this
        // one gets a reference to the one slot never used, so its read loop
        // finds it gone and closes it at once.
        tracing::warn!(
            shard = shard.id,
            "{} connections on one shard: closing a new one",
            limits::CONN_SLOTS_MAX - 1
        );
        return ConnRef::new(shard.id, limits::CONN_SLOTS_MAX - 1, 0);
    };
    let c = ConnRef::new(shard.id, slot, gen);
    // The idle timeout applies before login too (protocol section 3).
    let config = &shard.shared.config;
    let first = now.saturating_add(config.login_timeout_ms.min(config.idle_timeout_ms));
    let key = st.timers.insert(first, c);
    if let Some(conn) = st.conn(c) {
        conn.timer = Some(key);
    }
    shard.metrics.connections[service.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let open = shard
        .shared
        .open_conns
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if open > shard.shared.max_conns {
        let tcp = st.conn(c).is_none_or(|conn| conn.transport.is_tcp());
        if tcp {
            send_error(shard, &mut st, c, ErrorCode::TooManyConnections, 0, 0);
        } else if let Some(conn) = st.conn(c) {
            // The OP_ERROR can go out only once the handshake is done
            // (within the login timeout): the driver sends it then.
            conn.transport.refuse_when_open();
        }
    }
    c
}

/// A WebSocket connection's upgrade named `service`: it serves that one
/// from now on (it was counted as chatd until then).
pub fn set_service(shard: &Shard, st: &mut State, c: ConnRef, service: Service) {
    let Some(conn) = st.conn(c) else { return };
    if conn.service == service {
        return;
    }
    use std::sync::atomic::Ordering::Relaxed;
    shard.metrics.connections[conn.service.index()].fetch_sub(1, Relaxed);
    shard.metrics.connections[service.index()].fetch_add(1, Relaxed);
    conn.service = service;
    let rate = match service {
        Service::Chatd => shard.shared.config.rtmsg_rate,
        Service::Statusd => shard.shared.config.setpres_rate,
    };
    conn.bucket = TokenBucket::new(
        rate,
        rate.saturating_mul(limits::RATE_BURST_SECS),
        conn.last_rx_ms,
    );
}

/// Queues a marker on `c`: its transport has bytes of its own to write
/// there, after what is queued already (see [`crate::net::transport`]).
pub fn push_marker(shard: &Shard, st: &mut State, c: ConnRef) {
    queue_frame(shard, st, c, &Bytes::new(), Flush::Now);
}

/// Removes a connection whose read loop ended, and tells the home shards
/// of its rooms and user (the caller flushes: [`super::dispatch::flush`]).
pub fn unregister(shard: &Shard, c: ConnRef) {
    let conn = {
        let mut st = shard.state.borrow_mut();
        let Some(mut conn) = st.conns.remove(c.slot(), c.gen()) else {
            return;
        };
        if let Some(key) = conn.timer.take() {
            st.timers.cancel(key);
        }
        st.finishing.remove(&c);
        st.shut_waiters.remove(&c);
        st.paused_waiters.remove(&c);
        conn.out.clear(&mut st.out_chunks);
        // A parked writer wakes, finds the connection gone and ends.
        let _ = conn.out.wake_writer();
        conn
    };
    shard.metrics.connections[conn.service.index()]
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    shard
        .shared
        .open_conns
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if conn.at_home {
        shard.shared.user_conns.release(conn.user, conn.service);
    }
    if conn.client != 0 {
        shard.shared.client_ids.release(conn.client);
    }
    let home = route::user_home(conn.user, shard.shards());
    match conn.service {
        Service::Chatd => send_conn_gone(shard, c, &conn.joined),
        Service::Statusd => {
            if conn.at_home {
                shard.send(
                    home,
                    ShardMsg::PresGone {
                        user: conn.user,
                        conn: c,
                    },
                );
            }
        }
    }
}

/// Tells each room home shard that `c` is gone from the `chats` it homes.
fn send_conn_gone(shard: &Shard, c: ConnRef, chats: &[ChatId]) {
    let shards = shard.shards();
    let mut by_shard: Vec<Vec<ChatId>> = vec![Vec::new(); shards];
    for &chat in chats {
        by_shard[route::room_home(chat, shards)].push(chat);
    }
    for (to, chats) in by_shard.into_iter().enumerate() {
        if !chats.is_empty() {
            shard.send(to, ShardMsg::ConnGone { conn: c, chats });
        }
    }
}

impl Shard {
    /// Queues `frame` on every listed connection, wherever it lives, to be
    /// written as `flush` says: one reference-counted buffer for all, one
    /// mesh message per other shard.
    pub fn deliver(&self, frame: &Bytes, conns: &[ConnRef], flush: Flush) {
        let me = self.id;
        if self.shards() == 1 || conns.iter().all(|c| c.shard() == me) {
            return self.deliver_local(frame, conns, flush);
        }
        // Count first, so each other shard's list is taken once at its exact
        // size (from this shard's pool: the receiver gives it back); local
        // ones are served without a list.
        let mut counts = self.scratch_counts.borrow_mut();
        counts.clear();
        counts.resize(self.shards(), 0);
        for c in conns {
            counts[c.shard()] += 1;
        }
        let mut groups = self.scratch_groups.borrow_mut();
        for (shard, &n) in counts.iter().enumerate() {
            if n > 0 && shard != me {
                groups.push((shard, self.shared.list_pools[me].take(n)));
            }
        }
        drop(counts);
        {
            let cap = self.shared.config.outbuf_cap();
            let mut st = self.state.borrow_mut();
            for &c in conns {
                let shard = c.shard();
                if shard == me {
                    queue_frame_capped(self, &mut st, c, frame, flush, cap);
                } else if let Some((_, g)) = groups.iter_mut().find(|(s, _)| *s == shard) {
                    g.push(c);
                }
            }
        }
        for (shard, conns) in groups.drain(..) {
            let frame = frame.clone();
            let from = me as u16;
            let msg = ShardMsg::Deliver {
                frame,
                conns,
                from,
                flush,
            };
            self.send(shard, msg);
        }
    }

    /// Queues `frame` on connections of this shard.
    pub fn deliver_local(&self, frame: &Bytes, conns: &[ConnRef], flush: Flush) {
        let cap = self.shared.config.outbuf_cap();
        let mut st = self.state.borrow_mut();
        for &c in conns {
            queue_frame_capped(self, &mut st, c, frame, flush, cap);
        }
    }
}

/// Queues `frame` on `c` if it is on this shard and open, to be written
/// at once.
pub fn push_frame(shard: &Shard, st: &mut State, c: ConnRef, frame: Bytes) {
    queue_frame(shard, st, c, &frame, Flush::Now);
}

/// Queues `frame` on `c` if it is on this shard and open, to be written
/// as `flush` says (copied into the connection's output chunk, or shared
/// if large: [`OutQueue::push`]). A queue over `--max-outbuf-bytes` makes
/// it a slow consumer: closed, what it had queued and not begun to write
/// dropped, and OP_ERROR SLOW_CONSUMER its last command
/// ([`OutQueue::cut`]).
pub fn queue_frame(shard: &Shard, st: &mut State, c: ConnRef, frame: &Bytes, flush: Flush) {
    queue_frame_capped(shard, st, c, frame, flush, shard.shared.config.outbuf_cap());
}

/// [`queue_frame`] with the cap read once by the caller: inlined into
/// fan-out's loop, where it runs once per delivery, with everything but
/// "queued, nothing to wake" out of line.
#[inline(always)]
fn queue_frame_capped(
    shard: &Shard,
    st: &mut State,
    c: ConnRef,
    frame: &Bytes,
    flush: Flush,
    cap: usize,
) {
    let Some((conn, chunks)) = st.conn_and_chunks(c) else {
        return;
    };
    if conn.phase == Phase::Closing {
        return;
    }
    match conn.out.push(frame, cap, flush, chunks) {
        Ok(Wake::Done) => {}
        pushed => after_push(shard, st, c, pushed),
    }
}

/// What a push other than a plain "queued" asks: start the writer, join
/// the batch list, or close a slow consumer.
#[inline(never)]
fn after_push(shard: &Shard, st: &mut State, c: ConnRef, pushed: Result<Wake, PushError>) {
    match pushed {
        Ok(Wake::Done) => return,
        Ok(Wake::Spawn) => return writer::spawn_writer(shard, st, c),
        Ok(Wake::Batch) => {
            if st.batched.is_empty() {
                shard.batch_due.notify_one();
            }
            st.batched.push(c);
            return;
        }
        Err(PushError::Full) => {}
    }
    {
        shard
            .metrics
            .slow_consumer_closes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let err = st.arena.frame(chatd_proto::ERROR_LEN, |b| {
            chatd_proto::encode_error(ErrorCode::SlowConsumer, 0, 0, b)
        });
        if let Some((conn, chunks)) = st.conn_and_chunks(c) {
            // Its last command is this error, right after the rest of the
            // frame being written: what was queued behind that is dropped,
            // so even a reader that trickles gets it before the close
            // deadline.
            let keep = conn.transport.owed();
            let len = writer::command_len(conn.service);
            let wake = conn.out.cut(&err, keep, len, chunks);
            shard.metrics.error(ErrorCode::SlowConsumer as u8);
            conn.transport.close_with(CloseWhy::Error);
            if wake == Wake::Spawn {
                writer::spawn_writer(shard, st, c);
            }
        }
        close(shard, st, c);
    }
}

/// The batch flush: wakes (or starts) the writer of every connection
/// that has batched frames waiting, and empties the list. Walks only those
/// connections.
pub fn flush_batched(shard: &Shard) {
    let mut st = shard.state.borrow_mut();
    let st = &mut *st;
    let mut list = std::mem::take(&mut st.batched);
    for &c in &list {
        let Some(conn) = st.conn(c) else { continue };
        if conn.out.flush_batched() == Wake::Spawn {
            writer::spawn_writer(shard, st, c);
        }
    }
    // Keep the list's storage for the next batch.
    list.clear();
    if st.batched.is_empty() {
        st.batched = list;
    }
}

/// Once per timer tick: retires the writers of connections that wrote
/// nothing during the last tick. Walks only connections with a writer.
pub fn tick_writers(shard: &Shard) {
    let mut st = shard.state.borrow_mut();
    let st = &mut *st;
    let mut writers = std::mem::take(&mut st.writers);
    writers.retain(|&c| st.conn(c).is_some_and(|conn| conn.out.tick()));
    writers.append(&mut st.writers);
    st.writers = writers;
}

/// Sends OP_ERROR to `c` (on this shard); closes it if the code says so.
pub fn send_error(shard: &Shard, st: &mut State, c: ConnRef, code: ErrorCode, opcode: u8, id: u64) {
    let frame = st.arena.frame(chatd_proto::ERROR_LEN, |b| {
        chatd_proto::encode_error(code, opcode, id, b)
    });
    shard.metrics.error(code as u8);
    push_frame(shard, st, c, frame);
    if code.closes_connection() {
        if let Some(conn) = st.conn(c) {
            conn.transport.close_with(match code {
                ErrorCode::ShuttingDown => CloseWhy::ShuttingDown,
                _ => CloseWhy::Error,
            });
        }
        close(shard, st, c);
    }
}

/// Starts closing `c`: nothing more is queued or read; the writer flushes
/// and shuts the socket down, or the close deadline does.
pub fn close(shard: &Shard, st: &mut State, c: ConnRef) {
    let now = shard.shared.now_ms();
    let Some(conn) = st.conn(c) else { return };
    if conn.phase == Phase::Closing {
        return;
    }
    conn.phase = Phase::Closing;
    if let Some(paused) = st.paused_waiters.remove(&c) {
        paused.wake();
    }
    let Some(conn) = st.conn(c) else { return };
    let wake = conn.out.wake_writer();
    let old = conn.timer.take();
    if wake == Wake::Spawn {
        writer::spawn_writer(shard, st, c);
    }
    if let Some(key) = old {
        st.timers.cancel(key);
    }
    let key = st.timers.insert(now + limits::CLOSE_FLUSH_MS, c);
    if let Some(conn) = st.conn(c) {
        conn.timer = Some(key);
    }
}

/// Applies something a home shard told a connection of this shard.
pub fn apply_notice(shard: &Shard, c: ConnRef, notice: Notice) {
    if let Notice::Batch(notices) = notice {
        for n in notices {
            apply_notice(shard, c, n);
        }
        return;
    }
    let mut st = shard.state.borrow_mut();
    let st = &mut *st;
    match notice {
        Notice::Joined { chat, in_call } => {
            let Some(conn) = st.conn(c) else {
                // It closed while the join was on its way: the room must
                // forget it again.
                send_conn_gone(shard, c, &[chat]);
                return;
            };
            if !conn.joined.contains(&chat) {
                conn.joined.push(chat);
            }
            let frame = st.arena.frame(JOIN_LEN + IN_CALL_LEN, |b| {
                cw::encode_join(chat, b);
                cw::encode_in_call(chat, in_call, b);
            });
            shard.metrics.command_out(Service::Chatd, cw::OP_JOIN, 1);
            shard.metrics.command_out(Service::Chatd, cw::OP_IN_CALL, 1);
            push_frame(shard, st, c, frame);
        }
        Notice::Left { chat } => {
            let Some(conn) = st.conn(c) else { return };
            conn.joined.retain(|&j| j != chat);
            let frame = st.arena.frame(JOIN_LEN, |b| cw::encode_leave(chat, b));
            shard.metrics.command_out(Service::Chatd, cw::OP_LEAVE, 1);
            push_frame(shard, st, c, frame);
        }
        Notice::Error { code, opcode, id } => {
            if code == ErrorCode::NotMember && opcode == cw::OP_JOIN {
                // A refused join no longer counts against the room limit.
                if let Some(conn) = st.conn(c) {
                    conn.joined.retain(|&j| j != id);
                }
            }
            send_error(shard, st, c, code, opcode, id)
        }
        Notice::Batch(_) => unreachable!("taken apart above"),
    }
}

/// Tells one connection something, wherever it lives: directly when it is
/// on this shard (in order with frames delivered directly), else on the
/// mesh (in order with frames delivered on the mesh).
pub fn notify(shard: &Shard, c: ConnRef, notice: Notice) {
    if c.shard() == shard.id {
        apply_notice(shard, c, notice);
    } else {
        shard.send(c.shard(), ShardMsg::Notice { conn: c, notice });
    }
}

/// Fires due login, idle and close deadlines.
pub fn poll_timers(shard: &Shard, now: u64, fired: &mut Vec<ConnRef>) {
    let mut st = shard.state.borrow_mut();
    let st = &mut *st;
    fired.clear();
    st.timers.poll_expired(now, fired);
    let idle = shard.shared.config.idle_timeout_ms;
    for &c in fired.iter() {
        let Some(conn) = st.conn(c) else { continue };
        conn.timer = None;
        // Login or idle timeout: closed without an error command. Reads
        // only stamp `last_rx_ms`, so an entry that fired early is re-armed.
        let due = match conn.phase {
            Phase::Auth | Phase::Hello => conn
                .login_deadline_ms
                .min(conn.last_rx_ms.saturating_add(idle)),
            Phase::Ready => conn.last_rx_ms.saturating_add(idle),
            // The peer did not take its last bytes in time.
            Phase::Closing => {
                st.shut_down(c);
                continue;
            }
        };
        if due <= now {
            tracing::debug!(?c, phase = ?conn.phase, "login or idle timeout");
            close(shard, st, c);
        } else {
            let key = st.timers.insert(due, c);
            if let Some(conn) = st.conn(c) {
                conn.timer = Some(key);
            }
        }
    }
}

/// Moves a connection from login to ready: its timer becomes the idle one.
pub fn logged_in(shard: &Shard, st: &mut State, c: ConnRef) {
    let idle = shard.shared.config.idle_timeout_ms;
    let Some(conn) = st.conn(c) else { return };
    conn.phase = Phase::Ready;
    let due = conn.last_rx_ms.saturating_add(idle);
    let old = conn.timer.take();
    let service = conn.service;
    if let Some(key) = old {
        st.timers.cancel(key);
    }
    let key = st.timers.insert(due, c);
    if let Some(conn) = st.conn(c) {
        conn.timer = Some(key);
    }
    shard.metrics.logins[service.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Every connection of the shard.
fn every_conn(shard: &Shard, st: &State) -> Vec<ConnRef> {
    st.conns
        .iter()
        .map(|(slot, gen, _)| ConnRef::new(shard.id, slot, gen))
        .collect()
}

/// SIGTERM: stop accepting, tell every connection SHUTTING_DOWN and let
/// them flush; [`drain_finished`] says when the shard may end.
pub fn start_drain(shard: &Shard, deadline_ms: u64) {
    let mut st = shard.state.borrow_mut();
    st.draining = true;
    st.drain_end_ms = Some(shard.shared.now_ms().saturating_add(deadline_ms));
    for c in every_conn(shard, &st) {
        send_error(shard, &mut st, c, ErrorCode::ShuttingDown, 0, 0);
    }
}

/// During a drain: true once every connection is gone or the deadline
/// passed (then the stragglers are shut down).
pub fn drain_finished(shard: &Shard, now: u64) -> bool {
    let mut st = shard.state.borrow_mut();
    let Some(end) = st.drain_end_ms else {
        return false;
    };
    if st.conns.is_empty() {
        return true;
    }
    if now >= end {
        for c in every_conn(shard, &st) {
            st.shut_down(c);
        }
        return true;
    }
    false
}
