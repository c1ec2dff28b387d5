//! The state machines of one shard: rooms and calls ([`room`]), presence
//! with its visibility counts ([`presence`]) and the per-connection token
//! bucket ([`ratelimit`]).
//!
//! They are fed `(now, event)` and push what to send into an output vector;
//! no sockets, no clock, no runtime. Connections are opaque handles chosen by
//! the server, so the machines are unit- and property-tested and
//! benchmarked alone.

pub mod presence;
pub mod ratelimit;
pub mod room;

pub use presence::{Change, Presence, VisibilityChange};
pub use room::{NotJoined, RoomLiveState, RoomOutput, Rooms};
