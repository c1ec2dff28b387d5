//! The statusd service on a shard: commands from this shard's statusd
//! connections, the presence of the users this shard is home to, and the
//! updates that tell their watchers (docs/architecture.md, "Presence").
//!
//! Every update about a user is sent by that user's home and travels
//! through the watcher's home shard, and login dumps do too: so for each
//! watcher, dump entries and later changes arrive in the order the user's
//! home produced them. Who to tell is gathered from the relations when
//! needed: the active members of the user's rooms (from the rooms' home
//! shards) and its active contacts. Every gather and dump is read at one
//! relation epoch on every shard or done again, which is what makes every
//! client's view converge (protocol 5.4).

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use chatd_proto::statusd::{self as wire, Request};
use chatd_proto::{DecodeError, ErrorCode, Limits};

use super::conn;
use super::input::{Consumed, Input, Sender, ServiceInput};
use super::msg::{ConnRef, Notice, ShardMsg};
use super::{route, Dump, Gather, Held, Shard, State};
use crate::cluster::link::NodeMsg;
use crate::core::presence::Change;
use crate::core::room::NodeSlot;
use crate::ids::{FastSet, Service, UserId};
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

    /// Every statusd command is answered by its user's home.
    fn home(shard: &Shard, from: Sender, _cmd: &Command) -> usize {
        route::user_home(from.user, shard.shards())
    }

    /// Presence commands carry no frame of the client's and are
    /// rate-limited: they never wait for another shard.
    fn waits_for(_shard: &Shard, _cmd: &Command) -> Option<usize> {
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
        let home = Self::home(shard, from, &cmd);
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
/// `PresFanout` and `DumpPart`, a watcher homed here; for `Active` and
/// `Gather`, any shard).
pub fn handle_user_msg(shard: &Shard, msg: ShardMsg) {
    match msg {
        ShardMsg::PresHello { user, conn, raw } => {
            let before = local_value(shard, user);
            let (was_active, change) = {
                let mut st = shard.state.borrow_mut();
                let was_active = st.presence.is_active(user);
                (was_active, st.presence.connect(user, conn, raw))
            };
            tell_cluster(shard, user, before, raw & wire::AUTO_FLAG == 0);
            if !was_active {
                // Before any gather of this user's: every shard's part of
                // a gather or dump that comes after sees it active.
                broadcast(shard, |_| ShardMsg::Active { user, active: true });
            }
            // The new client learns its own presence from the dump's last
            // command, so it is left out of the own-clients broadcast.
            tell_own_clients(shard, user, change, Some(conn));
            shard.state.borrow_mut().dumps.insert(conn, Dump::default());
            // One gather serves the update and the dump.
            let publish = change.changed() && queue_update(shard, user);
            start_gather(shard, user, publish, Some(conn), None);
        }
        ShardMsg::PresSet { user, conn, raw } => {
            // The login dump ends with the client's own OP_PRES 0, so an
            // answer sent before that would read as the dump's end: an
            // OP_SETPRES sent during the dump waits for it.
            if let Some(d) = shard.state.borrow_mut().dumps.get_mut(&conn) {
                d.held.push(Held::SetPres(raw));
                return;
            }
            set_presence(shard, user, conn, raw);
        }
        ShardMsg::PresGone { user, conn } => {
            let before = local_value(shard, user);
            let change = {
                let mut st = shard.state.borrow_mut();
                st.dumps.remove(&conn);
                st.presence.disconnect(user, conn)
            };
            tell_cluster(shard, user, before, false);
            tell_own_clients(shard, user, change, None);
            if change.changed() && queue_update(shard, user) {
                start_gather(shard, user, true, None, None);
            }
            release_if_quiet(shard, user);
        }
        ShardMsg::PresFanout { frame, watchers } => {
            let mut conns = shard.take_conn_list();
            {
                let st = shard.state.borrow();
                conns.extend(watchers.iter().flat_map(|&w| st.presence.clients(w)));
            }
            // Updates about other users: the ones a login storm multiplies,
            // so these (only these) may wait for the batch flush. A frame
            // may hold several values of one user, in order.
            let per_conn = frame.len() / wire::PRES_LEN;
            deliver_pres(shard, &frame, per_conn, &conns, shard.presence_flush());
            shard.give_conn_list(conns);
        }
        ShardMsg::Active { user, active } => {
            shard.state.borrow_mut().relations.set_active(user, active);
        }
        ShardMsg::Gather { id, user } => {
            let (epoch, users) = {
                let st = shard.state.borrow();
                let mut users = Vec::new();
                st.relations.room_watchers(user, &mut users);
                (st.relations.epoch(), users)
            };
            let home = route::user_home(user, shard.shards());
            shard.send(home, ShardMsg::Gathered { id, epoch, users });
        }
        ShardMsg::Gathered { id, epoch, users } => gathered(shard, id, epoch, users),
        ShardMsg::DumpQuery {
            watcher,
            conn,
            epoch,
            users,
        } => {
            let (entries, stale) = {
                let st = shard.state.borrow();
                if st.relations.epoch() == epoch {
                    let entries = users
                        .iter()
                        .map(|&u| (u, st.presence.presence(u)))
                        .filter(|&(_, p)| p != 0)
                        .collect();
                    (entries, false)
                } else {
                    (Vec::new(), true)
                }
            };
            let home = route::user_home(watcher, shard.shards());
            shard.send(
                home,
                ShardMsg::DumpPart {
                    watcher,
                    conn,
                    entries,
                    stale,
                },
            );
        }
        ShardMsg::DumpPart {
            watcher,
            conn,
            entries,
            stale,
        } => dump_part(shard, watcher, conn, &entries, stale),
        _ => {}
    }
}

/// Sends `make(shard)` to every shard, this one included (through its
/// local queue, so in order with what it sends itself).
pub(super) fn broadcast(shard: &Shard, make: impl Fn(usize) -> ShardMsg) {
    for to in 0..shard.shards() {
        shard.send(to, make(to));
    }
}

/// OP_SETPRES `raw` from client `conn` of `user` (homed here).
fn set_presence(shard: &Shard, user: UserId, conn: ConnRef, raw: u8) {
    let before = local_value(shard, user);
    let change = shard.state.borrow_mut().presence.set(user, conn, raw);
    tell_cluster(shard, user, before, raw & wire::AUTO_FLAG == 0);
    // Exactly one OP_PRES 0 to the sender, changed or not; when it
    // changed this is also its copy of the broadcast.
    send_pres(shard, &[conn], 0, change.new);
    tell_own_clients(shard, user, change, Some(conn));
    if change.changed() && queue_update(shard, user) {
        start_gather(shard, user, true, None, None);
    }
}

/// Cluster mode: this node's value for `user` (the maximum of its
/// clients here); 0 otherwise (unused then).
fn local_value(shard: &Shard, user: UserId) -> u8 {
    if shard.shared.cluster.is_none() {
        return 0;
    }
    shard.state.borrow().presence.local_presence(user)
}

/// Cluster mode: tells the other nodes this node's value for `user` when
/// it changed from `before`, or when a client here set it with MSB 0
/// (`user_set`: every client of the user on every node takes it).
fn tell_cluster(shard: &Shard, user: UserId, before: u8, user_set: bool) {
    let Some(link) = &shard.shared.cluster else {
        return;
    };
    let value = shard.state.borrow().presence.local_presence(user);
    if value != before || user_set {
        link.send(NodeMsg::Pres {
            user,
            value,
            user_set,
        });
    }
}

/// Cluster mode: another node's value for `user` (homed here) changed.
/// Applied like a client's change: own clients, watchers, activity.
pub fn handle_cluster_pres(shard: &Shard, user: UserId, node: NodeSlot, value: u8, user_set: bool) {
    let before = local_value(shard, user);
    let (was_active, change, active) = {
        let mut st = shard.state.borrow_mut();
        let was_active = st.presence.is_active(user);
        let change = st.presence.set_remote(user, node, value, user_set);
        (was_active, change, st.presence.is_active(user))
    };
    if !was_active && active {
        broadcast(shard, |_| ShardMsg::Active { user, active: true });
    }
    // A set by the user there changed this node's clients too.
    tell_cluster(shard, user, before, false);
    tell_own_clients(shard, user, change, None);
    if change.changed() && queue_update(shard, user) {
        start_gather(shard, user, true, None, None);
    }
    release_if_quiet(shard, user);
}

/// Cluster mode: node `node` is gone; its values for the users homed
/// here are dropped, and whoever sees them is told.
pub fn drop_node_presence(shard: &Shard, node: NodeSlot) {
    let changes = shard.state.borrow_mut().presence.drop_node(node);
    for (user, change) in changes {
        tell_own_clients(shard, user, change, None);
        if change.changed() && queue_update(shard, user) {
            start_gather(shard, user, true, None, None);
        }
        release_if_quiet(shard, user);
    }
}

/// Cluster mode: tells the bridge this node's value of every user homed
/// here with clients here (for a node that joined or reconnected).
pub fn snapshot_presence(shard: &Shard) {
    let Some(link) = &shard.shared.cluster else {
        return;
    };
    let values: Vec<(UserId, u8)> = shard.state.borrow().presence.local_values().collect();
    for (user, value) in values {
        link.send(NodeMsg::Pres {
            user,
            value,
            user_set: false,
        });
    }
}

/// Queues `user`'s new presence for its watchers; true when a gather must
/// start (none in flight).
fn queue_update(shard: &Shard, user: UserId) -> bool {
    shard.metrics.presence_changes.fetch_add(1, Relaxed);
    shard.state.borrow_mut().presence.queue_update(user)
}

/// Asks every shard for the active members of `user`'s rooms homed there.
fn start_gather(
    shard: &Shard,
    user: UserId,
    publish: bool,
    dump: Option<ConnRef>,
    prev: Option<Vec<UserId>>,
) {
    if !publish && dump.is_none() {
        return;
    }
    let id = {
        let mut st = shard.state.borrow_mut();
        let u = &mut st.updates;
        let id = u.next_id;
        u.next_id = u.next_id.wrapping_add(1);
        u.gathers.insert(
            id,
            Gather {
                user,
                publish,
                dump,
                prev,
                parts_left: shard.shards(),
                epoch: None,
                mixed: false,
                users: Vec::new(),
            },
        );
        id
    };
    broadcast(shard, |_| ShardMsg::Gather { id, user });
}

/// One shard's part of gather `id` arrived.
fn gathered(shard: &Shard, id: u64, epoch: u64, users: Vec<UserId>) {
    let done = {
        let mut st = shard.state.borrow_mut();
        let my_epoch = st.relations.epoch();
        let Some(g) = st.updates.gathers.get_mut(&id) else {
            debug_assert!(false, "part of unknown gather {id}");
            return;
        };
        g.parts_left -= 1;
        g.mixed |= g.epoch.is_some_and(|e| e != epoch);
        g.epoch = Some(epoch);
        g.users.extend(users);
        if g.parts_left > 0 {
            return;
        }
        let g = st.updates.gathers.remove(&id);
        // Read at one epoch everywhere, and that epoch is still this
        // shard's: no relation change came in between, so the users are
        // exactly who may see the user now (and any later change's
        // updates will be sent after these).
        g.map(|g| (g.mixed || g.epoch != Some(my_epoch), g))
    };
    let Some((again, g)) = done else {
        return;
    };
    // The client may have gone meanwhile.
    let dump = g
        .dump
        .filter(|c| shard.state.borrow().dumps.contains_key(c));
    if again {
        return start_gather(shard, g.user, g.publish, dump, g.prev);
    }
    if let Some(conn) = dump {
        dump_candidates(shard, g.user, conn, &g.users);
    }
    if g.publish {
        publish(shard, g.user, g.users, g.prev);
    }
}

/// The gather of `user`'s room watchers completed for an update: add its
/// active contacts and send every one of them the values the user took
/// since the last update, in one frame. If changes came during the gather,
/// gather again: watchers that one finds and this one did not (they became
/// active meanwhile, and their login dump may hold an older value) get the
/// value as it is then, and everyone gets the changes since (see
/// docs/architecture.md, "Presence").
fn publish(shard: &Shard, user: UserId, mut watchers: Vec<UserId>, prev: Option<Vec<UserId>>) {
    let (values, again, now) = {
        let mut st = shard.state.borrow_mut();
        st.relations.active_contacts(user, &mut watchers);
        let (values, again) = st.presence.finish_publish(user);
        if !st.presence.may_show_nonzero(user) {
            st.updates.flips.stopped_showing(user);
        }
        (values, again, st.presence.presence(user))
    };
    watchers.sort_unstable();
    watchers.dedup();
    if !values.is_empty() {
        shard
            .metrics
            .watchers_per_change
            .observe(watchers.len() as u64);
        let frame = shard
            .state
            .borrow_mut()
            .arena
            .frame(values.len() * wire::PRES_LEN, |b| {
                for &v in &values {
                    wire::encode_pres(user, v, b);
                }
            });
        fan_out(shard, &frame, watchers.clone());
    } else if let Some(prev) = &prev {
        let new: Vec<UserId> = watchers
            .iter()
            .copied()
            .filter(|w| prev.binary_search(w).is_err())
            .collect();
        if !new.is_empty() {
            let frame = pres_frame(shard, user, now);
            fan_out(shard, &frame, new);
        }
    }
    if again {
        start_gather(shard, user, true, None, Some(watchers));
    } else {
        release_if_quiet(shard, user);
    }
}

/// Sends `frame` to every client of each of `watchers`, through the
/// watchers' home shards (one message per shard).
pub(super) fn fan_out(shard: &Shard, frame: &Bytes, watchers: Vec<UserId>) {
    let shards = shard.shards();
    if shards == 1 {
        if !watchers.is_empty() {
            let frame = frame.clone();
            shard.send(0, ShardMsg::PresFanout { frame, watchers });
        }
        return;
    }
    let mut by_shard: Vec<Vec<UserId>> = vec![Vec::new(); shards];
    for w in watchers {
        by_shard[route::user_home(w, shards)].push(w);
    }
    for (to, watchers) in by_shard.into_iter().enumerate() {
        if !watchers.is_empty() {
            let frame = frame.clone();
            shard.send(to, ShardMsg::PresFanout { frame, watchers });
        }
    }
}

/// Forgets `user` if nothing is left to tell about it, and tells every
/// shard it is no longer active.
fn release_if_quiet(shard: &Shard, user: UserId) {
    if shard.state.borrow_mut().presence.release_if_quiet(user) {
        broadcast(shard, |_| ShardMsg::Active {
            user,
            active: false,
        });
    }
}

/// The dump of client `conn` of `watcher` has its room candidates: add
/// every contact (its home decides whether it is online, see
/// docs/architecture.md), drop those already sent, and ask each
/// candidate's home for its presence at this epoch.
fn dump_candidates(shard: &Shard, watcher: UserId, conn: ConnRef, room_users: &[UserId]) {
    let shards = shard.shards();
    let mut by_shard: Vec<Vec<UserId>> = vec![Vec::new(); shards];
    let epoch = {
        let mut st = shard.state.borrow_mut();
        let st = &mut *st;
        let Some(d) = st.dumps.get_mut(&conn) else {
            return;
        };
        let mut users: Vec<UserId> = room_users.to_vec();
        users.extend(st.relations.contacts_of(watcher));
        users.sort_unstable();
        users.dedup();
        if !d.sent.is_empty() {
            let sent: FastSet<UserId> = d.sent.iter().copied().collect();
            users.retain(|u| !sent.contains(u));
        }
        for u in users.into_iter().filter(|&u| u != watcher) {
            by_shard[route::user_home(u, shards)].push(u);
        }
        d.parts_left = by_shard.iter().filter(|v| !v.is_empty()).count();
        d.stale = false;
        if d.parts_left == 0 {
            None
        } else {
            Some(st.relations.epoch())
        }
    };
    let Some(epoch) = epoch else {
        let dump = shard.state.borrow_mut().dumps.remove(&conn);
        if let Some(dump) = dump {
            finish_dump(shard, watcher, conn, dump);
        }
        return;
    };
    for (to, users) in by_shard.into_iter().enumerate() {
        if !users.is_empty() {
            shard.send(
                to,
                ShardMsg::DumpQuery {
                    watcher,
                    conn,
                    epoch,
                    users,
                },
            );
        }
    }
}

/// One shard's part of a login dump arrived at the watcher's home.
fn dump_part(shard: &Shard, watcher: UserId, conn: ConnRef, entries: &[(UserId, u8)], stale: bool) {
    enum Next {
        Wait,
        Again,
        Finish(Dump),
    }
    let next = {
        let mut st = shard.state.borrow_mut();
        let Some(d) = st.dumps.get_mut(&conn) else {
            return;
        };
        d.parts_left -= 1;
        d.entries += entries.len() as u64;
        d.sent.extend(entries.iter().map(|&(u, _)| u));
        d.stale |= stale;
        if d.parts_left > 0 {
            Next::Wait
        } else if d.stale {
            Next::Again
        } else {
            st.dumps.remove(&conn).map_or(Next::Wait, Next::Finish)
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
    match next {
        Next::Wait => {}
        // A relation change came in between: gather the candidates again
        // (the entries sent stay: they were true then, and later changes
        // reach this client like any other).
        Next::Again => start_gather(shard, watcher, false, Some(conn), None),
        Next::Finish(dump) => finish_dump(shard, watcher, conn, dump),
    }
}

/// A refusal for `conn` ([`ShardMsg::Refused`]) waits for its login dump
/// (homed here) like any answer; given back when no dump is in progress
/// for it (a chatd connection never has one).
pub fn hold_for_dump(shard: &Shard, conn: ConnRef, notice: Notice) -> Option<Notice> {
    match shard.state.borrow_mut().dumps.get_mut(&conn) {
        Some(dump) => {
            dump.held.push(Held::Refused(notice));
            None
        }
        None => Some(notice),
    }
}

/// The client `conn` ended its stream during its login dump (homed here):
/// its echo ([`ShardMsg::Echoed`]) is sent when the dump ends, behind the
/// dump's last command. False when no dump is in progress for it.
pub fn echo_after_dump(shard: &Shard, conn: ConnRef) -> bool {
    match shard.state.borrow_mut().dumps.get_mut(&conn) {
        Some(dump) => {
            dump.echo = true;
            true
        }
        None => false,
    }
}

/// Ends a login dump with `OP_PRES 0 own_presence`, then applies the
/// OP_SETPRES commands that waited for it (and answers the refused
/// ones), in order.
fn finish_dump(shard: &Shard, user: UserId, conn: ConnRef, dump: Dump) {
    shard.metrics.login_dump_size.observe(dump.entries);
    let own = shard.state.borrow().presence.presence(user);
    send_pres(shard, &[conn], 0, own);
    for held in dump.held {
        match held {
            Held::SetPres(raw) => set_presence(shard, user, conn, raw),
            Held::Refused(notice) => conn::notify(shard, conn, notice),
        }
    }
    if dump.echo {
        shard.send(conn.shard(), ShardMsg::Echoed { conn });
    }
}

/// One OP_PRES frame from the shard's arena.
pub(super) fn pres_frame(shard: &Shard, user: UserId, presence: u8) -> Bytes {
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

/// A user's presence changed: tell its own clients but `skip` at once
/// (`OP_PRES 0`); its watchers are told by the gather that follows.
fn tell_own_clients(shard: &Shard, user: UserId, change: Change, skip: Option<ConnRef>) {
    if !change.changed() {
        return;
    }
    let own: Vec<ConnRef> = {
        let st = shard.state.borrow();
        // A client still in its login dump learns its own presence from
        // the dump's last command, which is read when the dump ends.
        st.presence
            .clients(user)
            .filter(|&c| Some(c) != skip && !st.dumps.contains_key(&c))
            .collect()
    };
    send_pres(shard, &own, 0, change.new);
}
