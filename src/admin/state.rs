//! The admin API's state: its settings, and [`Admin`], everything its
//! handlers work on (the store, the writer lock, the authenticator, the
//! shards).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::control::{RelationLog, ShardControl};
use crate::auth::Authenticator;
use crate::store::Store;

/// Settings of the admin API.
pub struct AdminConfig {
    /// The bearer token every `/v1` request must carry. An empty token
    /// matches nothing (the API is then closed), never everything.
    pub token: String,
    /// The clock for `POST /v1/tokens` (unix seconds); [`system_now`] in
    /// production, a fixed value in tests.
    pub now: fn() -> u64,
}

/// The current time in unix seconds (0 if the clock is before 1970).
pub fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything behind the API: the store, the authenticator, the shards.
pub struct Admin {
    /// The durable relations (shared with blocking tasks).
    pub(super) store: Arc<Store>,
    /// One writer at a time. Held from the store commit until the shards
    /// have applied the change and sent what it shows and hides, so
    /// changes reach the shards one at a time, in commit order.
    pub(super) writer: Arc<tokio::sync::Mutex<()>>,
    /// Issues tokens for `POST /v1/tokens`.
    pub(super) auth: Authenticator,
    /// From [`AdminConfig`].
    pub(super) token: String,
    /// From [`AdminConfig`].
    pub(super) now: fn() -> u64,
    /// The live shards.
    pub(super) shards: Arc<dyn ShardControl>,
    /// Cluster mode: relation writes go here (the store is then the
    /// node's in-memory copy, which the log's consumer writes).
    pub(super) log: Option<Arc<dyn RelationLog>>,
}

impl Admin {
    /// The API over `store`, whose relations the caller has already
    /// installed on the shards.
    pub fn new(
        config: AdminConfig,
        store: Store,
        auth: Authenticator,
        shards: Arc<dyn ShardControl>,
    ) -> Admin {
        Admin {
            store: Arc::new(store),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            auth,
            token: config.token,
            now: config.now,
            shards,
            log: None,
        }
    }

    /// Cluster mode: the API over `store` (the node's copy of the
    /// relations, written by the log's consumer), writing to `log`.
    pub fn clustered(
        config: AdminConfig,
        store: Arc<Store>,
        auth: Authenticator,
        shards: Arc<dyn ShardControl>,
        log: Arc<dyn RelationLog>,
    ) -> Admin {
        Admin {
            store,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            auth,
            token: config.token,
            now: config.now,
            shards,
            log: Some(log),
        }
    }
}
