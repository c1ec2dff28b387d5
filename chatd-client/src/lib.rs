//! The Rust client of chatd, for an application or a bot: rooms,
//! real-time messages and the in-call flag ([`ChatClient`], the chatd
//! service), presence ([`PresenceClient`], the statusd service), and the
//! admin HTTP API ([`admin::AdminClient`]). The wire protocol is
//! `chatd-proto`; `docs/protocol.md` is the contract.
//!
//! ```no_run
//! use chatd_client::{ChatClient, ChatEvent, To};
//!
//! # async fn example(token: String) -> Result<(), chatd_client::ClientError> {
//! let (chat, mut events) = ChatClient::builder(token)
//!     .connect("127.0.0.1:7400")
//!     .await?;
//! chat.join(7).await?;
//! chat.send(7, To::Room, 1, b"hello").await?;
//! while let Some(ev) = events.recv().await {
//!     match ev {
//!         ChatEvent::Message(m) => println!("{}: {:?}", m.from_user, m.data),
//!         ChatEvent::Closed { .. } => break,
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How a client behaves
//!
//! - **A handle and an event stream.** `connect` returns once logged in,
//!   with a cheap, cloneable handle (commands) and an [`Events`] stream
//!   (everything the server sends, typed, and the connection's changes:
//!   connected, reconnecting, closed). Commands return when they are handed
//!   to the connection task; the server's answers are events.
//! - **Keepalive.** A client that sent nothing for a while sends
//!   `OP_KEEPALIVE` (so the server's idle timeout never closes it), and takes
//!   a connection whose keepalive goes unanswered for dead.
//! - **Reconnect.** A lost connection is reconnected with exponential
//!   backoff and jitter ([`Backoff`]); after each login the client joins its
//!   rooms again, resumes the heartbeats of its calls, and announces its
//!   presence again (in `OP_HELLO`). A refusal that retrying cannot fix
//!   (`AUTH_FAILED`, `BAD_VERSION`) closes the client instead. Real-time
//!   messages are not queued while disconnected.
//! - **Transports.** The clients are generic over the byte stream
//!   ([`Connect`]): plain TCP ([`Tcp`], what `connect` uses), TLS
//!   ([`Tls`]), WebSocket over either ([`Ws`]), or one of them picked by a
//!   URL ([`Dial`]: `tcp://`, `tls://`, `ws://`, `wss://`), passed to
//!   `connect_with`.
//!
//! # Layout
//!
//! - [`chat`], [`presence`]: each service's client, events and builder
//!   options; [`Builder`]: the options both share.
//! - `session`: the connection task both drive (connect, login, restore,
//!   select over socket, commands and timers; reconnect).
//! - [`login`]: the login of both services, sans-IO (also used by the
//!   server's integration tests over blocking sockets).
//! - [`connect`]: the stream seam; [`backoff`]: reconnect delays;
//!   [`limits`]: every default and limit, with why.
//! - [`admin`]: the admin API client, async and blocking.

#![deny(missing_docs)]

pub mod admin;
pub mod backoff;
pub mod builder;
pub mod chat;
pub mod connect;
pub mod error;
pub mod events;
pub mod limits;
pub mod login;
pub mod presence;
mod session;

pub use backoff::Backoff;
pub use builder::Builder;
pub use chat::{ChatBuilder, ChatClient, ChatEvent, ChatEvents, Message, To};
pub use connect::{Connect, Dial, Tcp, Tls, Ws, WsStream};
pub use error::{ClientError, ServerError};
pub use events::Events;
pub use presence::{PresenceBuilder, PresenceClient, PresenceEvent, PresenceEvents};
/// The TLS library the [`Tls`] transport and the admin client's HTTPS use
/// (its `ClientConfig` and `RootCertStore`).
pub use rustls;
