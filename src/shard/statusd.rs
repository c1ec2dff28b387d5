//! The statusd service on a shard: commands from this shard's statusd
//! connections, and the presence of the users this shard is home to.
//!
//! Every presence update for a watcher travels through the watcher's home
//! shard, and login dumps do too: so for each watcher, the dump entries and
//! later changes arrive in the order they were produced, which is what
//! makes every client's view converge (protocol 5.4).

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use chatd_proto::statusd::{self as wire, Request};
use chatd_proto::{DecodeError, ErrorCode, Limits};

use super::input::{Consumed, Input, Sender, ServiceInput};
use super::msg::{ConnRef, ShardMsg};
use super::{route, Dump, Shard, State};
use crate::core::presence::{Change, VisibilityChange};
use crate::ids::{Service, UserId};
use crate::net::outbuf::Flush;

/// statusd's side of the input path ([`super::input`]): a login announces
/// the client's presence to its user's home shard, and `OP_SETPRES` goes
/// there too.
pub struct StatusdInput;

/// statusd's own command, as the input path hands it over.
#[derive(Clone, Copy, Debug)]
pub enum Command {
    /// `OP_SETPRES`, with the raw byte ([`wire::AUTO_FLAG`] included).
    SetPres {
        /// The presence.
        presence: u8,
    },
}

impl ServiceInput for StatusdInput {
    const SERVICE: Service = Service::Statusd;
    const OP_HELLO: u8 = wire::OP_HELLO;
    type Request<'a> = Request<'a>;
    /// The initial presence, raw.
    type Hello = u8;
    type Command = Command;

    fn decode<'a>(
        buf: &'a [u8],
        _limits: &Limits,
    ) -> Result<Option<(Request<'a>, usize)>, DecodeError> {
        wire::decode_request(buf)
    }

    fn opcode(req: &Request<'_>) -> u8 {
        req.opcode()
    }

    /// statusd has no rooms: its errors carry id 0.
    fn chatid(_req: &Request<'_>) -> u64 {
        0
    }

    fn input<'a>(req: Self::Request<'a>) -> Input<'a, u8, Command> {
        match req {
            Request::Keepalive => Input::Keepalive,
            Request::Auth { token } => Input::Auth { token },
            Request::Hello { version, presence } => Input::Hello {
                version,
                hello: presence,
            },
            Request::SetPres { presence } => Input::Command(Command::SetPres { presence }),
        }
    }

    fn rated(cmd: &Command) -> bool {
        matches!(cmd, Command::SetPres { .. })
    }

    fn refuse(_cmd: &Command) -> Option<ErrorCode> {
        None
    }

    /// Announces the new client, with its presence, to its user's home
    /// shard, which answers with the login dump.
    fn hello(shard: &Shard, _st: &mut State, c: ConnRef, from: Sender, presence: u8) {
        let home = route::user_home(from.user, shard.shards());
        shard.send(
            home,
            ShardMsg::PresHello {
                user: from.user,
                conn: c,
                raw: presence,
            },
        );
    }

    fn command(
        shard: &Shard,
        _st: &mut State,
        c: ConnRef,
        from: Sender,
        cmd: Command,
        _buf: &mut BytesMut,
        _used: usize,
    ) -> Consumed {
        let Command::SetPres { presence } = cmd;
        let home = route::user_home(from.user, shard.shards());
        let msg = ShardMsg::PresSet {
            user: from.user,
            conn: c,
            raw: presence,
        };
        shard.send(home, msg);
        Consumed::Left
    }
}

/// Handles a message for a user homed on this shard (or, for
/// `PresFanout` and `DumpPart`, a watcher homed here).
pub fn handle_user_msg(shard: &Shard, msg: ShardMsg) {
    match msg {
        ShardMsg::PresHello { user, conn, raw } => {
            let change = shard.state.borrow_mut().presence.connect(user, conn, raw);
            // The new client learns its own presence from the dump's last
            // command, so it is left out of the own-clients broadcast.
            publish(shard, user, change, Some(conn));
            start_dump(shard, user, conn);
        }
        ShardMsg::PresSet { user, conn, raw } => {
            // The login dump ends with the client's own OP_PRES 0, so an
            // answer sent before that would read as the dump's end: an
            // OP_SETPRES sent during the dump waits for it.
            if let Some(d) = shard.state.borrow_mut().dumps.get_mut(&conn) {
                d.held.push(raw);
                return;
            }
            set_presence(shard, user, conn, raw);
        }
        ShardMsg::PresGone { user, conn } => {
            let change = {
                let mut st = shard.state.borrow_mut();
                st.dumps.remove(&conn);
                st.presence.disconnect(user, conn)
            };
            publish(shard, user, change, None);
        }
        ShardMsg::PresFanout { frame, watchers } => {
            let mut conns = shard.take_conn_list();
            {
                let st = shard.state.borrow();
                conns.extend(watchers.iter().flat_map(|&w| st.presence.clients(w)));
            }
            // Updates about other users: the ones a login storm multiplies,
            // so these (only these) may wait for the batch flush.
            deliver_pres(shard, &frame, 1, &conns, shard.presence_flush());
            shard.give_conn_list(conns);
        }
        ShardMsg::DumpQuery {
            watcher,
            conn,
            users,
        } => {
            let entries: Vec<(UserId, u8)> = {
                let st = shard.state.borrow();
                users
                    .iter()
                    .map(|&u| (u, st.presence.visible_presence(u, watcher)))
                    .filter(|&(_, p)| p != 0)
                    .collect()
            };
            let home = route::user_home(watcher, shard.shards());
            shard.send(
                home,
                ShardMsg::DumpPart {
                    watcher,
                    conn,
                    entries,
                },
            );
        }
        ShardMsg::PresPull { pairs } => {
            let shards = shard.shards();
            for (watcher, user) in pairs {
                let presence = shard
                    .state
                    .borrow()
                    .presence
                    .visible_presence(user, watcher);
                if presence != 0 {
                    let frame = pres_frame(shard, user, presence);
                    let fanout = ShardMsg::PresFanout {
                        frame,
                        watchers: vec![watcher],
                    };
                    shard.send(route::user_home(watcher, shards), fanout);
                }
            }
        }
        ShardMsg::DumpPart {
            watcher,
            conn,
            entries,
        } => dump_part(shard, watcher, conn, &entries),
        _ => {}
    }
}

/// OP_SETPRES `raw` from client `conn` of `user` (homed here).
fn set_presence(shard: &Shard, user: UserId, conn: ConnRef, raw: u8) {
    let change = shard.state.borrow_mut().presence.set(user, conn, raw);
    // Exactly one OP_PRES 0 to the sender, changed or not; when it
    // changed this is also its copy of the broadcast.
    send_pres(shard, &[conn], 0, change.new);
    publish(shard, user, change, Some(conn));
}

/// Applies a relation-count change for (`user`, `watcher`), `user` homed
/// here (its twin, (`watcher`, `user`), is applied on `watcher`'s home).
/// Became invisible: `watcher`'s clients get `user` 0 if it was not 0 (a
/// login dump racing this is filtered by `visible_presence` where it is
/// answered).
/// Became visible: returns true, and the caller pulls `watcher`'s presence
/// for `user`'s clients once both directions are applied everywhere (see
/// `control::MeshControl::apply`), which is what lets a login racing the
/// change converge.
pub fn visibility(shard: &Shard, user: UserId, watcher: UserId, delta: i32) -> bool {
    let (change, presence) = {
        let mut st = shard.state.borrow_mut();
        let change = st.presence.visibility(user, watcher, delta);
        (change, st.presence.presence(user))
    };
    match change {
        VisibilityChange::None => false,
        VisibilityChange::BecameVisible => true,
        VisibilityChange::BecameInvisible => {
            if presence != 0 {
                let frame = pres_frame(shard, user, 0);
                let home = route::user_home(watcher, shard.shards());
                let watchers = vec![watcher];
                shard.send(home, ShardMsg::PresFanout { frame, watchers });
            }
            false
        }
    }
}

/// One OP_PRES frame from the shard's arena.
fn pres_frame(shard: &Shard, user: UserId, presence: u8) -> Bytes {
    shard
        .state
        .borrow_mut()
        .arena
        .frame(wire::PRES_LEN, |b| wire::encode_pres(user, presence, b))
}

/// Sends `OP_PRES user presence` to connections.
fn send_pres(shard: &Shard, conns: &[ConnRef], user: UserId, presence: u8) {
    let frame = pres_frame(shard, user, presence);
    deliver_pres(shard, &frame, 1, conns, Flush::Now);
}

/// Delivers `frame`, which holds `per_conn` OP_PRES commands, to `conns`,
/// and counts them.
fn deliver_pres(shard: &Shard, frame: &Bytes, per_conn: usize, conns: &[ConnRef], flush: Flush) {
    let n = (per_conn * conns.len()) as u64;
    shard.metrics.pres_sent.fetch_add(n, Relaxed);
    shard
        .metrics
        .command_out(Service::Statusd, wire::OP_PRES, n);
    shard.deliver(frame, conns, flush);
}

/// A user's presence changed: tell every client of every watcher (through
/// the watchers' home shards) and the user's own clients but `skip`.
fn publish(shard: &Shard, user: UserId, change: Change, skip: Option<ConnRef>) {
    if !change.changed() {
        return;
    }
    shard.metrics.presence_changes.fetch_add(1, Relaxed);
    let shards = shard.shards();
    let (own, by_shard) = {
        let st = shard.state.borrow();
        // A client still in its login dump learns its own presence from
        // the dump's last command, which is read when the dump ends.
        let own: Vec<ConnRef> = st
            .presence
            .clients(user)
            .filter(|&c| Some(c) != skip && !st.dumps.contains_key(&c))
            .collect();
        let mut by_shard: Vec<Vec<UserId>> = vec![Vec::new(); shards];
        let mut n = 0;
        for w in st.presence.watchers(user) {
            by_shard[route::user_home(w, shards)].push(w);
            n += 1;
        }
        shard.metrics.watchers_per_change.observe(n);
        (own, by_shard)
    };
    send_pres(shard, &own, 0, change.new);
    let frame = pres_frame(shard, user, change.new);
    for (to, watchers) in by_shard.into_iter().enumerate() {
        if !watchers.is_empty() {
            shard.send(
                to,
                ShardMsg::PresFanout {
                    frame: frame.clone(),
                    watchers,
                },
            );
        }
    }
}

/// Starts the login dump of a new statusd client `conn` of `user`: asks
/// the home shard of every user it may see for their presence.
fn start_dump(shard: &Shard, user: UserId, conn: ConnRef) {
    let shards = shard.shards();
    let mut by_shard: Vec<Vec<UserId>> = vec![Vec::new(); shards];
    {
        let st = shard.state.borrow();
        for v in st.presence.watchers(user) {
            by_shard[route::user_home(v, shards)].push(v);
        }
    }
    let parts = by_shard.iter().filter(|v| !v.is_empty()).count();
    if parts == 0 {
        return finish_dump(shard, user, conn, Dump::default());
    }
    let dump = Dump {
        parts_left: parts,
        ..Dump::default()
    };
    shard.state.borrow_mut().dumps.insert(conn, dump);
    for (to, users) in by_shard.into_iter().enumerate() {
        if !users.is_empty() {
            shard.send(
                to,
                ShardMsg::DumpQuery {
                    watcher: user,
                    conn,
                    users,
                },
            );
        }
    }
}

/// One shard's part of a login dump arrived at the watcher's home.
fn dump_part(shard: &Shard, watcher: UserId, conn: ConnRef, entries: &[(UserId, u8)]) {
    let done = {
        let mut st = shard.state.borrow_mut();
        let Some(d) = st.dumps.get_mut(&conn) else {
            return;
        };
        d.parts_left -= 1;
        d.entries += entries.len() as u64;
        if d.parts_left == 0 {
            st.dumps.remove(&conn)
        } else {
            None
        }
    };
    if !entries.is_empty() {
        // All entries in one buffer: the stream is just commands back to back.
        let frame = shard
            .state
            .borrow_mut()
            .arena
            .frame(entries.len() * wire::PRES_LEN, |b| {
                for &(u, p) in entries {
                    wire::encode_pres(u, p, b);
                }
            });
        deliver_pres(shard, &frame, entries.len(), &[conn], Flush::Now);
    }
    if let Some(dump) = done {
        finish_dump(shard, watcher, conn, dump);
    }
}

/// Ends a login dump with `OP_PRES 0 own_presence`, then applies the
/// OP_SETPRES commands that waited for it, in order.
fn finish_dump(shard: &Shard, user: UserId, conn: ConnRef, dump: Dump) {
    shard.metrics.login_dump_size.observe(dump.entries);
    let own = shard.state.borrow().presence.presence(user);
    send_pres(shard, &[conn], 0, own);
    for raw in dump.held {
        set_presence(shard, user, conn, raw);
    }
}
