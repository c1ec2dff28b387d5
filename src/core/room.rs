//! Rooms homed on one shard: the connections joined to them, the call
//! participants and the in-call flag (protocol sections 4.2-4.4). Who is a
//! member is the shard's relation index ([`crate::core::relations`]); the
//! caller checks it before a join and reports lost memberships.
//!
//! Owns the call heartbeat timeouts, on its own [`TimerWheel`]. A heartbeat
//! only records `last_beat_ms` (O(1), no wheel operation, no allocation);
//! when a participant's timer fires it is re-armed at its deadline if a
//! beat came since, else the participant leaves the call. So a drop is
//! noticed at its exact deadline by the first `poll_timeouts` after it.
//! The deadline is `last_beat_ms + call_timeout_ms + 1` (`due_ms`):
//! the clock is in whole milliseconds, rounded down, so a beat stamped `t`
//! came in `[t, t + 1)`, and only from `t + call_timeout_ms + 1` has the
//! participant surely been silent for the whole timeout.
//!
//! Connections are opaque handles `H` chosen by the server. This module
//! never sends anything: it pushes [`RoomOutput`]s for the caller to encode.
//!
//! In a cluster (docs/cluster.md), the rooms also hold what other nodes
//! told about them ([`Rooms::enable_cluster`]): which nodes have joined
//! connections to a room ("interest") and each node's users in its call;
//! the flag counts distinct users over this node and those. What other
//! nodes must hear (this node's interest and call users changed) is
//! queued as [`ClusterEvent`]s for the caller.
//!
//! Invariants (checked by [`Rooms::invariants`] in tests):
//! - the per-user index lists exactly the joined connections;
//! - call participants are joined connections, each with one live timer;
//! - `flag == (distinct users in the call, this node's and other nodes',
//!   >= 2)`;
//! - a room with no joined connection does not exist (so a room costs
//!   nothing here until someone joins it).

use crate::ids::FastMap;
use crate::ids::{ChatId, ClientId, UserId};
use crate::limits::{TIMER_SLOTS, TIMER_TICK_MS};
use crate::timer::{TimerKey, TimerWheel};
use std::fmt::Debug;
use std::hash::Hash;

/// What the caller must send after a room operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomOutput<H> {
    /// Send `OP_JOIN chat` then `OP_IN_CALL chat in_call` to `conn`.
    Joined {
        conn: H,
        chat: ChatId,
        in_call: bool,
    },
    /// Send `OP_ERROR NOT_MEMBER` (about `chat`) to `conn`.
    NotMember { conn: H, chat: ChatId },
    /// Send `OP_LEAVE chat` to `conn`: the answer to its leave, or it was
    /// removed because its user lost membership or the room was deleted.
    Left { conn: H, chat: ChatId },
    /// Send `OP_IN_CALL chat in_call` to every connection in
    /// [`Rooms::joined`]`(chat)` (possibly none, when the room emptied).
    FlagChanged { chat: ChatId, in_call: bool },
}

/// What other nodes of a cluster must be told about a room homed here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// This node has joined connections to `chat` now (`on`) or no more.
    Interest { chat: ChatId, on: bool },
    /// This node's set of users in `chat`'s call changed.
    CallUsers { chat: ChatId },
}

/// A node of the cluster, by its slot (docs/cluster.md).
pub type NodeSlot = u16;

/// What the other nodes told about the rooms homed here (cluster mode).
#[derive(Debug, Default)]
struct ClusterRooms {
    /// Rooms some other node has joined connections to, and which nodes.
    interested: FastMap<ChatId, Vec<NodeSlot>>,
    /// Each other node's users in a room's call (non-empty sets only).
    calls: FastMap<ChatId, Vec<(NodeSlot, Vec<UserId>)>>,
    /// Queued for the caller ([`Rooms::take_cluster_events`]).
    events: Vec<ClusterEvent>,
}

impl ClusterRooms {
    /// The other nodes' call users of `chat`, distinct.
    fn remote_call_users(&self, chat: ChatId) -> Vec<UserId> {
        let mut users: Vec<UserId> = self
            .calls
            .get(&chat)
            .into_iter()
            .flat_map(|v| v.iter().flat_map(|(_, u)| u.iter().copied()))
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }
}

/// The connection has not joined the room (`OP_ERROR NOT_JOINED`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection has not joined the room")]
pub struct NotJoined;

/// A room's live state, for the admin API (`GET /v1/rooms/{chatid}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomLiveState {
    pub joined_clients: u64,
    pub in_call: bool,
    /// Users with at least one connection in the call, ascending, distinct.
    pub call_users: Vec<UserId>,
}

/// One joined connection.
#[derive(Debug)]
struct Joined {
    user: UserId,
    /// For `OP_RTMSG` addressed to one client.
    client: ClientId,
    /// `Some` while this connection is in the room's call.
    call: Option<Participant>,
}

#[derive(Debug)]
struct Participant {
    /// Last `OP_IN_CALL 1`; the timeout counts from here.
    last_beat_ms: u64,
    /// The one live wheel entry for this participant.
    timer: TimerKey,
}

/// A user's joined connections in one room: the per-user index that makes
/// user- and client-addressed messages cost O(that user's devices).
#[derive(Debug)]
struct UserConns<H> {
    conns: Vec<H>,
    /// How many of `conns` are in the call: the user counts once in
    /// `call_users` while this is above zero.
    in_call: u32,
}

#[derive(Debug)]
struct Room<H> {
    joined: FastMap<H, Joined>,
    by_user: FastMap<UserId, UserConns<H>>,
    /// Distinct users with at least one connection in the call.
    call_users: u32,
    /// The flag last announced: `call_users >= 2` (with other nodes'
    /// users, in a cluster).
    flag: bool,
    /// `call_users`' set changed since the last `after_change` (cluster
    /// mode tells the other nodes).
    calls_changed: bool,
}

impl<H> Default for Room<H> {
    fn default() -> Self {
        Room {
            joined: FastMap::default(),
            by_user: FastMap::default(),
            call_users: 0,
            flag: false,
            calls_changed: false,
        }
    }
}

/// The rooms of one shard. See the module doc.
#[derive(Debug)]
pub struct Rooms<H> {
    rooms: FastMap<ChatId, Room<H>>,
    /// Call heartbeat timeouts: `(room, connection)`.
    timers: TimerWheel<(ChatId, H)>,
    call_timeout_ms: u64,
    /// Rooms whose flag is 1 (a gauge for metrics).
    rooms_in_call: usize,
    /// Scratch for `poll_timeouts`, kept to reuse its allocation.
    fired: Vec<(ChatId, H)>,
    /// Cluster mode only: the other nodes' interest and call users.
    cluster: Option<Box<ClusterRooms>>,
}

impl<H: Copy + Eq + Hash + Debug> Rooms<H> {
    /// No rooms; call participants time out after `call_timeout_ms` without
    /// a heartbeat.
    pub fn new(call_timeout_ms: u64, now_ms: u64) -> Self {
        Rooms {
            rooms: FastMap::default(),
            timers: TimerWheel::new(TIMER_TICK_MS, TIMER_SLOTS, now_ms),
            call_timeout_ms,
            rooms_in_call: 0,
            fired: Vec::new(),
            cluster: None,
        }
    }

    /// Cluster mode: keep the other nodes' interest and call users, and
    /// queue [`ClusterEvent`]s.
    pub fn enable_cluster(&mut self) {
        self.cluster = Some(Box::default());
    }

    /// What other nodes must be told since the last call (cluster mode).
    pub fn take_cluster_events(&mut self) -> Vec<ClusterEvent> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.events))
            .unwrap_or_default()
    }

    /// The other nodes with joined connections to `chat` (where a message
    /// to it must also go); empty for none. One lookup in an empty map
    /// for a room whose clients are all on this node.
    pub fn remote_nodes(&self, chat: ChatId) -> &[NodeSlot] {
        self.cluster
            .as_ref()
            .and_then(|c| c.interested.get(&chat))
            .map_or(&[], Vec::as_slice)
    }

    /// Node `node` has joined connections to `chat` now (`on`) or no more
    /// (its call users there are then dropped). True when `on` is news.
    pub fn set_remote_interest(
        &mut self,
        chat: ChatId,
        node: NodeSlot,
        on: bool,
        out: &mut Vec<RoomOutput<H>>,
    ) -> bool {
        let Some(c) = self.cluster.as_mut() else {
            return false;
        };
        if on {
            let nodes = c.interested.entry(chat).or_default();
            if nodes.contains(&node) {
                return false;
            }
            nodes.push(node);
            return true;
        }
        if let Some(nodes) = c.interested.get_mut(&chat) {
            nodes.retain(|&n| n != node);
            if nodes.is_empty() {
                c.interested.remove(&chat);
            }
        }
        self.set_remote_calls(chat, node, Vec::new(), out);
        false
    }

    /// Node `node`'s users in `chat`'s call are now `users`.
    pub fn set_remote_calls(
        &mut self,
        chat: ChatId,
        node: NodeSlot,
        mut users: Vec<UserId>,
        out: &mut Vec<RoomOutput<H>>,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        users.sort_unstable();
        users.dedup();
        let sets = c.calls.entry(chat).or_default();
        sets.retain(|(n, _)| *n != node);
        if !users.is_empty() {
            sets.push((node, users));
        }
        if sets.is_empty() {
            c.calls.remove(&chat);
        }
        self.after_change(chat, out);
    }

    /// Node `node` is gone: everything it told is dropped (flags
    /// recomputed).
    pub fn drop_node(&mut self, node: NodeSlot, out: &mut Vec<RoomOutput<H>>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.interested.retain(|_, nodes| {
            nodes.retain(|&n| n != node);
            !nodes.is_empty()
        });
        let chats: Vec<ChatId> = c
            .calls
            .iter()
            .filter(|(_, sets)| sets.iter().any(|(n, _)| *n == node))
            .map(|(&chat, _)| chat)
            .collect();
        for chat in chats {
            self.set_remote_calls(chat, node, Vec::new(), out);
        }
    }

    /// This node's users in `chat`'s call, ascending.
    pub fn local_call_users(&self, chat: ChatId) -> Vec<UserId> {
        let mut users: Vec<UserId> = self
            .rooms
            .get(&chat)
            .into_iter()
            .flat_map(|r| r.by_user.iter().filter(|(_, uc)| uc.in_call > 0))
            .map(|(&u, _)| u)
            .collect();
        users.sort_unstable();
        users
    }

    /// Rooms with joined connections here.
    pub fn local_rooms(&self) -> impl Iterator<Item = ChatId> + '_ {
        self.rooms.keys().copied()
    }

    /// An `OP_RTMSG` from a client of another node: the recipients here by
    /// the same addressing as [`Rooms::recipients`] (the sender is not
    /// here, so nobody is left out as the sender).
    pub fn remote_recipients(
        &self,
        chat: ChatId,
        receiver_userid: UserId,
        receiver_clientid: ClientId,
        out: &mut Vec<H>,
    ) {
        let Some(room) = self.rooms.get(&chat) else {
            return;
        };
        match (receiver_userid, receiver_clientid) {
            (0, 0) => out.extend(room.joined.keys().copied()),
            (0, _) => {}
            (user, client) => {
                let Some(uc) = room.by_user.get(&user) else {
                    return;
                };
                let wanted =
                    |c: &H| client == 0 || room.joined.get(c).is_some_and(|j| j.client == client);
                out.extend(uc.conns.iter().copied().filter(wanted));
            }
        }
    }

    /// `user` lost its membership of `chat`: its joined connections leave
    /// the room (each gets `Left`) and the call.
    pub fn remove_member(&mut self, chat: ChatId, user: UserId, out: &mut Vec<RoomOutput<H>>) {
        let Some(room) = self.rooms.get_mut(&chat) else {
            return;
        };
        if let Some(uc) = room.by_user.remove(&user) {
            if uc.in_call > 0 {
                room.call_users -= 1;
                room.calls_changed = true;
            }
            for conn in uc.conns {
                if let Some(j) = room.joined.remove(&conn) {
                    debug_assert_eq!(j.user, user);
                    cancel_call_timer(&mut self.timers, j.call);
                }
                out.push(RoomOutput::Left { conn, chat });
            }
        }
        self.after_change(chat, out);
    }

    /// `OP_JOIN`: `Joined` with the current flag if `member` (the caller
    /// asked the relation index whether `user` is a member of `chat`;
    /// again, without a duplicate entry, when already joined), else
    /// `NotMember`.
    pub fn join(
        &mut self,
        chat: ChatId,
        conn: H,
        user: UserId,
        client: ClientId,
        member: bool,
        out: &mut Vec<RoomOutput<H>>,
    ) {
        if !member {
            out.push(RoomOutput::NotMember { conn, chat });
            return;
        }
        if !self.rooms.contains_key(&chat) {
            let mut room = Room::default();
            if let Some(c) = self.cluster.as_mut() {
                // Other nodes' call users count from the first join.
                room.flag = c.remote_call_users(chat).len() >= 2;
                self.rooms_in_call += usize::from(room.flag);
                c.events.push(ClusterEvent::Interest { chat, on: true });
            }
            self.rooms.insert(chat, room);
        }
        let Some(room) = self.rooms.get_mut(&chat) else {
            return;
        };
        if let Some(j) = room.joined.get(&conn) {
            debug_assert_eq!(j.user, user, "one connection, two users");
        } else {
            room.joined.insert(
                conn,
                Joined {
                    user,
                    client,
                    call: None,
                },
            );
            room.by_user
                .entry(user)
                .or_insert_with(|| UserConns {
                    conns: Vec::new(),
                    in_call: 0,
                })
                .conns
                .push(conn);
        }
        out.push(RoomOutput::Joined {
            conn,
            chat,
            in_call: room.flag,
        });
    }

    /// `OP_LEAVE`: always `Left` (even if not joined), then `FlagChanged` if
    /// the call lost a user and the flag dropped.
    pub fn leave(&mut self, chat: ChatId, conn: H, out: &mut Vec<RoomOutput<H>>) {
        out.push(RoomOutput::Left { conn, chat });
        if let Some(room) = self.rooms.get_mut(&chat) {
            remove_conn(room, &mut self.timers, conn);
            self.after_change(chat, out);
        }
    }

    /// The connection closed: it leaves every room in `rooms_hint` (the rooms
    /// it joined on this shard, which the caller tracks) without a `Left`;
    /// may emit `FlagChanged`.
    pub fn disconnect(&mut self, conn: H, rooms_hint: &[ChatId], out: &mut Vec<RoomOutput<H>>) {
        for &chat in rooms_hint {
            if let Some(room) = self.rooms.get_mut(&chat) {
                remove_conn(room, &mut self.timers, conn);
                self.after_change(chat, out);
            }
        }
    }

    /// `OP_RTMSG`: pushes the recipients (section 4.3, sender excluded) to
    /// `out`. O(recipients) for user- or client-addressed messages, O(joined)
    /// for a room broadcast. `receiver_userid` 0 with a non-zero client is
    /// rejected by the caller (`BAD_ADDRESS`); here it reaches nobody.
    pub fn recipients(
        &self,
        chat: ChatId,
        sender: H,
        receiver_userid: UserId,
        receiver_clientid: ClientId,
        out: &mut Vec<H>,
    ) -> Result<(), NotJoined> {
        let room = self.rooms.get(&chat).ok_or(NotJoined)?;
        if !room.joined.contains_key(&sender) {
            return Err(NotJoined);
        }
        match (receiver_userid, receiver_clientid) {
            (0, 0) => out.extend(room.joined.keys().copied().filter(|&c| c != sender)),
            (0, _) => debug_assert!(false, "BAD_ADDRESS must be rejected by the caller"),
            (user, client) => {
                let Some(uc) = room.by_user.get(&user) else {
                    return Ok(());
                };
                let wanted = |c: &H| {
                    *c != sender
                        && (client == 0 || room.joined.get(c).is_some_and(|j| j.client == client))
                };
                out.extend(uc.conns.iter().copied().filter(wanted));
            }
        }
        Ok(())
    }

    /// `OP_IN_CALL` from `conn`: `true` is a heartbeat (joining the call if
    /// not in it), `false` leaves the call. `NotJoined` if not joined.
    pub fn in_call(
        &mut self,
        chat: ChatId,
        conn: H,
        in_call: bool,
        now_ms: u64,
        out: &mut Vec<RoomOutput<H>>,
    ) -> Result<(), NotJoined> {
        let room = self.rooms.get_mut(&chat).ok_or(NotJoined)?;
        let j = room.joined.get_mut(&conn).ok_or(NotJoined)?;
        match (&mut j.call, in_call) {
            (Some(p), true) => {
                // The hot path: no wheel operation (see the module doc).
                p.last_beat_ms = now_ms;
                return Ok(());
            }
            (None, false) => return Ok(()),
            (None, true) => {
                let timer = self
                    .timers
                    .insert(due_ms(now_ms, self.call_timeout_ms), (chat, conn));
                j.call = Some(Participant {
                    last_beat_ms: now_ms,
                    timer,
                });
                let user = j.user;
                join_call_count(room, user);
            }
            (Some(_), false) => {
                let user = j.user;
                cancel_call_timer(&mut self.timers, j.call.take());
                leave_call_count(room, user);
            }
        }
        self.after_change(chat, out);
        Ok(())
    }

    /// Drops call participants whose heartbeat is older than the call
    /// timeout; re-arms the timers of those that beat since.
    pub fn poll_timeouts(&mut self, now_ms: u64, out: &mut Vec<RoomOutput<H>>) {
        let mut fired = std::mem::take(&mut self.fired);
        self.timers.poll_expired(now_ms, &mut fired);
        for (chat, conn) in fired.drain(..) {
            let Some(room) = self.rooms.get_mut(&chat) else {
                debug_assert!(false, "call timer of a freed room");
                continue;
            };
            let Some(j) = room.joined.get_mut(&conn) else {
                debug_assert!(false, "call timer of a connection not joined");
                continue;
            };
            let Some(p) = j.call.as_mut() else {
                debug_assert!(false, "call timer of a connection not in the call");
                continue;
            };
            let due_ms = due_ms(p.last_beat_ms, self.call_timeout_ms);
            if due_ms > now_ms {
                p.timer = self.timers.insert(due_ms, (chat, conn));
                continue;
            }
            // The timer just fired: its key is already stale, nothing to cancel.
            j.call = None;
            let user = j.user;
            leave_call_count(room, user);
            self.after_change(chat, out);
        }
        self.fired = fired;
    }

    /// Earliest time `poll_timeouts` has work; `None` with no participant.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.next_deadline()
    }

    /// Connections joined to the room (for broadcasting `FlagChanged`), in
    /// any order.
    pub fn joined(&self, chat: ChatId) -> impl Iterator<Item = H> + '_ {
        self.rooms
            .get(&chat)
            .into_iter()
            .flat_map(|r| r.joined.keys().copied())
    }

    /// The room is deleted: every member removed, `Left` to every joined
    /// connection, `FlagChanged` (to nobody left) if the flag was 1.
    pub fn delete_room(&mut self, chat: ChatId, out: &mut Vec<RoomOutput<H>>) {
        let Some(room) = self.rooms.remove(&chat) else {
            return;
        };
        if let Some(c) = self.cluster.as_mut() {
            if room.call_users > 0 {
                c.events.push(ClusterEvent::CallUsers { chat });
            }
            c.events.push(ClusterEvent::Interest { chat, on: false });
        }
        for (conn, j) in room.joined {
            cancel_call_timer(&mut self.timers, j.call);
            out.push(RoomOutput::Left { conn, chat });
        }
        if room.flag {
            self.rooms_in_call -= 1;
            out.push(RoomOutput::FlagChanged {
                chat,
                in_call: false,
            });
        }
    }

    /// Live state for the admin API; all zero for an unknown room.
    pub fn live(&self, chat: ChatId) -> RoomLiveState {
        let Some(room) = self.rooms.get(&chat) else {
            return RoomLiveState::default();
        };
        let mut call_users: Vec<UserId> = room
            .by_user
            .iter()
            .filter(|(_, uc)| uc.in_call > 0)
            .map(|(&u, _)| u)
            .collect();
        if let Some(c) = &self.cluster {
            call_users.extend(c.remote_call_users(chat));
            call_users.sort_unstable();
            call_users.dedup();
        }
        call_users.sort_unstable();
        RoomLiveState {
            joined_clients: room.joined.len() as u64,
            in_call: room.flag,
            call_users,
        }
    }

    /// Rooms whose flag is 1.
    pub fn rooms_in_call(&self) -> usize {
        self.rooms_in_call
    }

    /// Rooms held (with joined connections): shows that empty rooms are
    /// freed.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// After any change to `chat`: announce a flag change, free the room if
    /// it is empty.
    fn after_change(&mut self, chat: ChatId, out: &mut Vec<RoomOutput<H>>) {
        let Some(room) = self.rooms.get_mut(&chat) else {
            return;
        };
        let mut flag = room.call_users >= 2;
        if let Some(c) = self.cluster.as_mut() {
            if std::mem::take(&mut room.calls_changed) {
                c.events.push(ClusterEvent::CallUsers { chat });
            }
            // Distinct users over every node: the other nodes' users not
            // in the call here too.
            let remote = c.remote_call_users(chat);
            let extra = remote
                .iter()
                .filter(|u| room.by_user.get(u).is_none_or(|uc| uc.in_call == 0))
                .count() as u32;
            flag = !room.joined.is_empty() && room.call_users + extra >= 2;
            if room.joined.is_empty() {
                c.events.push(ClusterEvent::Interest { chat, on: false });
            }
        }
        if flag != room.flag {
            room.flag = flag;
            if flag {
                self.rooms_in_call += 1;
            } else {
                self.rooms_in_call -= 1;
            }
            out.push(RoomOutput::FlagChanged {
                chat,
                in_call: flag,
            });
        }
        if room.joined.is_empty() {
            debug_assert!(!room.flag && room.by_user.is_empty());
            self.rooms.remove(&chat);
        }
    }

    /// Checks every invariant of the module doc. O(everything); for tests.
    pub fn invariants(&self) {
        let mut participants = 0;
        let mut in_call_rooms = 0;
        for (chat, room) in &self.rooms {
            assert!(!room.joined.is_empty(), "room {chat} leaked");
            let mut indexed = 0;
            let mut call_users = 0;
            for (user, uc) in &room.by_user {
                assert!(!uc.conns.is_empty(), "empty per-user entry");
                let mut in_call = 0;
                for c in &uc.conns {
                    let j = room.joined.get(c).expect("indexed connection is joined");
                    assert_eq!(j.user, *user);
                    in_call += u32::from(j.call.is_some());
                }
                assert_eq!(in_call, uc.in_call, "in-call count of user {user}");
                call_users += u32::from(in_call > 0);
                indexed += uc.conns.len();
            }
            assert_eq!(indexed, room.joined.len(), "per-user index of {chat}");
            assert_eq!(call_users, room.call_users);
            if self.cluster.is_none() {
                assert_eq!(room.flag, call_users >= 2);
            }
            in_call_rooms += usize::from(room.flag);
            participants += room.joined.values().filter(|j| j.call.is_some()).count();
        }
        assert_eq!(in_call_rooms, self.rooms_in_call);
        assert_eq!(participants, self.timers.len(), "one timer per participant");
        self.timers.invariants();
    }
}

/// Removes `conn` from the room (and its call) if joined; no output.
fn remove_conn<H: Copy + Eq + Hash>(
    room: &mut Room<H>,
    timers: &mut TimerWheel<(ChatId, H)>,
    conn: H,
) {
    let Some(j) = room.joined.remove(&conn) else {
        return;
    };
    let in_call = j.call.is_some();
    cancel_call_timer(timers, j.call);
    let Some(uc) = room.by_user.get_mut(&j.user) else {
        debug_assert!(false, "joined connection missing from the per-user index");
        return;
    };
    if let Some(pos) = uc.conns.iter().position(|&c| c == conn) {
        uc.conns.swap_remove(pos);
    }
    if in_call {
        leave_call_count(room, j.user);
    }
    if room
        .by_user
        .get(&j.user)
        .is_some_and(|uc| uc.conns.is_empty())
    {
        room.by_user.remove(&j.user);
    }
}

fn cancel_call_timer<H>(timers: &mut TimerWheel<(ChatId, H)>, call: Option<Participant>) {
    if let Some(p) = call {
        let cancelled = timers.cancel(p.timer);
        debug_assert!(cancelled.is_some(), "participant without a live timer");
    }
}

/// One more of `user`'s connections is in the call.
fn join_call_count<H>(room: &mut Room<H>, user: UserId) {
    if let Some(uc) = room.by_user.get_mut(&user) {
        uc.in_call += 1;
        if uc.in_call == 1 {
            room.call_users += 1;
            room.calls_changed = true;
        }
    } else {
        debug_assert!(false, "call participant missing from the per-user index");
    }
}

/// One fewer of `user`'s connections is in the call.
fn leave_call_count<H>(room: &mut Room<H>, user: UserId) {
    if let Some(uc) = room.by_user.get_mut(&user) {
        debug_assert!(uc.in_call > 0, "in-call count underflow");
        uc.in_call = uc.in_call.saturating_sub(1);
        if uc.in_call == 0 {
            debug_assert!(room.call_users > 0, "call user count underflow");
            room.call_users = room.call_users.saturating_sub(1);
            room.calls_changed = true;
        }
    } else {
        debug_assert!(false, "call participant missing from the per-user index");
    }
}

/// When a participant whose last beat was stamped `last_beat_ms` has
/// been silent for the whole call timeout (see the module doc).
fn due_ms(last_beat_ms: u64, call_timeout_ms: u64) -> u64 {
    last_beat_ms
        .saturating_add(call_timeout_ms)
        .saturating_add(1)
}

#[cfg(test)]
mod tests;
