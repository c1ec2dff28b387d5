//! The admin HTTP API (protocol section 6) and Prometheus metrics.
//!
//! Owns the one writer of relations: every change is validated, committed
//! durably to the [`Store`], applied to the [`Relations`] model, and its
//! effects handed to the shards through [`ShardControl`] before the request
//! is answered. It runs on its own thread with a current-thread tokio
//! runtime ([`serve`]), so it never competes with the shards' runtimes; it
//! must not touch shard state except through [`ShardControl`].

pub mod control;
mod handlers;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::{get, post, put};
use axum::Router;

use crate::auth::Authenticator;
use crate::store::{Relations, Store};
use control::ShardControl;

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
struct Writer {
    store: Store,
    relations: Relations,
}

/// Everything behind the API: the store, the model, the authenticator, the
/// shards.
pub struct Admin {
    /// One writer at a time. Held from the store commit until the shards
    /// have applied the effects, so effects reach the shards in commit
    /// order; reads take it briefly to see a committed state.
    writer: tokio::sync::Mutex<Writer>,
    /// Issues tokens for `POST /v1/tokens`.
    auth: Authenticator,
    /// From [`AdminConfig`].
    token: String,
    /// From [`AdminConfig`].
    now: fn() -> u64,
    /// The live shards.
    shards: Arc<dyn ShardControl>,
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

/// The API's routes.
pub fn router(admin: Arc<Admin>) -> Router {
    use handlers::*;
    let v1 = Router::new()
        .route(
            "/v1/rooms/{chatid}/members/{userid}",
            put(put_member).delete(delete_member),
        )
        .route(
            "/v1/rooms/{chatid}",
            put(put_room).get(get_room).delete(delete_room),
        )
        .route(
            "/v1/users/{a}/contacts/{b}",
            put(put_contact).delete(delete_contact),
        )
        .route("/v1/users/{userid}", get(get_user))
        .route("/v1/tokens", post(post_token))
        .route_layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            require_token,
        ));
    Router::new()
        .merge(v1)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
}

/// Runs the API on `listener` (already bound, so the caller could print
/// its address) on a current-thread tokio runtime, until `shutdown`
/// resolves. Blocks: call it on the admin thread.
pub fn serve(
    listener: std::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(admin))
            .with_graceful_shutdown(shutdown)
            .await
    })
}

#[cfg(test)]
mod tests;
