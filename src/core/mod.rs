//! The state machines of one shard: rooms and calls ([`room`]) and presence
//! with its visibility counts ([`presence`]).
//!
//! They are fed `(now, event)` and push what to send into an output vector;
//! no sockets, no clock, no runtime. Connections are opaque handles chosen by
//! the server, so the machines are tested, fuzzed and benchmarked alone.

pub mod presence;
pub mod ratelimit;
pub mod room;

pub use presence::{Change, Presence, VisibilityChange};
pub use room::{NotJoined, RoomLiveState, RoomOutput, Rooms};
