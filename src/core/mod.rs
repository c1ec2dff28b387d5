//! The state machines of one shard: rooms and calls ([`room`]), presence
//! and its updates ([`presence`]), the shard's part of the relation graph
//! and who is active ([`relations`], on [`pairset`]) and the
//! per-connection token bucket ([`ratelimit`]).
//!
//! They are fed `(now, event)` and push what to send into an output vector;
//! no sockets, no clock, no runtime. Connections are opaque handles chosen by
//! the server, so the machines are unit- and property-tested and
//! benchmarked alone.

pub mod pairset;
pub mod presence;
pub mod ratelimit;
pub mod relations;
pub mod room;

pub use presence::{Change, Presence};
pub use room::{NotJoined, RoomLiveState, RoomOutput, Rooms};
