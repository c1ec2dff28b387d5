//! The admin HTTP API (protocol section 6) and Prometheus metrics.
//!
//! Owns the one writer of relations: every change (one operation, or a
//! batch) is validated whole, committed durably to the
//! [`Store`](crate::store::Store) as one transaction, and its net
//! difference handed to the shards through
//! [`ShardControl`](control::ShardControl); the request is answered once
//! every shard applied it, and the next change waits until the presence
//! updates it causes are out. It runs on its own thread with a
//! current-thread tokio runtime ([`serve`]), so it never competes with the
//! shards' runtimes; it must not touch shard state except through
//! `ShardControl`. It keeps no relations in memory: reads go to the store,
//! or to the shards that hold them. [`Admin`] (in `state.rs`) is what the
//! handlers (`handlers.rs`, `batch.rs` for `POST /v1/batch`) work on.

mod batch;
pub mod control;
mod handlers;
mod state;
mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;

pub use state::{system_now, Admin, AdminConfig};

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
/// resolves; over HTTPS when `tls` is given (each handshake within
/// `handshake_timeout`). Blocks: call it on the admin thread.
pub fn serve(
    listener: std::net::TcpListener,
    admin: Arc<Admin>,
    tls: Option<(Arc<crate::tls::Reloadable>, std::time::Duration)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        match tls {
            None => {
                axum::serve(listener, router(admin))
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some((tls, timeout)) => {
                let listener = tls::TlsListener::start(listener, tls, timeout)?;
                axum::serve(listener, router(admin))
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    })
}

#[cfg(test)]
mod tests;
