//! Sockets and bytes, below the shards: listeners, the I/O backend seam
//! ([`io`]: io_uring or epoll), the transport seam ([`transport`]: what
//! turns socket bytes into the command stream and back), the outbound
//! queue and the frame arena. Nothing here knows what a command means or
//! imports the shard; the connection driver that runs the read and write
//! loops over these pieces is the shard's (`shard::driver`,
//! `shard::writer`).

pub mod arena;
pub mod chunk;
pub mod io;
pub mod listener;
pub mod outbuf;
pub mod transport;
