//! chatd: a thread-per-core server for real-time messaging in chat rooms,
//! the rooms' in-call flag (the **chatd** service) and user presence (the
//! **statusd** service). The wire contract is `docs/protocol.md`.
//!
//! # Layout
//!
//! The folders show the architecture; each module's `//!` says what it owns.
//!
//! - The wire codec is the `chatd-proto` crate ([`chatd_proto`]), sans-IO
//!   and shared with clients: `decode(&[u8])` returns a command and the
//!   bytes it used, "need more", or a precise error; encoders write into a
//!   `BufMut`. No sockets, no clock.
//! - [`core`]: the state machines (rooms and calls, presence, visibility),
//!   fed `(now, event)` and returning what to send. No sockets, no clock.
//! - [`timer`]: the hashed timer wheel each shard drives its timeouts with.
//! - [`store`]: durable relations (redb) and the in-memory relation model
//!   that turns an admin change into per-shard effects.
//! - [`shard`]: one thread per core, pinned, with its own runtime
//!   (tokio-uring, or tokio's epoll driver where io_uring is blocked); the
//!   cross-shard mesh and the routing function; the connection driver
//!   (read and write loops) and the one input path both services share.
//! - [`net`]: what sits below the shards: listeners, the I/O backend seam,
//!   the transport seam, the outbound queue.
//! - [`admin`]: the HTTP admin API and Prometheus metrics.
//! - [`auth`]: JWT (HS256) verification and issuing.
//! - [`hostcheck`]: `chatd check-host`, the host settings tuning.md asks for.
//! - [`config`]: the command line; [`limits`]: every limit, in one place.
//! - [`fatal`]: a panic anywhere ends the process, logged, with status 101.
//!
//! `docs/architecture.md` tells who owns which state and how a message
//! travels from the sender's socket to every recipient's socket.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod core;
pub mod debug_hooks;
pub mod fatal;
pub mod hostcheck;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod server;
pub mod shard;
pub mod store;
pub mod timer;
pub mod tls;
pub mod ws;
