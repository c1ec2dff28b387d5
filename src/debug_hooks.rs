//! Faults a test can switch on in debug builds, through the environment,
//! to watch the server meet them over real sockets. Release builds have
//! none of this (each hook is `#[cfg(debug_assertions)]`).
//!
//! - `CHATD_DEBUG_PANIC_ROOM=<chatid>` ([`panic_room`]): that room's home
//!   shard panics when an OP_JOIN for it arrives (a shard dying
//!   mid-service, [`crate::fatal`]).
//! - `CHATD_DEBUG_SLOW_ROOM=<chatid>:<micros>` ([`slow_room`]): that
//!   room's home shard spends `micros` on each OP_RTMSG to it, as a shard
//!   that cannot keep up would (the back-pressure between shards,
//!   [`crate::shard::mesh`]).
//! - `CHATD_DEBUG_ROUND2_DELAY_MS=<millis>` ([`round2_delay`]): round 2 of
//!   every relation change starts that much after round 1 is over, as on
//!   a busy server (logins racing a relation change's updates,
//!   [`crate::shard::flips`]).

/// The room whose home shard must panic on an OP_JOIN for it
/// (`CHATD_DEBUG_PANIC_ROOM`), read once.
#[cfg(debug_assertions)]
pub fn panic_room() -> Option<u64> {
    static ROOM: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *ROOM.get_or_init(|| {
        std::env::var("CHATD_DEBUG_PANIC_ROOM")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// The room whose home shard is slow, and how slow: microseconds per
/// OP_RTMSG (`CHATD_DEBUG_SLOW_ROOM=<chatid>:<micros>`), read once.
#[cfg(debug_assertions)]
pub fn slow_room() -> Option<(u64, u64)> {
    static ROOM: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    *ROOM.get_or_init(|| {
        let v = std::env::var("CHATD_DEBUG_SLOW_ROOM").ok()?;
        let (room, micros) = v.split_once(':')?;
        Some((room.parse().ok()?, micros.parse().ok()?))
    })
}

/// How long round 2 of a relation change waits after round 1
/// (`CHATD_DEBUG_ROUND2_DELAY_MS=<millis>`), read once.
#[cfg(debug_assertions)]
pub fn round2_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    DELAY
        .get_or_init(|| {
            std::env::var("CHATD_DEBUG_ROUND2_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .map(std::time::Duration::from_millis)
}
