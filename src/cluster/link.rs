//! The shards' way to the cluster bridge ([`ClusterLink`]) and what they
//! send it ([`ToBridge`]: a [`NodeMsg`], re-exported here, and whom it is
//! for). A leaf: the shards import it, the bridge imports the shards.
//!
//! Sending is a push on an unbounded channel (no system call while the
//! bridge is busy, one eventfd write to wake it): a shard never waits for
//! NATS.

use crate::core::room::NodeSlot;

pub use super::wire::NodeMsg;

/// What a shard tells the cluster (docs/cluster.md, "Subjects"): the
/// message the bridge publishes, and whom for.
#[derive(Debug)]
pub enum ToBridge {
    /// For every other node, on the control subject: what this node holds
    /// (`Interest`, `Calls`, `Pres`).
    All(NodeMsg),
    /// For these nodes, each on its own subject: a local client's
    /// `RtMsg`, for the other nodes with interest in its room as the
    /// room's home shard knows them (never empty).
    To(Vec<NodeSlot>, NodeMsg),
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

    /// Hands `msg` to the bridge for every other node. Dropped if the
    /// bridge is gone (the process is stopping).
    pub fn send(&self, msg: NodeMsg) {
        let _ = self.tx.send(ToBridge::All(msg));
    }

    /// Hands `msg` to the bridge for `nodes` only. Dropped if the bridge
    /// is gone.
    pub fn send_to(&self, nodes: Vec<NodeSlot>, msg: NodeMsg) {
        let _ = self.tx.send(ToBridge::To(nodes, msg));
    }
}
