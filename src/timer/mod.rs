//! The hashed timer wheel each shard drives its timeouts with (call
//! heartbeats, idle and login timeouts).
//!
//! Sans-IO like the rest of the core: it never reads a clock. Every time is
//! a `now_ms: u64` the caller passes in, on a monotonic clock the caller
//! owns. It owns only its entries; what an entry *means* (which connection,
//! which room) is the caller's `T`.
//!
//! Costs: insert and cancel are O(1); `poll_expired` costs the entries that
//! fire plus the slots passed (at most one revolution's worth, however far
//! time jumped); an entry more than one revolution away is looked at once per
//! revolution and left where it is. Entries live in a slab whose freed slots
//! are reused, so steady-state inserts do not allocate.

mod wheel;

pub use wheel::{TimerKey, TimerWheel};

#[cfg(test)]
mod tests;
