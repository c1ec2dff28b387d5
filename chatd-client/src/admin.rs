//! A client of chatd's admin HTTP API (protocol section 6): room members,
//! contacts, bulk changes (6.1), tokens, live state and metrics. HTTP/1.1
//! over kept-alive connections (hyper), HTTPS with
//! [`AdminClient::with_tls`] (a server started with `--tls-cert`);
//! [`blocking::AdminClient`] for code without a runtime (scripts, tests, a
//! load generator's set-up).
//!
//! ```no_run
//! # async fn example() -> Result<(), chatd_client::admin::AdminError> {
//! use std::time::Duration;
//! use chatd_client::admin::AdminClient;
//!
//! let token = std::fs::read_to_string("chatd-data/admin.token").unwrap_or_default();
//! let admin = AdminClient::new("127.0.0.1:7480".parse().unwrap(), token.trim());
//! admin.add_member(7, 1).await?;
//! let jwt = admin.token(1, Duration::from_secs(3600)).await?;
//! # let _ = jwt;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use chatd_proto::ids::{ChatId, UserId};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The API could not be reached, or the connection broke. Shown with
    /// its causes: hyper's own text ("client error (Connect)") hides why,
    /// e.g. a certificate the TLS client refused.
    #[error("admin API: {}", with_causes(.0))]
    Http(#[from] hyper_util::client::legacy::Error),
    /// The answer's body could not be read.
    #[error("admin API: reading the answer: {0}")]
    Body(#[from] hyper::Error),
    /// No answer within the client's timeout.
    #[error("admin API: no answer within {0:?}")]
    Timeout(Duration),
    /// The API refused the request.
    #[error("admin API: {request} answered {status}: {body}")]
    Status {
        /// What was asked (`PUT /v1/rooms/7/members/1`).
        request: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body (a JSON error).
        body: String,
    },
    /// A request that cannot be made (a method or path that is not HTTP).
    #[error("admin API: bad request: {0}")]
    BadRequest(String),
    /// An answer that is not what the API documents.
    #[error("admin API: unexpected answer: {0}")]
    BadResponse(String),
    /// The blocking client could not start its runtime.
    #[error("admin API: cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// `e` and its chain of sources, joined with ": ".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// An answer: its status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// `GET /v1/rooms/{chatid}`: a room's members and live state.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Room {
    /// The room.
    #[serde(deserialize_with = "decimal")]
    pub chatid: ChatId,
    /// Its members.
    #[serde(deserialize_with = "decimals")]
    pub members: Vec<UserId>,
    /// chatd connections joined to it right now.
    pub joined_clients: u64,
    /// Its call flag.
    pub in_call: bool,
    /// Users in its call.
    #[serde(deserialize_with = "decimals")]
    pub call_users: Vec<UserId>,
}

/// `GET /v1/users/{userid}`: a user's relations and live state.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct User {
    /// The user.
    #[serde(deserialize_with = "decimal")]
    pub userid: UserId,
    /// Its combined presence.
    pub presence: u8,
    /// Its connected statusd clients.
    pub statusd_clients: u64,
    /// Its logged-in chatd connections.
    pub chatd_clients: u64,
    /// Its contacts.
    #[serde(deserialize_with = "decimals")]
    pub contacts: Vec<UserId>,
    /// The rooms it is a member of.
    #[serde(deserialize_with = "decimals")]
    pub rooms: Vec<ChatId>,
}

/// One operation of `POST /v1/batch` (protocol 6.1): the same changes as
/// the single requests, run in order as one durable transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// `put_member`: makes `user` a member of `chat`.
    PutMember {
        /// The room.
        chat: ChatId,
        /// The user.
        user: UserId,
    },
    /// `delete_member`: removes `user` from `chat`.
    DeleteMember {
        /// The room.
        chat: ChatId,
        /// The user.
        user: UserId,
    },
    /// `put_room`: replaces the member list of `chat`.
    PutRoom {
        /// The room.
        chat: ChatId,
        /// Its members.
        members: Vec<UserId>,
    },
    /// `delete_room`: removes every member of `chat`.
    DeleteRoom {
        /// The room.
        chat: ChatId,
    },
    /// `put_contact`: makes `a` and `b` contacts of each other.
    PutContact {
        /// One user.
        a: UserId,
        /// The other.
        b: UserId,
    },
    /// `delete_contact`: removes the contact between `a` and `b`.
    DeleteContact {
        /// One user.
        a: UserId,
        /// The other.
        b: UserId,
    },
    /// `put_contacts`: makes `user`'s contacts exactly `contacts`, in both
    /// directions.
    PutContacts {
        /// The user.
        user: UserId,
        /// Its contacts.
        contacts: Vec<UserId>,
    },
}

impl BatchOp {
    /// The operation as the API's JSON (ids as decimal strings).
    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let s = |id: &u64| id.to_string();
        let list = |ids: &[u64]| ids.iter().map(s).collect::<Vec<_>>();
        match self {
            BatchOp::PutMember { chat, user } => {
                json!({"op": "put_member", "chatid": s(chat), "userid": s(user)})
            }
            BatchOp::DeleteMember { chat, user } => {
                json!({"op": "delete_member", "chatid": s(chat), "userid": s(user)})
            }
            BatchOp::PutRoom { chat, members } => {
                json!({"op": "put_room", "chatid": s(chat), "members": list(members)})
            }
            BatchOp::DeleteRoom { chat } => json!({"op": "delete_room", "chatid": s(chat)}),
            BatchOp::PutContact { a, b } => json!({"op": "put_contact", "a": s(a), "b": s(b)}),
            BatchOp::DeleteContact { a, b } => {
                json!({"op": "delete_contact", "a": s(a), "b": s(b)})
            }
            BatchOp::PutContacts { user, contacts } => {
                json!({"op": "put_contacts", "userid": s(user), "contacts": list(contacts)})
            }
        }
    }
}

/// Ids in the API's JSON are decimal strings.
fn decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn decimals<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

/// An admin API client: cheap to clone (the connections are shared).
#[derive(Clone, Debug)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The HTTP client: plain HTTP, or HTTPS with `tls`.
fn http_client(
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    // Without TLS the configuration is never used (the URLs are http://).
    let config = tls.unwrap_or_else(|| crate::connect::tls_config(rustls::RootCertStore::empty()));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

impl AdminClient {
    /// A client of the API at `addr`, with the admin token (the server's
    /// `--admin-token`, or `<data-dir>/admin.token`).
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> Self {
        let mut c = AdminClient::anonymous(addr);
        c.token = Some(token.into());
        c
    }

    /// A client without a token: enough for `/metrics` and `/healthz`.
    pub fn anonymous(addr: SocketAddr) -> Self {
        AdminClient {
            base: format!("http://{addr}"),
            token: None,
            timeout: crate::limits::ADMIN_TIMEOUT,
            http: http_client(None),
        }
    }

    /// Speaks HTTPS (a server started with `--tls-cert`), trusting the
    /// roots of `config` ([`crate::connect::tls_config`]); the certificate
    /// must name the address's IP.
    #[must_use]
    pub fn with_tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.base = self.base.replacen("http://", "https://", 1);
        self.http = http_client(Some(config));
        self
    }

    /// The longest a request may take (default
    /// [`ADMIN_TIMEOUT`](crate::limits::ADMIN_TIMEOUT), 30 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// One request, whatever its answer: `method` and `path` as in the
    /// protocol's table, `body` JSON. The typed methods below are built on
    /// it; this is for what they do not cover.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, AdminError> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
        let req = req
            .body(body)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let exchange = async {
            let resp = self.http.request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            Ok::<_, AdminError>(Response {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| AdminError::Timeout(self.timeout))?
    }

    /// A request that must answer `want`; returns the body.
    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> Result<String, AdminError> {
        let resp = self.request(method, path, body).await?;
        if resp.status != want {
            return Err(AdminError::Status {
                request: format!("{method} {path}"),
                status: resp.status,
                body: resp.body,
            });
        }
        Ok(resp.body)
    }

    /// Makes `user` a member of `chat`.
    pub async fn add_member(&self, chat: ChatId, user: UserId) -> Result<(), AdminError> {
        let path = format!("/v1/rooms/{chat}/members/{user}");
        self.expect("PUT", &path, None, 204).await.map(drop)
    }

    /// Removes `user` from `chat`.
    pub async fn remove_member(&self, chat: ChatId, user: UserId) -> Result<(), AdminError> {
        let path = format!("/v1/rooms/{chat}/members/{user}");
        self.expect("DELETE", &path, None, 204).await.map(drop)
    }

    /// Replaces the member list of `chat`.
    pub async fn set_members(&self, chat: ChatId, members: &[UserId]) -> Result<(), AdminError> {
        let list: Vec<String> = members.iter().map(u64::to_string).collect();
        let body = serde_json::json!({ "members": list }).to_string();
        let path = format!("/v1/rooms/{chat}");
        self.expect("PUT", &path, Some(&body), 204).await.map(drop)
    }

    /// A room's members and live state; `None` when it has no members.
    pub async fn room(&self, chat: ChatId) -> Result<Option<Room>, AdminError> {
        let path = format!("/v1/rooms/{chat}");
        let resp = self.request("GET", &path, None).await?;
        match resp.status {
            404 => Ok(None),
            200 => parse(&resp.body).map(Some),
            status => Err(AdminError::Status {
                request: format!("GET {path}"),
                status,
                body: resp.body,
            }),
        }
    }

    /// Removes every member of `chat`.
    pub async fn delete_room(&self, chat: ChatId) -> Result<(), AdminError> {
        let path = format!("/v1/rooms/{chat}");
        self.expect("DELETE", &path, None, 204).await.map(drop)
    }

    /// Makes `a` and `b` contacts of each other.
    pub async fn add_contact(&self, a: UserId, b: UserId) -> Result<(), AdminError> {
        let path = format!("/v1/users/{a}/contacts/{b}");
        self.expect("PUT", &path, None, 204).await.map(drop)
    }

    /// Removes the contact between `a` and `b`.
    pub async fn remove_contact(&self, a: UserId, b: UserId) -> Result<(), AdminError> {
        let path = format!("/v1/users/{a}/contacts/{b}");
        self.expect("DELETE", &path, None, 204).await.map(drop)
    }

    /// Makes `user`'s contacts exactly `contacts`, in both directions
    /// (`PUT /v1/users/{a}/contacts`).
    pub async fn set_contacts(&self, user: UserId, contacts: &[UserId]) -> Result<(), AdminError> {
        let list: Vec<String> = contacts.iter().map(u64::to_string).collect();
        let body = serde_json::json!({ "contacts": list }).to_string();
        let path = format!("/v1/users/{user}/contacts");
        self.expect("PUT", &path, Some(&body), 204).await.map(drop)
    }

    /// Runs `ops` as one batch (`POST /v1/batch`): all or none. Returns
    /// how many were applied. A refused batch is [`AdminError::Status`],
    /// whose body names the bad operation's index.
    pub async fn batch(&self, ops: &[BatchOp]) -> Result<u64, AdminError> {
        let list: Vec<serde_json::Value> = ops.iter().map(BatchOp::to_json).collect();
        let body = serde_json::json!({ "ops": list }).to_string();
        drop(list);
        let out = self.expect("POST", "/v1/batch", Some(&body), 200).await?;
        #[derive(Deserialize)]
        struct Applied {
            applied: u64,
        }
        parse::<Applied>(&out).map(|a| a.applied)
    }

    /// A user's relations and live state.
    pub async fn user(&self, user: UserId) -> Result<User, AdminError> {
        let body = self
            .expect("GET", &format!("/v1/users/{user}"), None, 200)
            .await?;
        parse(&body)
    }

    /// A client token (JWT) for `user`, valid for `ttl` (whole seconds).
    pub async fn token(&self, user: UserId, ttl: Duration) -> Result<String, AdminError> {
        let body = serde_json::json!({ "userid": user.to_string(), "ttl_secs": ttl.as_secs() });
        let out = self
            .expect("POST", "/v1/tokens", Some(&body.to_string()), 200)
            .await?;
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        parse::<Token>(&out).map(|t| t.token)
    }

    /// The Prometheus metrics, as text.
    pub async fn metrics(&self) -> Result<String, AdminError> {
        self.expect("GET", "/metrics", None, 200).await
    }

    /// Whether the server answers its health check.
    pub async fn healthz(&self) -> Result<(), AdminError> {
        self.expect("GET", "/healthz", None, 200).await.map(drop)
    }
}

/// Parses a JSON answer.
fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, AdminError> {
    serde_json::from_str(body).map_err(|e| AdminError::BadResponse(format!("{e}: {body}")))
}

/// The admin client for code that has no async runtime: each call runs
/// the async client on a runtime of its own, to completion. Not for use
/// inside an async runtime (use [`crate::admin::AdminClient`] there).
pub mod blocking {
    use super::*;

    /// A blocking admin API client (see [`crate::admin::AdminClient`], whose
    /// methods it mirrors).
    #[derive(Debug)]
    pub struct AdminClient {
        rt: tokio::runtime::Runtime,
        inner: super::AdminClient,
    }

    impl AdminClient {
        /// A client of the API at `addr` with the admin token.
        pub fn new(addr: SocketAddr, token: impl Into<String>) -> Result<Self, AdminError> {
            Self::wrap(super::AdminClient::new(addr, token))
        }

        /// A client without a token.
        pub fn anonymous(addr: SocketAddr) -> Result<Self, AdminError> {
            Self::wrap(super::AdminClient::anonymous(addr))
        }

        /// Runs `inner` on a runtime of its own.
        pub fn wrap(inner: super::AdminClient) -> Result<Self, AdminError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AdminError::Runtime)?;
            Ok(AdminClient { rt, inner })
        }

        /// See [`super::AdminClient::request`].
        pub fn request(
            &self,
            method: &str,
            path: &str,
            body: Option<&str>,
        ) -> Result<Response, AdminError> {
            self.rt.block_on(self.inner.request(method, path, body))
        }

        /// See [`super::AdminClient::add_member`].
        pub fn add_member(&self, chat: ChatId, user: UserId) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.add_member(chat, user))
        }

        /// See [`super::AdminClient::remove_member`].
        pub fn remove_member(&self, chat: ChatId, user: UserId) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.remove_member(chat, user))
        }

        /// See [`super::AdminClient::set_members`].
        pub fn set_members(&self, chat: ChatId, members: &[UserId]) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.set_members(chat, members))
        }

        /// See [`super::AdminClient::room`].
        pub fn room(&self, chat: ChatId) -> Result<Option<Room>, AdminError> {
            self.rt.block_on(self.inner.room(chat))
        }

        /// See [`super::AdminClient::delete_room`].
        pub fn delete_room(&self, chat: ChatId) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.delete_room(chat))
        }

        /// See [`super::AdminClient::add_contact`].
        pub fn add_contact(&self, a: UserId, b: UserId) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.add_contact(a, b))
        }

        /// See [`super::AdminClient::remove_contact`].
        pub fn remove_contact(&self, a: UserId, b: UserId) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.remove_contact(a, b))
        }

        /// See [`super::AdminClient::set_contacts`].
        pub fn set_contacts(&self, user: UserId, contacts: &[UserId]) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.set_contacts(user, contacts))
        }

        /// See [`super::AdminClient::batch`].
        pub fn batch(&self, ops: &[BatchOp]) -> Result<u64, AdminError> {
            self.rt.block_on(self.inner.batch(ops))
        }

        /// See [`super::AdminClient::user`].
        pub fn user(&self, user: UserId) -> Result<User, AdminError> {
            self.rt.block_on(self.inner.user(user))
        }

        /// See [`super::AdminClient::token`].
        pub fn token(&self, user: UserId, ttl: Duration) -> Result<String, AdminError> {
            self.rt.block_on(self.inner.token(user, ttl))
        }

        /// See [`super::AdminClient::metrics`].
        pub fn metrics(&self) -> Result<String, AdminError> {
            self.rt.block_on(self.inner.metrics())
        }

        /// See [`super::AdminClient::healthz`].
        pub fn healthz(&self) -> Result<(), AdminError> {
            self.rt.block_on(self.inner.healthz())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_and_user_answers_parse_with_decimal_string_ids() {
        let room: Room = parse(
            r#"{"chatid":"7","members":["1","2"],"joined_clients":3,"in_call":true,"call_users":["1","2"]}"#,
        )
        .expect("room");
        assert_eq!(
            room,
            Room {
                chatid: 7,
                members: vec![1, 2],
                joined_clients: 3,
                in_call: true,
                call_users: vec![1, 2],
            }
        );
        let user: User = parse(
            r#"{"userid":"1","presence":3,"statusd_clients":2,"chatd_clients":1,"contacts":["2"],"rooms":["7"]}"#,
        )
        .expect("user");
        assert_eq!((user.userid, user.presence, user.rooms), (1, 3, vec![7]));
        assert!(matches!(
            parse::<Room>(r#"{"chatid":"x"}"#),
            Err(AdminError::BadResponse(_))
        ));
    }

    #[test]
    fn batch_ops_are_the_protocols_json() {
        let ops = [
            BatchOp::PutMember { chat: 7, user: 1 },
            BatchOp::DeleteMember { chat: 7, user: 2 },
            BatchOp::PutRoom {
                chat: 8,
                members: vec![1, u64::MAX],
            },
            BatchOp::DeleteRoom { chat: 9 },
            BatchOp::PutContact { a: 1, b: 2 },
            BatchOp::DeleteContact { a: 3, b: 4 },
            BatchOp::PutContacts {
                user: 5,
                contacts: vec![],
            },
        ];
        let got: Vec<String> = ops.iter().map(|o| o.to_json().to_string()).collect();
        assert_eq!(
            got,
            [
                r#"{"chatid":"7","op":"put_member","userid":"1"}"#,
                r#"{"chatid":"7","op":"delete_member","userid":"2"}"#,
                r#"{"chatid":"8","members":["1","18446744073709551615"],"op":"put_room"}"#,
                r#"{"chatid":"9","op":"delete_room"}"#,
                r#"{"a":"1","b":"2","op":"put_contact"}"#,
                r#"{"a":"3","b":"4","op":"delete_contact"}"#,
                r#"{"contacts":[],"op":"put_contacts","userid":"5"}"#,
            ]
        );
    }
}
