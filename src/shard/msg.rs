//! Messages between shards (and from the admin thread to shards). Every
//! piece of state has one owning shard (see [`super::route`]); anyone else
//! reaches it only through one of these.

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::admin::control::{RoomLive, UserLive};
use crate::core::pairset::PairSet;
use crate::core::relations::{FlipSets, ShardDelta};
use crate::core::room::NodeSlot;
use crate::ids::{ChatId, ClientId, UserId};
use crate::limits;
use crate::net::outbuf::Flush;
use chatd_proto::ErrorCode;

/// A connection, anywhere in the server: its shard, its slot in that
/// shard's connection slab, and the slot's generation (so a message for a
/// connection that closed never reaches the one that reused its slot; see
/// [`super::slots`]).
///
/// 8 bytes, as it was with a 16-bit generation: the shard (below
/// [`limits::SHARDS_MAX`], 10 bits) and the slot (below
/// [`limits::CONN_SLOTS_MAX`], 22 bits) share one word, and the 32-bit
/// generation takes the other. It sits in every recipient list, room and
/// timer entry, and in each connection's read task, whose size is budgeted
/// (`shard::driver`'s size test).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnRef {
    /// Shard (high bits) and slot (low [`SLOT_BITS`] bits).
    shard_slot: u32,
    /// Generation of the slot when the connection was made.
    gen: u32,
}

/// Bits of [`ConnRef`]'s word that hold the slot.
const SLOT_BITS: u32 = limits::CONN_SLOTS_MAX.trailing_zeros();

const _: () = {
    assert!(limits::CONN_SLOTS_MAX.is_power_of_two());
    assert!(limits::SHARDS_MAX.is_power_of_two());
    assert!(SLOT_BITS + limits::SHARDS_MAX.trailing_zeros() <= 32);
};

impl ConnRef {
    /// The connection in `slot` of `shard` with generation `gen`. The shard
    /// is below [`limits::SHARDS_MAX`] (the command line refuses more) and
    /// the slot below [`limits::CONN_SLOTS_MAX`] (the slab holds no more).
    pub fn new(shard: usize, slot: usize, gen: u32) -> Self {
        debug_assert!(shard < limits::SHARDS_MAX && slot < limits::CONN_SLOTS_MAX);
        ConnRef {
            shard_slot: ((shard as u32) << SLOT_BITS)
                | (slot as u32 & (limits::CONN_SLOTS_MAX as u32 - 1)),
            gen,
        }
    }

    /// Shard the connection lives on.
    pub fn shard(&self) -> usize {
        (self.shard_slot >> SLOT_BITS) as usize
    }

    /// Slot in the shard's connection slab.
    pub fn slot(&self) -> usize {
        (self.shard_slot & (limits::CONN_SLOTS_MAX as u32 - 1)) as usize
    }

    /// Generation of the slot when the connection was made.
    pub fn gen(&self) -> u32 {
        self.gen
    }
}

impl std::fmt::Debug for ConnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnRef")
            .field("shard", &self.shard())
            .field("slot", &self.slot())
            .field("gen", &self.gen)
            .finish()
    }
}

/// Something a room's or user's home shard tells one connection.
#[derive(Debug)]
pub enum Notice {
    /// The connection joined the room: send OP_JOIN then OP_IN_CALL flag.
    Joined { chat: ChatId, in_call: bool },
    /// The connection left (or was removed from) the room: send OP_LEAVE.
    Left { chat: ChatId },
    /// Send OP_ERROR (and close, if the code says so).
    Error {
        code: ErrorCode,
        opcode: u8,
        id: u64,
    },
    /// Several, in order: the refusals of one read that go through one
    /// home shard ([`ShardMsg::Refused`]), one message each way however
    /// many there are.
    Batch(Vec<Notice>),
}

/// What the cluster bridge hands a shard (cluster mode; docs/cluster.md).
#[derive(Debug)]
pub enum ClusterIn {
    /// To `chat`'s home: an `OP_RTMSG` from a client of another node.
    RtMsg {
        chat: ChatId,
        to_user: UserId,
        to_client: ClientId,
        frame: Bytes,
    },
    /// To `chat`'s home: node `node` has joined connections there now
    /// (`on`) or no more.
    Interest {
        chat: ChatId,
        node: NodeSlot,
        on: bool,
    },
    /// To `chat`'s home: node `node`'s users in the call.
    Calls {
        chat: ChatId,
        node: NodeSlot,
        users: Vec<UserId>,
    },
    /// To `user`'s home: node `node`'s value for `user` (5.2).
    Pres {
        user: UserId,
        node: NodeSlot,
        value: u8,
        user_set: bool,
    },
    /// To every shard: node `node` is gone; drop what it told.
    NodeGone { node: NodeSlot },
    /// To every shard: tell the bridge everything this node holds that
    /// other nodes keep (interest, call users, presence values).
    Snapshot,
}

/// A cross-shard message.
#[derive(Debug)]
pub enum ShardMsg {
    /// Does nothing (tests of the mesh).
    Nop,

    // ---- to a room's home shard ------------------------------------
    /// OP_JOIN from `conn`.
    Join {
        chat: ChatId,
        conn: ConnRef,
        user: UserId,
        client: ClientId,
    },
    /// OP_LEAVE from `conn`.
    Leave { chat: ChatId, conn: ConnRef },
    /// OP_RTMSG from `sender`; `frame` is the delivery, already encoded.
    RtMsg {
        chat: ChatId,
        sender: ConnRef,
        to_user: UserId,
        to_client: ClientId,
        frame: Bytes,
    },
    /// OP_IN_CALL from `conn`.
    InCall {
        chat: ChatId,
        conn: ConnRef,
        in_call: bool,
    },
    /// `conn` closed; it had joined `chats` (those homed on the receiver).
    ConnGone { conn: ConnRef, chats: Vec<ChatId> },

    // ---- to a connection's shard -----------------------------------
    /// Queue `frame` on every connection in `conns` (all on the receiver),
    /// to be written as `flush` says. `from` is the sending shard, whose
    /// pool the list goes back to.
    Deliver {
        frame: Bytes,
        conns: Vec<ConnRef>,
        from: u16,
        flush: Flush,
    },
    /// Tell one connection something.
    Notice { conn: ConnRef, notice: Notice },
    /// The peer of `conn` ended its stream: answer [`ShardMsg::Echoed`]
    /// to `conn`'s shard once what it sent before is handled (see
    /// [`super::conn::peer_finished`]).
    Echo { conn: ConnRef },
    /// The answer to [`ShardMsg::Echo`]: whatever the sender had for
    /// `conn` is on its way ahead of this.
    Echoed { conn: ConnRef },
    /// To the home shard of what a refused command of `conn` was for (its
    /// room, its user): `notice` (OP_ERRORs: `RATE_LIMITED`,
    /// `BAD_ADDRESS`; a read's refusals for one home in one
    /// [`Notice::Batch`]) goes to `conn` from there, behind that home's
    /// answers to the connection's earlier commands (a login dump in
    /// progress: after it), so a client gets its answers in the order of
    /// its commands (see [`super::input`]).
    Refused { conn: ConnRef, notice: Notice },

    // ---- to a user's home shard ------------------------------------
    /// A statusd client logged in with OP_HELLO's presence byte `raw`.
    PresHello {
        user: UserId,
        conn: ConnRef,
        raw: u8,
    },
    /// OP_SETPRES from a statusd client.
    PresSet {
        user: UserId,
        conn: ConnRef,
        raw: u8,
    },
    /// A statusd client closed.
    PresGone { user: UserId, conn: ConnRef },
    /// Send `frame` (an OP_PRES) to every statusd client of each of
    /// `watchers` (users homed on the receiver).
    PresFanout { frame: Bytes, watchers: Vec<UserId> },
    /// A new statusd client `conn` of `watcher` needs the presence of
    /// `users` (homed on the receiver) for its login dump, as of relation
    /// change `epoch`; answer with [`ShardMsg::DumpPart`] to `watcher`'s
    /// home shard.
    DumpQuery {
        watcher: UserId,
        conn: ConnRef,
        epoch: u64,
        users: Vec<UserId>,
    },
    /// Part of a login dump, on its way through the watcher's home shard
    /// (so that it is ordered with the presence changes that follow it).
    /// `stale`: the receiver of the query had applied a later relation
    /// change, so the dump's candidates must be gathered again.
    DumpPart {
        watcher: UserId,
        conn: ConnRef,
        entries: Vec<(UserId, u8)>,
        stale: bool,
    },
    /// Apply the presence updates a relation change causes: each
    /// `(about, to, visible)` (`about` homed on the receiver): `to` now
    /// sees `about` (send its presence if not 0) or no longer does (send
    /// 0 if `to` may be showing something else).
    Emit { pairs: Vec<(UserId, UserId, bool)> },

    // ---- to every shard, about relations and active users ----------
    /// `user` became active (`true`) or stopped being active; sent by its
    /// home to every shard, itself included.
    Active { user: UserId, active: bool },
    /// Gather the active members of `user`'s rooms homed on the receiver
    /// and answer [`ShardMsg::Gathered`] to `user`'s home.
    Gather { id: u64, user: UserId },
    /// One shard's part of gather `id`, with the epoch it was read at.
    Gathered {
        id: u64,
        epoch: u64,
        users: Vec<UserId>,
    },
    /// Compute the [`FlipSets`] of `users` (homed on shard `from`) for
    /// relation change `epoch` and answer [`ShardMsg::FlipPart`] to `from`.
    FlipGather {
        epoch: u64,
        from: u16,
        users: Vec<UserId>,
    },
    /// One shard's [`FlipSets`], per user.
    FlipPart {
        epoch: u64,
        sets: Vec<(UserId, FlipSets)>,
    },

    // ---- from the admin thread -------------------------------------
    /// Start-up: this shard's part of the stored relations.
    Install {
        memberships: PairSet,
        contacts: PairSet,
        done: oneshot::Sender<Vec<UserId>>,
    },
    /// Round 1 of relation change `epoch`: apply this shard's part, then
    /// answer (once what it sent is on its way) with the active users it
    /// changed relations of.
    Apply {
        epoch: u64,
        delta: ShardDelta,
        done: oneshot::Sender<Vec<UserId>>,
    },
    /// Round 2 of relation change `epoch`: for each user of `touched`
    /// homed here and active, compute what the change showed and hid, and
    /// send those presence updates; then answer.
    Flips {
        epoch: u64,
        touched: std::sync::Arc<Vec<UserId>>,
        done: oneshot::Sender<Vec<UserId>>,
    },
    /// Round 2 of the last relation change is over on every shard.
    RoundDone,
    /// The rooms homed here that `user` is a member of.
    QueryRooms {
        user: UserId,
        reply: oneshot::Sender<Vec<ChatId>>,
    },
    /// Live state of a room homed here.
    QueryRoom {
        chat: ChatId,
        reply: oneshot::Sender<RoomLive>,
    },
    /// Live state of a user homed here.
    QueryUser {
        user: UserId,
        reply: oneshot::Sender<UserLive>,
    },
    /// From the cluster bridge.
    Cluster(ClusterIn),
    /// Stop accepting; send OP_ERROR SHUTTING_DOWN to every connection,
    /// flush and close them within `deadline_ms`.
    Shutdown { deadline_ms: u64 },
}

impl ShardMsg {
    /// The bytes this message holds that count against its receiver's
    /// inbox budget (see [`super::budget`]): an OP_RTMSG delivery's frame,
    /// and a fan-out's frame plus its list (a frame shared by the fan-outs
    /// to several shards counts in each). Other messages are small and
    /// bounded by the commands that cause them (rate-limited, or one per
    /// connection), and count nothing.
    pub fn queued_bytes(&self) -> usize {
        match self {
            ShardMsg::RtMsg { frame, .. } => frame.len(),
            ShardMsg::Deliver { frame, conns, .. } => {
                frame.len() + std::mem::size_of_val(conns.as_slice())
            }
            _ => 0,
        }
    }

    /// Whether the message counts against its receiver's budget from when
    /// it is queued on the sending shard ([`super::Shard::send`]) rather
    /// than from when the outbox is flushed to the mesh. An OP_RTMSG does:
    /// the rest of the read it came in is checked against it. A fan-out
    /// does not: an inbox batch of up to 512 messages is handled before
    /// its outbox leaves, and fan-outs waiting there must not make the
    /// receiver look full (pausing every sender at the hard limit) while
    /// its own inbox is empty.
    pub fn counts_when_queued(&self) -> bool {
        matches!(self, ShardMsg::RtMsg { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::ConnRef;
    use crate::limits::{CONN_SLOTS_MAX, SHARDS_MAX};

    #[test]
    fn a_conn_ref_keeps_shard_slot_and_generation_in_8_bytes() {
        for (shard, slot, gen) in [
            (0, 0, 0),
            (1, 77, 1 << 16),
            (SHARDS_MAX - 1, CONN_SLOTS_MAX - 1, u32::MAX),
            (5, 1 << 21, 0xFFFF),
        ] {
            let c = ConnRef::new(shard, slot, gen);
            assert_eq!((c.shard(), c.slot(), c.gen()), (shard, slot, gen));
        }
        // Generations that differ only above 16 bits are different refs.
        assert_ne!(ConnRef::new(0, 5, 1), ConnRef::new(0, 5, 1 + (1 << 16)));
        assert_eq!(std::mem::size_of::<ConnRef>(), 8);
    }
}
