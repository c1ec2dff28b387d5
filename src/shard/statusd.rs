//! The statusd service on a shard: commands from this shard's statusd
//! connections, and the presence of the users this shard is home to.
//!
//! Every presence update for a watcher travels through the watcher's home
//! shard, and login dumps do too: so for each watcher, the dump entries and
//! later changes arrive in the order they were produced, which is what
//! makes every client's view converge (protocol 5.4).

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, Bytes, BytesMut};

use super::conn::{self, Phase};
use super::msg::{ConnRef, ShardMsg};
use super::{route, Shard};
use crate::core::presence::{Change, VisibilityChange};
use crate::ids::{Service, UserId};
use crate::limits;
use crate::net::outbuf::Flush;
use chatd_proto::statusd::{self as wire, Request};
use chatd_proto::ErrorCode;

/// Decodes and handles every complete command in `buf` from statusd
/// connection `c`.
pub fn on_bytes(shard: &Shard, c: ConnRef, buf: &mut BytesMut) {
    loop {
        let mut st = shard.state.borrow_mut();
        let st = &mut *st;
        let Some(cn) = conn::get(st, c) else {
            buf.clear();
            return;
        };
        let (phase, user) = (cn.phase, cn.user);
        if phase == Phase::Closing {
            buf.clear();
            return;
        }
        let (req, used) = match wire::decode_request(buf) {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                let (code, opcode) = conn::login_error_for(phase, &e, wire::OP_HELLO);
                conn::send_error(shard, st, c, code, opcode, e.chatid());
                buf.clear();
                return;
            }
        };
        let opcode = req.opcode();
        shard.metrics.command_in(Service::Statusd, opcode);
        let home = route::user_home(user, shard.shards());
        match (phase, req) {
            (Phase::Auth, Request::Auth { token }) => conn::on_auth(shard, st, c, token),
            (Phase::Hello, Request::Hello { version, presence }) => {
                if version == 0 || version > limits::PROTOCOL_VERSION {
                    conn::send_error(shard, st, c, ErrorCode::BadVersion, opcode, 0);
                } else if conn::admit(shard, st, c, opcode) {
                    shard.send(
                        home,
                        ShardMsg::PresHello {
                            user,
                            conn: c,
                            raw: presence,
                        },
                    );
                }
            }
            (Phase::Auth | Phase::Hello, _) => {
                conn::send_error(shard, st, c, ErrorCode::NotAuthenticated, opcode, 0);
            }
            (_, Request::Keepalive) => conn::keepalive(shard, st, c),
            (_, Request::Auth { .. } | Request::Hello { .. }) => {
                conn::send_error(shard, st, c, ErrorCode::BadCommand, opcode, 0);
            }
            (_, Request::SetPres { presence }) => {
                let allowed = conn::get(st, c).is_some_and(|cn| {
                    let now = cn.last_rx_ms;
                    cn.bucket.allow(now)
                });
                if allowed {
                    let msg = ShardMsg::PresSet {
                        user,
                        conn: c,
                        raw: presence,
                    };
                    shard.send(home, msg);
                } else {
                    conn::send_error(shard, st, c, ErrorCode::RateLimited, opcode, 0);
                }
            }
        }
        buf.advance(used);
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

/// A login dump in progress, at the user's home shard.
#[derive(Debug, Default)]
pub struct Dump {
    /// Shards whose part has not arrived yet.
    parts_left: usize,
    /// Entries sent so far.
    entries: u64,
    /// OP_SETPRES values the client sent during the dump, applied (and
    /// answered) once it ends.
    held: Vec<u8>,
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
