//! The one input path: every byte a client sends, on either service,
//! passes through [`on_bytes`], which does what both services do alike and
//! hands each service only its own commands.
//!
//! Written once here, for both services:
//! - a closing connection's input is dropped;
//! - a decode error is answered with its `OP_ERROR` (named by the login
//!   phase: [`login_error_for`]) and the rest of the input dropped;
//! - the login phase (`login`): `OP_AUTH` (token check), then `OP_HELLO`
//!   (version check, per-user limit, idle timer), anything else
//!   `NOT_AUTHENTICATED`;
//! - after login: `OP_KEEPALIVE` is answered, a second `OP_AUTH` or
//!   `OP_HELLO` is `BAD_COMMAND`, and the commands a service marks as rated
//!   (`OP_RTMSG`, `OP_SETPRES`) are charged to the connection's token
//!   bucket (`RATE_LIMITED` when empty); a refused command's error goes
//!   through the shard that answers that command (`ServiceInput::home`),
//!   so it reaches the client behind the answers to its earlier commands.
//!
//! A service plugs in by implementing [`ServiceInput`]: its decoder, how
//! its requests split into the shared ones and its own, what completes its
//! login, and its own commands ([`crate::shard::chatd`],
//! [`crate::shard::statusd`]). The driver picks the implementation by the
//! listener that accepted the connection.

use bytes::{Buf, BufMut, BytesMut};
use chatd_proto::{DecodeError, ErrorCode, Limits, KEEPALIVE_LEN, OP_AUTH, OP_KEEPALIVE};

use super::conn;
use super::msg::{ConnRef, Notice, ShardMsg};
use super::{Phase, Shard, State};
use crate::ids::{ClientId, Service, UserId};
use crate::limits;
use crate::metrics;

/// A request as the input path sees it: the commands both services share,
/// and the service's own.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a, H, C> {
    /// `OP_KEEPALIVE`.
    Keepalive,
    /// `OP_AUTH`.
    Auth {
        /// The token, as received.
        token: &'a [u8],
    },
    /// `OP_HELLO`: the version, and what else the service's hello carries.
    Hello {
        /// The protocol version asked for.
        version: u16,
        /// The service's part (statusd: the initial presence).
        hello: H,
    },
    /// One of the service's own commands.
    Command(C),
}

/// Whether a service's command handler took the command's bytes off the
/// read buffer itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Consumed {
    /// It did not: the input path drops them.
    Left,
    /// It took exactly the command's bytes with `split_to` (an `OP_RTMSG`
    /// turned into its delivery in place).
    Taken,
}

/// Who sent a command: the connection's user and client id, read once per
/// command with its phase.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    /// The authenticated user (0 before `OP_AUTH`).
    pub user: UserId,
    /// The chatd client id (0 before `OP_HELLO`, and on statusd).
    pub client: ClientId,
}

/// One service's side of the input path.
pub trait ServiceInput {
    /// Which service (metrics, per-user limits).
    const SERVICE: Service;
    /// The service's `OP_HELLO` opcode (login-order errors name it).
    const OP_HELLO: u8;
    /// A decoded request, possibly borrowing the read buffer.
    type Request<'a>: Copy;
    /// What the service's `OP_HELLO` carries besides the version.
    type Hello: Copy;
    /// The service's own commands, without borrowed bytes (a handler may
    /// then take the command's bytes off the read buffer).
    type Command: Copy;

    /// Decodes the first command in `buf` (the codec's three outcomes).
    fn decode<'a>(
        buf: &'a [u8],
        limits: &Limits,
    ) -> Result<Option<(Self::Request<'a>, usize)>, DecodeError>;
    /// The request's opcode.
    fn opcode(req: &Self::Request<'_>) -> u8;
    /// The room a request concerns (the `id` of an `OP_ERROR` it causes),
    /// 0 when none.
    fn chatid(req: &Self::Request<'_>) -> u64;
    /// Splits a request into the shared ones and the service's own.
    fn input<'a>(req: Self::Request<'a>) -> Input<'a, Self::Hello, Self::Command>;
    /// Whether a command is charged to the connection's rate limit.
    fn rated(cmd: &Self::Command) -> bool;
    /// The shard whose inbox must have room before this command is
    /// handled, when it has none now: the connection stops reading there,
    /// the command left in its buffer, until the driver resumes it
    /// ([`super::budget`]).
    fn waits_for(shard: &Shard, cmd: &Self::Command) -> Option<usize>;
    /// A refusal that needs no state (chatd: `BAD_ADDRESS`), checked after
    /// the rate limit was charged and before its verdict.
    fn refuse(cmd: &Self::Command) -> Option<ErrorCode>;
    /// The shard that answers `cmd` (its room's home, its user's home): a
    /// refusal here is sent to the client through it, behind its answers
    /// to the connection's earlier commands ([`ShardMsg::Refused`]).
    fn home(shard: &Shard, from: Sender, cmd: &Self::Command) -> usize;
    /// Completes a login whose `OP_HELLO` was accepted (version checked,
    /// connection counted against its user, idle timer started).
    fn hello(shard: &Shard, st: &mut State, c: ConnRef, from: Sender, hello: Self::Hello);
    /// Handles one of the service's own commands from a logged-in
    /// connection; the command's bytes are the first `used` of `buf`.
    fn command(
        shard: &Shard,
        st: &mut State,
        c: ConnRef,
        from: Sender,
        cmd: Self::Command,
        buf: &mut BytesMut,
        used: usize,
    ) -> Consumed;
}

/// Decodes and handles every complete command in `buf` from connection
/// `c` of service `S`, leaving a partial one in place.
pub fn on_bytes<S: ServiceInput>(shard: &Shard, c: ConnRef, buf: &mut BytesMut) {
    // Waiting for its answers before it closes with an error
    // ([`conn::error_after_answers`]): what it sent since is dropped.
    // (Checked once: the loop returns as soon as it starts waiting.)
    if shard.state.borrow().finishing.contains_key(&c) {
        buf.clear();
        return;
    }
    // Sent before any other command of the read is handled, and when the
    // read is done (dropped).
    let mut refusals = Refusals {
        shard,
        conn: c,
        by_home: Vec::new(),
    };
    loop {
        let mut st = shard.state.borrow_mut();
        let st = &mut *st;
        let Some(cn) = st.conn(c) else {
            buf.clear();
            return;
        };
        let phase = cn.phase;
        let from = Sender {
            user: cn.user,
            client: cn.client,
        };
        if phase == Phase::Closing {
            buf.clear();
            return;
        }
        if cn.waits_for.is_some() {
            // Paused: the driver resumes it once there is room.
            return;
        }
        let (req, used) = match S::decode(buf, &shard.shared.limits) {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                let (code, opcode) = login_error_for(phase, &e, S::OP_HELLO);
                // The refusals before it, then its echoes.
                refusals.send();
                conn::error_after_answers(shard, st, c, code, opcode, e.chatid());
                buf.clear();
                return;
            }
        };
        let opcode = S::opcode(&req);
        let chatid = S::chatid(&req);
        let input = S::input(req);
        if let (Phase::Ready, Input::Command(cmd)) = (phase, input) {
            if let Some(to) = S::waits_for(shard, &cmd) {
                // Not counted or charged to the rate limit yet: it is,
                // once, when the connection resumes and handles it.
                pause(shard, st, c, to);
                return;
            }
        }
        shard.metrics.command_in(S::SERVICE, opcode);
        let consumed = match (phase, input) {
            (Phase::Auth | Phase::Hello, input) => {
                login::<S>(shard, st, c, phase, from, opcode, chatid, input);
                Consumed::Left
            }
            (_, Input::Keepalive) => {
                keepalive(shard, st, c, S::SERVICE);
                Consumed::Left
            }
            // A second login on a logged-in connection is a protocol error.
            (_, Input::Auth { .. } | Input::Hello { .. }) => {
                refusals.send();
                conn::error_after_answers(shard, st, c, ErrorCode::BadCommand, opcode, 0);
                buf.clear();
                return;
            }
            (_, Input::Command(cmd)) => {
                let allowed = !S::rated(&cmd)
                    || st.conn(c).is_some_and(|cn| {
                        let now = cn.last_rx_ms;
                        cn.bucket.allow(now)
                    });
                let refused = S::refuse(&cmd).or((!allowed).then_some(ErrorCode::RateLimited));
                if let Some(code) = refused {
                    // Through the command's home, in order with its answers
                    // to the commands before (a pipelined burst gets its
                    // answers, then the error).
                    let notice = Notice::Error {
                        code,
                        opcode,
                        id: chatid,
                    };
                    refusals.add(S::home(shard, from, &cmd), notice);
                    Consumed::Left
                } else {
                    refusals.send();
                    S::command(shard, st, c, from, cmd, buf, used)
                }
            }
        };
        if consumed == Consumed::Left {
            buf.advance(used);
        }
    }
}

/// The refused commands of one read not sent yet, by the home shard that
/// answers them: each home gets them in one [`ShardMsg::Refused`], so a
/// flood of refused commands costs each home one message a read, not one
/// a command (their errors are the flooder's own output, and its problem
/// as a slow consumer).
struct Refusals<'a> {
    shard: &'a Shard,
    conn: ConnRef,
    by_home: Vec<(usize, Vec<Notice>)>,
}

impl Refusals<'_> {
    fn add(&mut self, home: usize, notice: Notice) {
        match self.by_home.iter_mut().find(|(h, _)| *h == home) {
            Some((_, list)) => list.push(notice),
            None => self.by_home.push((home, vec![notice])),
        }
    }

    /// Sends what it holds: before another command of the read is
    /// handled (its answers must not overtake these), and at the end.
    fn send(&mut self) {
        if self.by_home.is_empty() {
            return;
        }
        for (home, list) in self.by_home.drain(..) {
            let notice = match <[Notice; 1]>::try_from(list) {
                Ok([one]) => one,
                Err(list) => Notice::Batch(list),
            };
            let conn = self.conn;
            self.shard.send(home, ShardMsg::Refused { conn, notice });
        }
    }
}

impl Drop for Refusals<'_> {
    fn drop(&mut self) {
        self.send();
    }
}

/// Stops handling `c`'s input until shard `to`'s inbox has room: what is
/// left in its buffer waits there, and its driver reads nothing more
/// until it resumes ([`super::driver`]).
#[cold]
fn pause(shard: &Shard, st: &mut State, c: ConnRef, to: usize) {
    if let Some(cn) = st.conn(c) {
        // Below `limits::SHARDS_MAX`, so it fits.
        cn.waits_for = Some(to as u16);
        metrics::add(&shard.metrics.read_pauses, 1);
    }
}

/// The login phase, both services: `OP_AUTH` first, `OP_HELLO` second
/// (protocol section 2); any other command is `NOT_AUTHENTICATED`.
#[allow(clippy::too_many_arguments)]
fn login<S: ServiceInput>(
    shard: &Shard,
    st: &mut State,
    c: ConnRef,
    phase: Phase,
    from: Sender,
    opcode: u8,
    chatid: u64,
    input: Input<'_, S::Hello, S::Command>,
) {
    match (phase, input) {
        (Phase::Auth, Input::Auth { token }) => on_auth(shard, st, c, token),
        (Phase::Hello, Input::Hello { version, hello }) => {
            if version == 0 || version > limits::PROTOCOL_VERSION {
                conn::send_error(shard, st, c, ErrorCode::BadVersion, opcode, 0);
            } else if admit(shard, st, c, opcode) {
                S::hello(shard, st, c, from, hello);
            }
        }
        _ => conn::send_error(shard, st, c, ErrorCode::NotAuthenticated, opcode, chatid),
    }
}

/// `OP_AUTH`: verifies the token; on failure `AUTH_FAILED` and close.
fn on_auth(shard: &Shard, st: &mut State, c: ConnRef, token: &[u8]) {
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let Some(conn) = st.conn(c) else { return };
    let service = conn.service;
    match shard.shared.auth.verify(token, now_secs) {
        Ok(user) => {
            conn.user = user;
            conn.phase = Phase::Hello;
        }
        Err(e) => {
            tracing::debug!(?c, "auth failed: {e}");
            shard.metrics.auth_failures[service.index()]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            conn::send_error(shard, st, c, ErrorCode::AuthFailed, OP_AUTH, 0);
        }
    }
}

/// Completes a login (`OP_HELLO` accepted): counts the connection against
/// the user's limit (`TOO_MANY_CONNECTIONS` and close when over it), starts
/// its idle timer. Returns false when refused.
fn admit(shard: &Shard, st: &mut State, c: ConnRef, opcode: u8) -> bool {
    let Some(conn) = st.conn(c) else { return false };
    let (user, service) = (conn.user, conn.service);
    let max = shard.shared.config.max_connections_per_user;
    if !shard.shared.user_conns.try_acquire(user, service, max) {
        conn::send_error(shard, st, c, ErrorCode::TooManyConnections, opcode, 0);
        return false;
    }
    conn.at_home = true;
    conn::logged_in(shard, st, c);
    true
}

/// The `OP_ERROR` for a decode error, given the login phase: before login,
/// a known command other than the one expected is `NOT_AUTHENTICATED`
/// whatever its fields (an unknown opcode stays `BAD_COMMAND`).
/// `hello` is the service's `OP_HELLO` opcode.
pub fn login_error_for(phase: Phase, e: &DecodeError, hello: u8) -> (ErrorCode, u8) {
    let expected = match phase {
        Phase::Auth => OP_AUTH,
        Phase::Hello => hello,
        // A second login is BAD_COMMAND whatever its bytes, a bad
        // `token_len` included (docs/protocol.md, "A second login").
        Phase::Ready | Phase::Closing if e.opcode() == OP_AUTH => {
            return (ErrorCode::BadCommand, OP_AUTH)
        }
        Phase::Ready | Phase::Closing => return (e.error_code(), e.opcode()),
    };
    match e {
        DecodeError::UnknownOpcode(_) => (e.error_code(), e.opcode()),
        _ if e.opcode() == expected => (e.error_code(), e.opcode()),
        _ => (ErrorCode::NotAuthenticated, e.opcode()),
    }
}

/// `OP_KEEPALIVE` from a client, either service: answered with
/// `OP_KEEPALIVE` (the same one byte on both).
fn keepalive(shard: &Shard, st: &mut State, c: ConnRef, service: Service) {
    let frame = st.arena.frame(KEEPALIVE_LEN, |b| b.put_u8(OP_KEEPALIVE));
    shard.metrics.command_out(service, OP_KEEPALIVE, 1);
    conn::push_frame(shard, st, c, frame);
}
