//! The admin API's handlers: input validation, the write path (store, then
//! shards) and the JSON shapes of protocol section 6.
//!
//! Every input is parsed and validated whole before anything is locked or
//! written, so a bad request changes nothing. Errors are JSON `{"error":
//! "..."}` bodies (with `"index"` for a batch's bad operation).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::batch;
use super::control::{LogError, ShardGone};
use super::state::Admin;
use crate::auth::parse_id;
use crate::ids::{ChatId, UserId};
use crate::limits::{
    DEFAULT_TOKEN_TTL_SECS, MAX_ADMIN_BODY_BYTES, MAX_IDS_PER_LIST, MAX_TOKEN_TTL_SECS,
};
use crate::store::{Op, Store, StoreError};

/// A failed request: its status and the message of its JSON body, and
/// for a batch the index of the operation at fault.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    index: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            index: None,
        }
    }

    /// A store failure: logged, and 500.
    fn store(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "relation store failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("store failed: {e}"),
        )
    }

    /// A shard that did not apply a change or answer: logged, and 500
    /// (never a success the shards did not give).
    fn shard_gone(gone: ShardGone, what: &str) -> Self {
        tracing::error!(shard = gone.0, "{what}: shard {} is gone", gone.0);
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}: {gone}; the server must restart"),
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.index {
            Some(index) => json!({ "error": self.message, "index": index }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Parses one id; `what` names it in the error ("bad chatid: 'x'").
fn id(what: &str, s: &str) -> ApiResult<u64> {
    parse_id(s).ok_or_else(|| ApiError::bad_request(format!("bad {what}: '{s}'")))
}

/// The path parameters, or 400 when they cannot be read (bad UTF-8).
fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(format!("bad path: {e}")))
}

/// Reads a body of at most [`MAX_ADMIN_BODY_BYTES`] (413 beyond).
async fn body_bytes(body: Body) -> ApiResult<axum::body::Bytes> {
    axum::body::to_bytes(body, MAX_ADMIN_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body unreadable or over {MAX_ADMIN_BODY_BYTES} bytes"),
            )
        })
}

/// Reads and parses a JSON body of at most [`MAX_ADMIN_BODY_BYTES`].
async fn json_body<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    let bytes = body_bytes(body).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

/// Parses a list of ids (at most [`MAX_IDS_PER_LIST`]); `what` names the
/// list in the error.
fn id_list(what: &str, list: &[String]) -> ApiResult<Vec<UserId>> {
    if list.len() > MAX_IDS_PER_LIST {
        return Err(ApiError::bad_request(format!(
            "more than {MAX_IDS_PER_LIST} {what}"
        )));
    }
    list.iter().map(|m| id("userid", m)).collect()
}

/// Rejects every `/v1` request without `Authorization: Bearer <token>`.
pub(super) async fn require_token(
    State(admin): State<Arc<Admin>>,
    req: Request,
    next: Next,
) -> Response {
    if authorized(&admin.token, req.headers()) {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong admin token").into_response()
    }
}

fn authorized(token: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_credentials(v.as_bytes()))
    else {
        return false;
    };
    // Constant time, so response timing does not reveal how much of the
    // token matched (the length may still show, which reveals nothing
    // useful about a random token).
    !token.is_empty() && bool::from(given.ct_eq(token.as_bytes()))
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme
/// name is case-insensitive (RFC 7235 2.1), and spaces may separate it
/// from the token.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// The write path: `ops`, validated, are committed to the store as one
/// durable transaction, then the net change is applied on every shard,
/// and the presence updates it causes are sent (round 2); the request is
/// answered then. The writer lock is held until then, so changes reach
/// the shards one at a time, in commit order.
/// On a store error nothing changed and the shards are not involved. A
/// shard that did not apply the change makes it a 500: the change is
/// durable and every shard has it after the restart that follows.
///
/// It all runs in a task of its own: a client that goes away before the
/// answer (dropping this future) cannot leave a committed change unapplied
/// on the shards.
async fn write(admin: &Arc<Admin>, ops: Vec<Op>) -> ApiResult<()> {
    if let Some(log) = &admin.log {
        // Cluster mode: durable in JetStream, then applied here by the
        // log's consumer, in the stream's order (docs/cluster.md).
        return log.write(ops).await.map_err(|e| match e {
            LogError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        });
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    let admin = admin.clone();
    tokio::spawn(async move {
        let guard = admin.writer.clone().lock_owned().await;
        let store = admin.store.clone();
        // A blocking commit (fsync): on the blocking pool, so the API's
        // other requests (metrics, reads) go on meanwhile.
        let committed = tokio::task::spawn_blocking(move || store.apply(&ops)).await;
        let change = match committed {
            Ok(Ok(change)) if !change.is_empty() => change,
            Ok(Ok(_)) => {
                let _ = answer.send(Ok(()));
                return;
            }
            Ok(Err(e)) => {
                let _ = answer.send(Err(ApiError::store(e)));
                return;
            }
            Err(e) => {
                let _ = answer.send(Err(ApiError::store(e)));
                return;
            }
        };
        let pushes = match admin.shards.apply(Arc::new(change)).await {
            Ok(pushes) => pushes,
            Err(gone) => {
                let what = "the change is stored but not applied";
                let _ = answer.send(Err(ApiError::shard_gone(gone, what)));
                return;
            }
        };
        // Answered once the presence updates of the change are out, so
        // that a client acting on the answer (a login, a command) comes
        // after them: it sees the change and gets none of its updates on
        // top of what its own login dump already holds.
        pushes.0.await;
        let _ = answer.send(Ok(()));
        drop(guard);
    });
    answered.await.map_err(ApiError::store)?
}

/// A blocking read of the store, on the blocking pool.
async fn read<T: Send + 'static>(
    admin: &Admin,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let store = admin.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(ApiError::store)?
        .map_err(ApiError::store)
}

pub(super) async fn put_member(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (chat, user) = path(p)?;
    let (chat, user) = (id("chatid", &chat)?, id("userid", &user)?);
    write(&admin, vec![Op::PutMember { chat, user }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_member(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (chat, user) = path(p)?;
    let (chat, user) = (id("chatid", &chat)?, id("userid", &user)?);
    write(&admin, vec![Op::DeleteMember { chat, user }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/rooms/{chatid}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomBody {
    members: Vec<String>,
}

pub(super) async fn put_room(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<StatusCode> {
    let chat = id("chatid", &path(p)?)?;
    let body: RoomBody = json_body(body).await?;
    let members = id_list("members", &body.members)?;
    write(&admin, vec![Op::PutRoom { chat, members }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_room(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let chat: ChatId = id("chatid", &path(p)?)?;
    let members = read(&admin, move |s| s.members(chat)).await?;
    if members.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("room {chat} has no members"),
        ));
    }
    let members: Vec<String> = members.iter().map(u64::to_string).collect();
    let live = admin
        .shards
        .room_live(chat)
        .await
        .map_err(|gone| ApiError::shard_gone(gone, "no live state"))?;
    Ok(Json(json!({
        "chatid": chat.to_string(),
        "members": members,
        "joined_clients": live.joined_clients,
        "in_call": live.in_call,
        "call_users": live.call_users.iter().map(u64::to_string).collect::<Vec<_>>(),
    })))
}

pub(super) async fn delete_room(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let chat = id("chatid", &path(p)?)?;
    write(&admin, vec![Op::DeleteRoom { chat }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The two users of a contact path; a user cannot be its own contact.
fn contact_pair(p: Result<Path<(String, String)>, PathRejection>) -> ApiResult<(UserId, UserId)> {
    let (a, b) = path(p)?;
    let (a, b) = (id("userid", &a)?, id("userid", &b)?);
    if a == b {
        return Err(ApiError::bad_request(format!(
            "user {a} cannot be its own contact"
        )));
    }
    Ok((a, b))
}

pub(super) async fn put_contact(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (a, b) = contact_pair(p)?;
    write(&admin, vec![Op::PutContact { a, b }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_contact(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<StatusCode> {
    let (a, b) = contact_pair(p)?;
    write(&admin, vec![Op::DeleteContact { a, b }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/users/{a}/contacts` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsBody {
    contacts: Vec<String>,
}

pub(super) async fn put_contacts(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<StatusCode> {
    let user = id("userid", &path(p)?)?;
    let body: ContactsBody = json_body(body).await?;
    let contacts = id_list("contacts", &body.contacts)?;
    if contacts.contains(&user) {
        return Err(ApiError::bad_request(format!(
            "user {user} cannot be its own contact"
        )));
    }
    write(&admin, vec![Op::PutContacts { user, contacts }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn post_batch(
    State(admin): State<Arc<Admin>>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let bytes = body_bytes(body).await?;
    let ops = batch::parse(&bytes).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: e.message,
        index: e.index,
    })?;
    drop(bytes);
    let applied = ops.len();
    write(&admin, ops).await?;
    Ok(Json(json!({ "applied": applied })))
}

pub(super) async fn get_user(
    State(admin): State<Arc<Admin>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let user: UserId = id("userid", &path(p)?)?;
    let strings = |v: Vec<u64>| -> Vec<String> { v.iter().map(u64::to_string).collect() };
    let contacts = strings(read(&admin, move |s| s.contacts(user)).await?);
    let gone = |gone| ApiError::shard_gone(gone, "no live state");
    let rooms = strings(admin.shards.user_rooms(user).await.map_err(gone)?);
    let live = admin.shards.user_live(user).await.map_err(gone)?;
    Ok(Json(json!({
        "userid": user.to_string(),
        "presence": live.presence,
        "statusd_clients": live.statusd_clients,
        "chatd_clients": live.chatd_clients,
        "contacts": contacts,
        "rooms": rooms,
    })))
}

/// `POST /v1/tokens` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    userid: String,
    /// Optional: [`DEFAULT_TOKEN_TTL_SECS`] when absent.
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
}

fn default_ttl() -> u64 {
    DEFAULT_TOKEN_TTL_SECS
}

pub(super) async fn post_token(
    State(admin): State<Arc<Admin>>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let body: TokenBody = json_body(body).await?;
    let user = id("userid", &body.userid)?;
    if body.ttl_secs == 0 || body.ttl_secs > MAX_TOKEN_TTL_SECS {
        return Err(ApiError::bad_request(format!(
            "bad ttl_secs: {} (1..={MAX_TOKEN_TTL_SECS})",
            body.ttl_secs
        )));
    }
    let token = admin.auth.issue(user, (admin.now)(), body.ttl_secs);
    Ok(Json(json!({ "token": token })))
}

pub(super) async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.shards.metrics_text(),
    )
        .into_response()
}

pub(super) async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// An unmatched request: under `/v1` without the admin token it is 401
/// like every `/v1` request, so the API's shape is not shown to strangers.
fn unmatched(admin: &Admin, req: &Request, status: StatusCode, message: &str) -> ApiError {
    let path = req.uri().path();
    let v1 = path == "/v1" || path.starts_with("/v1/");
    if v1 && !authorized(&admin.token, req.headers()) {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong admin token")
    } else {
        ApiError::new(status, message)
    }
}

pub(super) async fn not_found(State(admin): State<Arc<Admin>>, req: Request) -> ApiError {
    unmatched(&admin, &req, StatusCode::NOT_FOUND, "no such endpoint")
}

pub(super) async fn method_not_allowed(State(admin): State<Arc<Admin>>, req: Request) -> ApiError {
    unmatched(
        &admin,
        &req,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
    )
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;

    #[test]
    fn bearer_credentials_take_any_case_and_extra_spaces() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"bEaReR abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Bearer    abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_credentials(b"Bearer "), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
        assert_eq!(bearer_credentials(b"Bearerabc"), None);
        assert_eq!(bearer_credentials(b"Basic abc"), None);
    }
}
