//! The admin HTTP API (protocol section 6) and Prometheus metrics.
//!
//! Owns the one writer of relations: every change (one operation, or a
//! batch) is validated whole, committed durably to the [`Store`] as one
//! transaction, and its net difference handed to the shards through
//! [`ShardControl`]; the request is answered once every shard applied it,
//! and the next change waits until the presence updates it causes are
//! out. It runs on its own thread with a current-thread tokio runtime
//! ([`serve`]), so it never competes with the shards' runtimes; it must
//! not touch shard state except through [`ShardControl`]. It keeps no
//! relations in memory: reads go to the store, or to the shards that hold
//! them.

mod batch;
pub mod control;
mod handlers;

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::{get, post, put};
use axum::Router;

use crate::auth::Authenticator;
use crate::store::Store;
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

/// Everything behind the API: the store, the authenticator, the shards.
pub struct Admin {
    /// The durable relations (shared with blocking tasks).
    store: Arc<Store>,
    /// One writer at a time. Held from the store commit until the shards
    /// have applied the change and sent what it shows and hides, so
    /// changes reach the shards one at a time, in commit order.
    writer: Arc<tokio::sync::Mutex<()>>,
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
        .route("/v1/users/{a}/contacts", put(put_contacts))
        .route("/v1/batch", post(post_batch))
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
