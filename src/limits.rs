//! Every limit and default of the server, in one place, each with why it
//! has its value. Configurable ones are the defaults of flags in
//! [`crate::config`]; the rest are fixed here. The limits the wire protocol
//! itself sets live in [`chatd_proto::limits`] (shared with clients) and
//! are re-exported here, so this stays the one list to read.

pub use chatd_proto::limits::{
    DEFAULT_MAX_RTMSG_LEN, MAX_TOKEN_LEN, MSGLEN_FIELD_MAX, PROTOCOL_VERSION,
};

/// Default `--call-timeout-ms`: a call participant with no heartbeat for
/// this long leaves the call (clients beat every 2-5 s).
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 10_000;

/// Default `--idle-timeout-ms`: a connection that sent nothing for this
/// long is closed (protocol section 3).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 90_000;

/// Default `--login-timeout-ms`: AUTH + HELLO must complete within this.
pub const DEFAULT_LOGIN_TIMEOUT_MS: u64 = 10_000;

/// Default `--max-outbuf-bytes`: bytes queued to one connection before it
/// is closed as a slow consumer. 32 MiB, Redis's hard limit for pub/sub
/// clients: a reader that falls behind during a burst (a load generator
/// at saturation, a phone on a slow link) catches up instead of being cut,
/// while one that stopped reading is still bounded. Only a lagging
/// connection uses it; an idle one queues nothing.
pub const DEFAULT_MAX_OUTBUF_BYTES: usize = 32 << 20;

/// Default `--max-shard-queue-bytes`: bytes of OP_RTMSG frames (and
/// fan-out lists) that may wait in one shard's inbox before the
/// connections sending to it stop reading until it is down to half
/// (`shard::mesh`). At about a microsecond per message handled, 16 MiB of
/// 100-byte messages is some 160 ms of the shard's work: bursts pass,
/// while a shard that cannot keep up holds a bounded backlog, not the
/// whole of what its senders can write.
pub const DEFAULT_MAX_SHARD_QUEUE_BYTES: usize = 16 << 20;

/// Least `--max-shard-queue-bytes`: below a few reads' worth a busy shard
/// would pause its senders all the time.
pub const MIN_SHARD_QUEUE_BYTES: usize = 64 << 10;

/// A connection paused for room in a shard's inbox resumes once the inbox
/// is down to the budget divided by this (half): resuming at the budget
/// itself would wake every paused connection for each message handled.
pub const SHARD_QUEUE_RESUME_DIVISOR: usize = 2;

/// An inbox holding this many times the budget pauses every connection
/// about to send an OP_RTMSG, whatever the room's home: only fan-out lists
/// (deliveries to a shard's own connections) get an inbox there, and any
/// room may have members on that shard.
pub const SHARD_QUEUE_HARD_FACTOR: usize = 2;

/// Default `--listen-backlog`: accept queue length per listener socket.
/// The kernel caps it at `net.core.somaxconn` (see tuning.md), so the
/// host's setting decides: a login storm from two client threads here
/// overflowed 4096 (1,300-2,300 SYNs dropped, each retried a second
/// later), and raising somaxconn should be all it takes to avoid that.
pub const DEFAULT_LISTEN_BACKLOG: i32 = 65_535;

/// Most shards (`--shards`). A connection reference keeps its shard in 10
/// bits (`shard::msg::ConnRef`, 8 bytes with its slot and generation), and
/// a shard is a pinned thread: more of them than this is a mistake on any
/// machine there is today.
pub const SHARDS_MAX: usize = 1 << 10;

/// Most connections one shard holds at once (the rest of the 32 bits that
/// [`SHARDS_MAX`] leaves in a connection reference). Four million
/// connections on one core is past what its memory and CPU allow; a
/// connection accepted beyond it is closed at once, with a warning.
pub const CONN_SLOTS_MAX: usize = 1 << 22;

/// Most connection slots a shard reserves at start: address space
/// (about 50 MiB at 200 bytes a slot), resident only once used; past this
/// its slab grows by doubling. Kept well below "unlimited", which an
/// unlimited open-file limit would otherwise ask for.
pub const CONN_SLOTS_RESERVED_MAX: usize = 1 << 18;

/// A connection's first read buffer: room for a login (OP_AUTH with a
/// typical token, OP_HELLO, a few OP_JOINs) in one read.
pub const READ_BUF_INITIAL: usize = 256;

/// The read buffer of a logged-in connection with nothing buffered, and
/// the floor it shrinks back to. Every pending io_uring read pins its
/// buffer, so this is what an idle connection's read costs; a busier one
/// doubles it while reads fill it, up to [`READ_BUF_MAX`].
pub const READ_BUF_IDLE: usize = 64;

/// Largest read buffer: one read never needs more than a few maximum-size
/// frames' worth to keep up.
pub const READ_BUF_MAX: usize = 256 * 1024;

/// The buffer a closed connection's read loop reads its peer's unread
/// input into, to drop it, before the socket is closed (see
/// `shard::driver`).
pub const DRAIN_READ_BUF: usize = 16 * 1024;

/// After a close whose output was all written (and end of stream sent),
/// how long the peer's last input is read and dropped, at most, before
/// the socket is closed: closing it with unread input would reset the
/// connection and lose what the kernel has not sent yet (the end of a slow
/// reader's output, its OP_ERROR). A peer that closes in time ends it
/// sooner.
pub const LINGER_MS: u64 = 2_000;

/// Frames this large or larger are queued shared (a reference to the
/// buffer they were cut from, no copy); smaller ones are copied into the
/// connection's output chunk ([`OUT_CHUNK_MIN`]..[`OUT_CHUNK_MAX`]). A
/// copy makes a write one contiguous buffer instead of one piece per
/// delivery, which is where the kernel's time went (issue 13: with one
/// iovec per 153-byte delivery the kernel spent 176-201 ns per delivery,
/// the floor's contiguous buffer 40-78 ns); but a copy costs in
/// proportion to the frame while the per-piece cost it saves does not.
/// Measured, every frame copied against every frame shared (deliveries
/// per server CPU-second, 100 rooms x 10): copying wins by ~19% at 128-byte
/// payloads, they are even at 256, and sharing wins from 384 (+13%) to
/// 16 KiB (+40-200%). bench/results/profiles-20261206.md.
pub const OUT_SHARE_MIN_BYTES: usize = 512;

/// Smallest output chunk: what a connection that is sent one small frame
/// holds until it is written (a few frames of room).
pub const OUT_CHUNK_MIN: usize = 512;

/// Largest output chunk: a connection whose chunk fills before a write
/// empties it takes one twice as large, up to this (a power of two times
/// [`OUT_CHUNK_MIN`]); past it a burst spans several chunks, each one
/// piece of the write.
pub const OUT_CHUNK_MAX: usize = 64 * 1024;

/// Most bytes of free output chunks a shard keeps for reuse. Above it a
/// chunk given back is freed: this is what a shard holds after a burst is
/// written, whatever the number of connections. 16 MiB keeps a chunk of
/// 8 KiB (a write's worth at saturation, measured) for each of 2,000
/// busy connections, so a steady load allocates none (`cargo bench
/// --bench fanout`, `local_burst`).
pub const OUT_POOL_BYTES_MAX: usize = 16 << 20;

/// Segments a connection's queue holds before even large frames are
/// copied instead of shared. A shared frame keeps the whole buffer it was
/// cut from alive (a sender's read buffer, up to [`READ_BUF_MAX`], or an
/// arena chunk) while `--max-outbuf-bytes` counts only the frame's bytes:
/// a reader that stalled while a sender interleaved tiny messages to it
/// with large ones elsewhere once pinned 2.6 GB under a 1 MiB cap. Small
/// frames are always copied now, and past this many segments (shared
/// frames, and filled chunks not yet written) large ones are too, so a
/// lagging connection pins at most this many shared buffers (8 MiB at
/// worst) beyond its cap. A healthy connection rarely has more than a few
/// large frames queued between writes.
pub const SHARED_FRAMES_QUEUED_MAX: usize = 32;

/// What a queued segment (a shared frame, or a filled chunk not written
/// yet) costs beyond its bytes, charged against `--max-outbuf-bytes`: its
/// slot in the queue (a 32-byte `Bytes`, in a ring that grows by
/// doubling). Copied frames cost exactly their bytes: they sit back to
/// back in the connection's chunk, so a client that floods 1-byte
/// keepalives without reading its answers holds what the cap says (before
/// chunks, each such frame had a slot of its own, and counting only bytes
/// let it hold about 1.5 GB under the default 32 MiB cap). What a
/// connection holds beyond the charge is bounded: its current chunk's
/// free space and the written part of the segment being written, each at
/// most [`OUT_CHUNK_MAX`], plus the shared buffers above.
pub const QUEUED_FRAME_OVERHEAD: usize = 64;

/// Most frames gathered into one vectored write (`IOV_MAX` is 1024).
pub const WRITE_IOVECS_MAX: usize = 1024;

/// Longest `--presence-batch-ms`: presence may lag by this much at most,
/// which is still well inside what a person looking at a contact list
/// notices; beyond it batching saves little more.
pub const PRESENCE_BATCH_MS_MAX: u64 = 1000;

/// Timer wheel resolution. Timeouts are noticed at most one tick late; the
/// protocol allows one second of slack for call timeouts.
pub const TIMER_TICK_MS: u64 = 100;

/// Timer wheel slots: one revolution covers `TIMER_TICK_MS * TIMER_SLOTS`
/// (102.4 s), longer than every default timeout, so most entries fire on
/// their first visit.
pub const TIMER_SLOTS: usize = 1024;

/// io_uring submission queue entries per shard; the completion queue is
/// twice as large (the tokio-uring default of 256/512 overflows under a
/// burst of thousands of connections).
pub const URING_ENTRIES: u32 = 4096;

/// Most ids in one list of an admin request: the members of `PUT
/// /v1/rooms/{id}`, the contacts of `PUT /v1/users/{id}/contacts`, the
/// list of a `put_room` or `put_contacts` batch operation. Protocol 6.2
/// asks for rooms of 100,000 in one PUT; a list costs the server 16 bytes
/// an id while it is applied, so a million (a room the size 6.2 asks of
/// batches) is allowed in one list too. A longer list is 400.
pub const MAX_IDS_PER_LIST: usize = 1_000_000;

/// Most operations in one `POST /v1/batch` (protocol 6.1).
pub const MAX_BATCH_OPS: usize = 1_000_000;

/// Largest admin request body: protocol 6.1 asks for at least 64 MiB,
/// which holds a million batch operations of typical ids (about 60
/// bytes each). The body is held while it is parsed, so this is also
/// what one request may cost in memory.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 << 20;

/// redb's page cache (its default is 1 GiB). The store is read in full
/// only at start-up and then written a change at a time, so a large cache
/// buys nothing: a 2,000,000-row write took 1.74 s with 16 MiB, 1.75 s
/// with 64 MiB and 2.85 s with 1 GiB here, and a full scan no longer.
/// The cache is the store's memory, kept out of the relations' budget.
pub const STORE_CACHE_BYTES: usize = 16 << 20;

/// Users whose flips a shard computes at once in round 2 of a relation
/// change (docs/architecture.md, "Relations"). Each one's flip sets hold
/// its active watchers, so a chunk of users in a room with 10,000 online
/// holds 256 x 10,000 ids (20 MB) at most; chunks go one after the other.
pub const FLIP_CHUNK_USERS: usize = 256;

/// Longest token lifetime `POST /v1/tokens` issues (one year).
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

/// The token lifetime `POST /v1/tokens` issues when the body names none
/// (an hour, as in the protocol's example).
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;

/// A connection being closed (after an error, or a drain) gets this long
/// to take what was queued for it before its socket is shut down anyway, so
/// a peer that stopped reading cannot hold it open.
pub const CLOSE_FLUSH_MS: u64 = 2_000;

/// Default `--drain-timeout-ms`: how long SIGTERM waits for connections to
/// take their last bytes before the process exits.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 5_000;

/// Default `--max-connections-per-user`: connections of one user, both
/// services together. Far above any real user's devices (and above what a
/// load test that logs many connections in as one user needs); stops one
/// account from exhausting the server.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: u32 = 4096;

/// Descriptors kept free below RLIMIT_NOFILE when `--max-connections` is
/// not given (listeners, rings, the database, the admin API), so accept
/// never fails for lack of descriptors.
pub const FD_RESERVE: u64 = 64;

/// Default `--max-rooms-per-conn`.
pub const DEFAULT_MAX_ROOMS_PER_CONN: usize = 1024;

/// Default `--rtmsg-rate`: OP_RTMSG per second per connection (token
/// bucket refill). Above what one connection can push through a shard
/// (a saturated publisher measured about 300k/s here), so it never shapes
/// a benchmark; it caps a runaway client. Operators set it to what their
/// clients really need.
pub const DEFAULT_RTMSG_RATE: u32 = 1_000_000;

/// Default `--setpres-rate`: OP_SETPRES per second per connection. The
/// contract answers every OP_SETPRES and knows no rate limit, so the
/// default must not bind even a test that pipelines thousands (at 1,000/s
/// a burst of 3,000 lost a third); it still caps a runaway client, whose
/// every change fans out to all its watchers.
pub const DEFAULT_SETPRES_RATE: u32 = 10_000;

/// Token bucket depth, in seconds of the rate: bursts up to twice the
/// per-second rate pass.
pub const RATE_BURST_SECS: u32 = 2;

// --- WebSocket and TLS (protocol sections 8 and 9) ---

/// Most bytes of a WebSocket handshake request (request line and headers).
/// A browser's upgrade request is well under 1 KiB, 2-4 KiB with cookies
/// for the site; 8 KiB is what nginx allows one header buffer by default.
/// Past it the request is refused (HTTP 400) without waiting for
/// the end of the headers, so a peer cannot make a connection buffer more.
pub const WS_HANDSHAKE_MAX_BYTES: usize = 8 * 1024;

/// Most header lines in a WebSocket handshake request (httparse needs a
/// fixed array). Browsers send 10-20; more is refused with HTTP 400.
pub const WS_HANDSHAKE_MAX_HEADERS: usize = 64;

/// Most command bytes one WebSocket message carries: the segments of a
/// batch past it go in the next write, under a header of their own (a
/// segment larger than this, one large frame, is a message alone). Once
/// its header is out a message must be sent whole, so this bounds what a
/// connection closed as a slow consumer must still send before its
/// OP_ERROR (the rest of the message in progress, `OutQueue::cut`), as
/// [`TLS_WRITE_PLAINTEXT_MAX`] bounds it over TLS; a header and a write
/// per 256 KiB cost nothing measurable.
pub const WS_MESSAGE_MAX: usize = 256 * 1024;

/// Most plaintext one TLS write encrypts (the frames of a batch past it
/// wait for the next write). Encrypted bytes must be written whole, so a
/// batch's records are held until the socket took them all: this bounds
/// that buffer per connection whatever the batch (up to 1,024 frames of a
/// 64 KiB message would be 64 MiB), while 16 full records per write keep
/// the system call and record overhead small.
pub const TLS_WRITE_PLAINTEXT_MAX: usize = 256 * 1024;

/// The longest command a client may send: OP_RTMSG with the longest
/// message `--max-rtmsg-len` allows (header 25 bytes), or OP_AUTH with the
/// longest token (3 + 4,096), whichever is longer. A WebSocket message
/// longer than this is closed with 1009 (protocol section 8), so a small
/// `--max-rtmsg-len` still lets a login through.
pub fn longest_command(max_rtmsg_len: u32) -> usize {
    (max_rtmsg_len as usize + chatd_proto::chatd::RTMSG_HEADER_LEN).max(3 + MAX_TOKEN_LEN)
}

// ---- cluster mode (docs/cluster.md) --------------------------------------

/// Default `--node-timeout-ms`: a node silent this long is dropped by the
/// others (protocol section 10).
pub const DEFAULT_NODE_TIMEOUT_MS: u64 = 5000;

/// Heartbeats per node timeout: a node is dropped only after this many
/// heartbeats in a row were missed, so one late packet drops nobody.
pub const HEARTBEATS_PER_TIMEOUT: u64 = 4;

/// Bytes of encoded operations in one JetStream message of a relation
/// change: half of nats-server's default `max_payload` (1 MiB), leaving
/// room for the header and for servers configured a little lower.
pub const CLUSTER_PART_BYTES: usize = 512 << 10;

/// Node slots: the high 8 bits of a client id name the node that gave it
/// (protocol 10: client ids unique cluster-wide with no round trip per
/// login), so a cluster has at most 255 nodes (slot 0 is never used, so
/// that single-node ids stay as they were) and each node 2^24 ids before
/// its counter wraps (it skips ids still in use, as in single-node mode).
pub const CLUSTER_SLOT_BITS: u32 = 8;

/// How long a node's slot claim in the JetStream slot stream lives
/// without renewal (renewed every third of it): a node killed without
/// draining frees its slot after this, long after its clients (and
/// their ids) were dropped by the node timeout.
pub const CLUSTER_SLOT_TTL_MS: u64 = 30_000;

/// Longest wait for NATS at start, and for a relation write's JetStream
/// acknowledgement (beyond it the write answers 503).
pub const CLUSTER_NATS_TIMEOUT_MS: u64 = 5000;

/// Longest wait for the round trip to JetStream a relation write makes
/// before publishing (beyond it the write answers 503 and nothing was
/// sent): well above a LAN round trip, well below an admin client's
/// patience.
pub const CLUSTER_PROBE_TIMEOUT_MS: u64 = 1000;

/// Longest wait for the other nodes' answers to an admin `GET`'s live
/// fields (protocol 10 lets them lag up to a second; a node that does not
/// answer in time is left out of the sums).
pub const CLUSTER_QUERY_TIMEOUT_MS: u64 = 500;
