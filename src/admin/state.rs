//! The admin API's state: its settings, and [`Admin`], everything its
//! handlers work on (the store and the model under one writer lock, the
//! authenticator, the shards).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::control::ShardControl;
use crate::auth::Authenticator;
use crate::store::{Relations, Store};

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

/// The durable store and the model, changed together under one lock.
pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) relations: Relations,
}

/// Everything behind the API: the store, the model, the authenticator, the
/// shards.
pub struct Admin {
    /// One writer at a time. Held from the store commit until the shards
    /// have applied the effects, so effects reach the shards in commit
    /// order; reads take it briefly to see a committed state.
    pub(super) writer: tokio::sync::Mutex<Writer>,
    /// Issues tokens for `POST /v1/tokens`.
    pub(super) auth: Authenticator,
    /// From [`AdminConfig`].
    pub(super) token: String,
    /// From [`AdminConfig`].
    pub(super) now: fn() -> u64,
    /// The live shards.
    pub(super) shards: Arc<dyn ShardControl>,
}

impl Admin {
    /// The API over `store` and the model loaded from it
    /// (`store.load()`). The caller has already applied
    /// `relations.initial_effects()` to the shards.
    pub fn new(
        config: AdminConfig,
        store: Store,
        relations: Relations,
        auth: Authenticator,
        shards: Arc<dyn ShardControl>,
    ) -> Admin {
        Admin {
            writer: tokio::sync::Mutex::new(Writer { store, relations }),
            auth,
            token: config.token,
            now: config.now,
            shards,
        }
    }
}
