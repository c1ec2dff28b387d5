//! Cluster mode (protocol section 10, docs/cluster.md): several chatd
//! processes ("nodes") seen from outside as one server, over NATS.
//!
//! - [`link`]: the shards' handle on the bridge and what they send it (a
//!   leaf the shards import);
//! - [`wire`]: what nodes send each other, and the relation changes as
//!   stored in JetStream (sans-IO);
//! - [`nodes`]: which other nodes are alive (sans-IO);
//! - [`bridge`]: the cluster thread: a tokio runtime running the NATS
//!   client, the relation log, heartbeats, and the traffic between the
//!   shards and the other nodes.

pub mod bridge;
pub mod link;
pub mod nodes;
pub mod wire;
