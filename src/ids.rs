//! Identifiers shared by every layer: the wire ids (re-exported from
//! [`chatd_proto::ids`]; `0` is never a real user, room or client), the
//! two services, and the hash maps keyed by them.

pub use chatd_proto::ids::{ChatId, ClientId, UserId};

/// The two services, each with its own listener and command set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Rooms, real-time messages, in-call flag.
    Chatd = 0,
    /// Presence.
    Statusd = 1,
}

impl Service {
    /// Both services, in index order.
    pub const ALL: [Service; 2] = [Service::Chatd, Service::Statusd];

    /// Index for per-service arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name, as in log lines and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Service::Chatd => "chatd",
            Service::Statusd => "statusd",
        }
    }
}

/// The hash map of every per-message path: foldhash (fast on integer keys,
/// seeded per process so keys chosen by clients cannot be aimed at
/// collisions) instead of std's SipHash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The hash set that goes with [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
