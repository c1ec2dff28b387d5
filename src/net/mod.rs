//! Sockets: listeners, the per-connection read and write loops, the
//! outbound queue and the frame arena. Everything that touches a socket is
//! here; what the bytes mean is decided in [`crate::shard`].

pub mod arena;
pub mod conn;
pub mod io;
pub mod listener;
pub mod outbuf;
