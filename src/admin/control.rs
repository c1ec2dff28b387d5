//! The admin API's view of the running shards: the one seam between the
//! HTTP side (its own thread and runtime) and the shards.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::ids::ChatId;
use crate::ids::UserId;
use crate::store::{NetChange, Op};

/// A boxed `Send` future, as the HTTP handlers need.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Live (in-memory, per-connection) state of a room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomLive {
    /// Connections joined to the room, all shards together.
    pub joined_clients: u64,
    /// The room's in-call flag.
    pub in_call: bool,
    /// Distinct users in the call, ascending.
    pub call_users: Vec<UserId>,
}

/// Live state of a user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserLive {
    /// Combined presence (0 with no statusd client).
    pub presence: u8,
    /// Connected statusd clients.
    pub statusd_clients: u64,
    /// Connected (logged-in) chatd clients.
    pub chatd_clients: u64,
}

/// The presence updates an applied relation change causes (round 2):
/// started when first polled, resolves once they are computed and sent.
/// The write is answered after it, so a client acting on the answer gets
/// none of them on top of what its own login saw.
pub struct Pushes(pub BoxFuture<()>);

/// A shard did not apply a change or answer a query: its thread is gone
/// (the message to it was refused, or it dropped the acknowledgement).
/// A panic ends the process ([`crate::fatal`]), so this is what the API
/// may see just before that, or in a build without the hook; it answers
/// 500, never success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} is gone")]
pub struct ShardGone(pub usize);

/// What the admin API needs from the shards.
pub trait ShardControl: Send + Sync + 'static {
    /// Applies a net relation change (already durable) to the live
    /// shards. Resolves once every shard has applied its part (a command
    /// a shard handles from then on sees the change); its output,
    /// [`Pushes`], resolves once the presence updates the change causes
    /// are computed and sent, and the admin call is answered after that.
    /// Changes are applied one at a time: the caller awaits the pushes
    /// before applying the next.
    /// [`ShardGone`] when a shard did not acknowledge its part.
    fn apply(&self, change: Arc<NetChange>) -> BoxFuture<Result<Pushes, ShardGone>>;
    /// The room's live state, from its home shard.
    fn room_live(&self, chat: ChatId) -> BoxFuture<Result<RoomLive, ShardGone>>;
    /// The user's live state, from its home shard.
    fn user_live(&self, user: UserId) -> BoxFuture<Result<UserLive, ShardGone>>;
    /// The rooms `user` is a member of, ascending (from the shards, which
    /// hold the memberships).
    fn user_rooms(&self, user: UserId) -> BoxFuture<Result<Vec<ChatId>, ShardGone>>;
    /// All metrics in the Prometheus text format.
    fn metrics_text(&self) -> String;
}

/// Why a relation write through the cluster's log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// NATS (or JetStream) cannot take the write now: nothing changed
    /// (protocol 10: 503).
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
}

/// Cluster mode: where relation writes go instead of the local store
/// (docs/cluster.md, "Relations"). The log makes the write durable, and
/// resolves once this node applied it (through [`ShardControl::apply`],
/// like every node does).
pub trait RelationLog: Send + Sync + 'static {
    /// Writes `ops` (validated) as one change.
    fn write(&self, ops: Vec<Op>) -> BoxFuture<Result<(), LogError>>;
}
