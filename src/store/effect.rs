//! What a relation change means for the live shards.
//!
//! The admin API changes the durable relations, then hands the shards the
//! effects of the change. Each effect goes to the one shard that owns the
//! state it touches (see `shard::route`), so shards never read relations
//! they do not own.

use crate::ids::{ChatId, UserId};

/// One effect of a relation change on live state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelationEffect {
    /// `user` became a member of `chat`. Goes to the room's home shard.
    MemberAdded { chat: ChatId, user: UserId },
    /// `user` stopped being a member of `chat`: the room's home shard sends
    /// OP_LEAVE to the user's joined connections and drops them from the
    /// call. Goes to the room's home shard.
    MemberRemoved { chat: ChatId, user: UserId },
    /// The number of relations (contact: 1, each shared room: 1) through
    /// which `watcher` may see `user` changed by `delta`. Goes to `user`'s
    /// home shard. Visibility is symmetric, so every pair change produces
    /// two of these, one per direction.
    Visibility {
        user: UserId,
        watcher: UserId,
        delta: i32,
    },
}

impl RelationEffect {
    /// The key whose home shard applies this effect: a room's chatid or a
    /// user's userid (see `shard::route`).
    pub fn route_key(&self) -> RouteKey {
        match *self {
            RelationEffect::MemberAdded { chat, .. }
            | RelationEffect::MemberRemoved { chat, .. } => RouteKey::Room(chat),
            RelationEffect::Visibility { user, .. } => RouteKey::User(user),
        }
    }
}

/// What decides an effect's shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKey {
    /// The room's home shard.
    Room(ChatId),
    /// The user's home shard.
    User(UserId),
}
