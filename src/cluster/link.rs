//! The shards' way to the cluster bridge ([`ClusterLink`]) and what they
//! send it ([`ToBridge`]). A leaf: the shards import it, the bridge
//! imports the shards.
//!
//! Sending is a push on an unbounded channel (no system call while the
//! bridge is busy, one eventfd write to wake it): a shard never waits for
//! NATS.

use bytes::Bytes;

use crate::core::room::NodeSlot;
use crate::ids::{ChatId, ClientId, UserId};

/// What a shard tells the cluster (docs/cluster.md, "Subjects").
#[derive(Debug)]
pub enum ToBridge {
    /// This node has joined connections to `chat` now (`on`) or no more:
    /// tell every node.
    Interest { chat: ChatId, on: bool },
    /// A local client's `OP_RTMSG` in `chat` (the delivery frame, already
    /// encoded), for `nodes`: the other nodes with interest in `chat`, as
    /// its home shard knows them (never empty).
    RtMsg {
        nodes: Vec<NodeSlot>,
        chat: ChatId,
        to_user: UserId,
        to_client: ClientId,
        frame: Bytes,
    },
    /// This node's users in `chat`'s call are now `users`.
    Calls { chat: ChatId, users: Vec<UserId> },
    /// This node's value for `user` (the maximum of its clients here, 0
    /// with none) is `value`; `user_set`: a client here set it with MSB 0,
    /// so every client of the user on every node takes it (5.2).
    Pres {
        user: UserId,
        value: u8,
        user_set: bool,
    },
}

/// The shards' handle on the bridge (cluster mode only).
#[derive(Debug)]
pub struct ClusterLink {
    /// This node's slot: the high bits of its client ids, and its name
    /// on the wire between nodes.
    pub slot: NodeSlot,
    /// Into the bridge.
    tx: tokio::sync::mpsc::UnboundedSender<ToBridge>,
}

impl ClusterLink {
    /// A link for node `slot`, and the bridge's end of it.
    pub fn new(slot: NodeSlot) -> (Self, tokio::sync::mpsc::UnboundedReceiver<ToBridge>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (ClusterLink { slot, tx }, rx)
    }

    /// Hands `msg` to the bridge. Dropped if the bridge is gone (the
    /// process is stopping).
    pub fn send(&self, msg: ToBridge) {
        let _ = self.tx.send(msg);
    }
}
