//! Cluster mode: what the cluster bridge hands a shard
//! ([`ClusterIn`]), sent to the module that owns the state it concerns
//! (rooms: [`chatd`], users: [`statusd`]). docs/cluster.md says who
//! publishes what, and why every view converges.

use super::msg::ClusterIn;
use super::{chatd, statusd, Shard};

/// Handles one message from the bridge.
pub fn handle(shard: &Shard, msg: ClusterIn) {
    match msg {
        ClusterIn::RtMsg { .. } | ClusterIn::Interest { .. } | ClusterIn::Calls { .. } => {
            chatd::handle_cluster_room(shard, msg)
        }
        ClusterIn::Pres {
            user,
            node,
            value,
            user_set,
        } => statusd::handle_cluster_pres(shard, user, node, value, user_set),
        ClusterIn::NodeGone { node } => {
            chatd::drop_node_rooms(shard, node);
            statusd::drop_node_presence(shard, node);
        }
        ClusterIn::Snapshot => {
            chatd::snapshot_rooms(shard);
            statusd::snapshot_presence(shard);
        }
    }
}
