//! Shards: one thread per core, pinned, each with its own runtime
//! (tokio-uring, or tokio's epoll driver where io_uring is blocked) and its
//! own SO_REUSEPORT listeners for both services.
//!
//! A shard owns, and alone touches:
//! - the connections its listeners accepted ([`conn`]),
//! - the rooms whose home it is ([`route::room_home`]): joined
//!   connections, call participants and flag ([`chatd`]),
//! - the users whose home it is ([`route::user_home`]): presence and the
//!   updates that tell their watchers ([`statusd`]),
//! - its part of the relations: memberships of the rooms it is home to,
//!   contacts of the users it is home to, and who is active
//!   ([`crate::core::relations`]).
//!
//! Shards share no mutable state; they talk through [`mesh`]. Work for
//! the shard itself goes through a local queue instead of the channel, so a
//! handler never re-enters the shard's state while it holds it.
//!
//! # Layers
//!
//! This file holds the shard's types ([`Shard`], [`State`], [`Conn`],
//! [`Shared`], and the state of presence work in flight: [`Dump`],
//! [`Updates`], [`Flips`]); each module below uses only the ones listed before it, so
//! no module imports one that imports it back:
//!
//! - leaves: [`msg`], [`route`], [`budget`], [`mesh`], [`pool`], [`striped`],
//!   [`client_ids`], [`user_conns`], [`slots`];
//! - [`writer`]: writing a connection's queued frames (its writer task,
//!   and the replies its read task writes);
//! - [`conn`]: a connection's life on the shard (register, queue, close,
//!   timeouts, login bookkeeping) and delivery to many connections;
//! - [`chatd`], [`statusd`]: each service's own commands, and the rooms
//!   and users this shard is home to; [`flips`]: round 2 of a relation
//!   change (what it showed and hid); [`control`]: the admin thread's
//!   messages (start-up relations, relation changes, queries);
//! - [`cluster`]: what the cluster bridge hands the shard (cluster mode);
//! - [`input`]: the one input path both services share (decode errors,
//!   login, keepalive, rate limit), generic over [`input::ServiceInput`],
//!   which [`chatd`] and [`statusd`] implement;
//! - [`dispatch`]: handling a [`msg::ShardMsg`], and [`dispatch::flush`];
//! - [`driver`]: the connection driver (accept loop, read loop), over the
//!   transport seam ([`crate::net::transport`]);
//! - [`run`]: the shard thread, its runtime and its background tasks.

pub mod budget;
pub mod chatd;
pub mod client_ids;
pub mod cluster;
pub mod conn;
pub mod control;
pub mod dispatch;
pub mod driver;
pub mod flips;
pub mod input;
pub mod mesh;
pub mod msg;
pub mod pool;
pub mod route;
pub mod run;
pub mod slots;
pub mod statusd;
pub mod striped;
pub mod user_conns;
pub mod writer;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chatd_proto::Limits;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::core::presence::Presence;
use crate::core::ratelimit::TokenBucket;
use crate::core::relations::{FlipSets, ShardRelations};
use crate::core::room::Rooms;
use crate::ids::{ChatId, ClientId, FastMap, FastSet, Service, UserId};
use crate::limits;
use crate::metrics::ShardMetrics;
use crate::net::arena::FrameArena;
use crate::net::chunk::ChunkPool;
use crate::net::io::Stream;
use crate::net::outbuf::{Flush, OutQueue};
use crate::net::transport::Transport;
use crate::timer::{TimerKey, TimerWheel};

use self::client_ids::ClientIds;
use self::mesh::Mesh;
use self::msg::{ConnRef, ShardMsg};
use self::slots::Slots;

/// What every shard (and the admin thread) shares: read-only after start,
/// or internally synchronized without a server-wide lock.
pub struct Shared {
    /// Server configuration.
    pub config: Config,
    /// Senders into every shard.
    pub mesh: Mesh,
    /// Verifies OP_AUTH tokens.
    pub auth: Authenticator,
    /// chatd client ids.
    pub client_ids: ClientIds,
    /// Each shard's metrics, by shard index.
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Decoder limits.
    pub limits: Limits,
    /// Zero of the millisecond clock every shard uses.
    pub epoch: Instant,
    /// Logged-in connections per user.
    pub user_conns: user_conns::UserConns,
    /// Each shard's recycled recipient lists (see [`pool`]), by shard.
    pub list_pools: Vec<pool::ListPool<ConnRef>>,
    /// Open client connections, all shards (for `--max-connections`).
    pub open_conns: std::sync::atomic::AtomicU64,
    /// Opened when relations are loaded and shards may accept.
    pub start_gate: StartGate,
    /// `--max-connections`, resolved.
    pub max_conns: u64,
    /// Cluster mode: the way to the cluster bridge (docs/cluster.md).
    pub cluster: Option<crate::cluster::link::ClusterLink>,
    /// The certificate and key with `--tls-cert`: every listener speaks
    /// TLS, each new connection with the pair current at accept.
    pub tls: Option<Arc<crate::tls::Reloadable>>,
}

impl Shared {
    /// Milliseconds since start, on the monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// State owned by one shard. Borrowed only inside one handler at a time.
pub struct State {
    /// Connections accepted by this shard, each slot with its generation
    /// (so stale [`ConnRef`]s miss).
    pub conns: Slots<Conn>,
    /// Rooms homed here.
    pub rooms: Rooms<ConnRef>,
    /// Users homed here: presence and the state of their updates.
    pub presence: Presence<ConnRef>,
    /// Login dumps in progress for statusd clients of users homed here.
    pub dumps: FastMap<ConnRef, Dump>,
    /// This shard's part of the relations, and who is active.
    pub relations: ShardRelations,
    /// Gathers and the relation change's round in flight here.
    pub updates: Updates,
    /// Login, idle and close deadlines of this shard's connections.
    pub timers: TimerWheel<ConnRef>,
    /// Small frames the server builds.
    pub arena: FrameArena,
    /// Free output chunks, for the connections' queues.
    pub out_chunks: ChunkPool,
    /// Set once draining started.
    pub draining: bool,
    /// When a drain must end.
    pub drain_end_ms: Option<u64>,
    /// Connections that have a writer task, checked every tick.
    pub writers: Vec<ConnRef>,
    /// Connections with batched frames waiting for the batch flush.
    pub batched: Vec<ConnRef>,
    /// Connections that read no more and wait for the answers to what
    /// they sent before they close (see [`conn::peer_finished`],
    /// [`conn::error_after_answers`]).
    pub finishing: FastMap<ConnRef, Finishing>,
    /// Read loops that stopped reading (closing or finished) and wait for
    /// their socket to be shut down.
    pub shut_waiters: FastMap<ConnRef, std::task::Waker>,
    /// Read loops of paused connections ([`Conn::waits_for`]), woken when
    /// their connection closes ([`conn::wait_closing`]).
    pub paused_waiters: FastMap<ConnRef, std::task::Waker>,
    /// Sockets of connections gone after [`Shut::Write`], whose peer's
    /// last input is read and dropped until it closes or the deadline
    /// (ms) passes (`driver::linger`).
    pub lingering: Vec<(u64, Rc<Stream>)>,
}

impl State {
    /// The connection `c` refers to, if it is still open on this shard.
    pub fn conn(&mut self, c: ConnRef) -> Option<&mut Conn> {
        self.conns.get_mut(c.slot(), c.gen())
    }

    /// Shuts `c`'s socket down both ways (its flush failed or ran out of
    /// time, or the shard drains) and wakes its read loop if that waits
    /// for it: every shutdown of a registered connection goes through
    /// here or [`State::flushed`], since a closing connection's read loop
    /// may no longer read.
    pub fn shut_down(&mut self, c: ConnRef) {
        if let Some(conn) = self.conn(c) {
            conn.stream.shutdown();
        }
        self.mark_shut(c, Shut::Both);
    }

    /// `c` closes and its output is all written. If its read loop stopped
    /// reading (the peer sent more after the close), the peer is sent end
    /// of stream only ([`Stream::shutdown_write`]) and the read loop
    /// unregisters `c`, then reads and drops what the peer still sends
    /// until it closes (`driver::linger`): closing a socket with unread
    /// input resets it, losing the end of the output the kernel has not
    /// sent yet (a slow reader's OP_ERROR). Otherwise a read is pending
    /// and nothing is unread: both ways, which completes the read.
    pub fn flushed(&mut self, c: ConnRef) {
        if !self.shut_waiters.contains_key(&c) {
            return self.shut_down(c);
        }
        if let Some(conn) = self.conn(c) {
            if conn.shut == Shut::No {
                conn.stream.shutdown_write();
            }
        }
        self.mark_shut(c, Shut::Write);
    }

    fn mark_shut(&mut self, c: ConnRef, how: Shut) {
        if let Some(conn) = self.conn(c) {
            // Both stays both.
            conn.shut = conn.shut.max(how);
        }
        if let Some(waker) = self.shut_waiters.remove(&c) {
            waker.wake();
        }
    }

    /// The connection `c` refers to, with the shard's output chunk pool
    /// its queue copies frames into.
    pub fn conn_and_chunks(&mut self, c: ConnRef) -> Option<(&mut Conn, &mut ChunkPool)> {
        let conn = self.conns.get_mut(c.slot(), c.gen())?;
        Some((conn, &mut self.out_chunks))
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for OP_AUTH.
    Auth,
    /// Authenticated, waiting for OP_HELLO.
    Hello,
    /// Logged in.
    Ready,
    /// Flushing its last bytes; reads are ignored.
    Closing,
}

/// A connection that reads no more and waits for the answers to its
/// earlier commands, some in flight between shards, before it closes: an
/// echo goes to every shard, answered behind what that shard had for it
/// (see [`conn::peer_finished`]).
#[derive(Debug)]
pub struct Finishing {
    /// Echoes not back yet.
    pub echoes_left: usize,
    /// The closing error its input caused, sent once the echoes are back
    /// (`(code, opcode, id)`); `None` when its peer ended its stream.
    pub error: Option<(chatd_proto::ErrorCode, u8, u64)>,
}

/// How far a connection's socket is shut down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shut {
    /// Open.
    No,
    /// Its output is all written and the peer was sent end of stream;
    /// its last input is read and dropped until it closes.
    Write,
    /// Both ways.
    Both,
}

/// One connection's shard-side state.
pub struct Conn {
    /// Which listener accepted it.
    pub service: Service,
    /// The socket, shared with the read and write tasks.
    pub stream: Rc<Stream>,
    /// What turns the socket's bytes into the command stream and back
    /// (the transport seam; zero-sized for plain TCP).
    pub transport: Transport,
    /// Login phase.
    pub phase: Phase,
    /// Authenticated user (0 before OP_AUTH).
    pub user: UserId,
    /// chatd client id (0 before OP_HELLO, and on statusd).
    pub client: ClientId,
    /// Frames waiting to be written.
    pub out: OutQueue,
    /// Received bytes not handled yet (a partial command), kept here
    /// between reads; the read task owns it while a read is pending.
    pub read_buf: BytesMut,
    /// When the last bytes arrived, for the idle timeout.
    pub last_rx_ms: u64,
    /// When the login timeout closes it if it is still logging in.
    pub login_deadline_ms: u64,
    /// Its entry on the shard's timer wheel.
    pub timer: Option<TimerKey>,
    /// chatd: rooms it has joined or asked to join. A join counts from
    /// when it is sent (so `--max-rooms-per-conn` holds however many are
    /// pipelined) until its refusal (NOT_MEMBER) or OP_LEAVE comes back.
    pub joined: Vec<ChatId>,
    /// Logged in: counted in the user's connections, and the user's home
    /// shard was told (both undone when it closes).
    pub at_home: bool,
    /// How far its socket is shut down ([`State::flushed`],
    /// [`State::shut_down`]): once it is, the read loop ends.
    pub shut: Shut,
    /// Rate limit of OP_RTMSG (chatd) or OP_SETPRES (statusd).
    pub bucket: TokenBucket,
    /// Paused: the shard whose inbox must have room before its input is
    /// handled further ([`budget`]).
    pub waits_for: Option<u16>,
    /// Paused when its peer ended the transport (a WebSocket Close, TLS
    /// close_notify) after the commands still buffered: closed once they
    /// are handled.
    pub close_after_input: bool,
}

/// A login dump in progress, at the user's home shard (see
/// [`statusd`]).
#[derive(Debug, Default)]
pub struct Dump {
    /// Shards whose answer to the dump's queries has not arrived yet.
    pub parts_left: usize,
    /// Entries sent so far.
    pub entries: u64,
    /// Users whose entry was sent (a dump gathered again skips them).
    pub sent: Vec<UserId>,
    /// A query found a later relation epoch: gather again once all
    /// answers are in.
    pub stale: bool,
    /// What the client's commands during the dump asked for, done (and
    /// answered) once it ends, in order.
    pub held: Vec<Held>,
    /// The client ended its stream meanwhile: its [`msg::ShardMsg::Echoed`]
    /// follows the dump's end.
    pub echo: bool,
}

/// A statusd command that came during its connection's login dump,
/// waiting for the dump's end (see [`Dump`]).
#[derive(Debug)]
pub enum Held {
    /// OP_SETPRES with this value.
    SetPres(u8),
    /// A command refused where it was read ([`msg::ShardMsg::Refused`]).
    Refused(msg::Notice),
}

/// Presence work in flight at this shard: gathers of watchers (for
/// updates and login dumps, see [`statusd`]) and round 2 of a relation
/// change (see [`flips`]).
#[derive(Debug, Default)]
pub struct Updates {
    /// Gathers by id.
    pub gathers: FastMap<u64, Gather>,
    /// The next gather id.
    pub next_id: u64,
    /// Round 2 of the relation change being applied.
    pub flips: Flips,
}

/// A gather of the active members of `user`'s rooms, from every shard
/// (see [`statusd`]).
#[derive(Debug)]
pub struct Gather {
    /// Whose watchers are gathered.
    pub user: UserId,
    /// Publish the user's presence to them (and its active contacts).
    pub publish: bool,
    /// The login dump of this client of `user` needs them as candidates.
    pub dump: Option<ConnRef>,
    /// For a gather that follows an update (changes came during its
    /// gather): who that update reached, sorted.
    pub prev: Option<Vec<UserId>>,
    /// Shards whose part has not arrived.
    pub parts_left: usize,
    /// The epoch of the parts so far; `None` before the first.
    pub epoch: Option<u64>,
    /// Two parts were read at different epochs.
    pub mixed: bool,
    /// The parts' users (repeats possible).
    pub users: Vec<UserId>,
}

/// This shard's state of the relation change being applied (see
/// [`flips`]).
#[derive(Debug, Default)]
pub struct Flips {
    /// Round 2 in flight here, if any.
    pub round: Option<FlipRound>,
    /// A relation change is being applied (from its round 1 here until
    /// the admin says its round 2 is over everywhere).
    pub open: bool,
    /// Users homed here whose watchers stopped possibly showing a value
    /// other than 0 while the round was open: a watcher that lost sight
    /// of them in this change was not told 0 by their last update (it was
    /// gathered at the new epoch, without it), so it still needs `OP_PRES
    /// user 0` (see `flips::emit`).
    pub stopped_showing: FastSet<UserId>,
}

impl Flips {
    /// `user`'s last update left its watchers at 0 (it may have just gone
    /// quiet): remembered while a round is open.
    pub fn stopped_showing(&mut self, user: UserId) {
        if self.open {
            self.stopped_showing.insert(user);
        }
    }
}

/// Round 2 of a relation change at this shard (see [`flips`]): for each
/// user of `touched` homed here and active, its flip sets are gathered
/// from every shard, a chunk of users at a time; what changed is sent;
/// then `done` is answered.
#[derive(Debug)]
pub struct FlipRound {
    /// The relation change's epoch.
    pub epoch: u64,
    /// Every active user the change touched, sorted.
    pub touched: Arc<Vec<UserId>>,
    /// Users homed here still to do.
    pub queue: Vec<UserId>,
    /// The chunk in flight, with its sets merged so far.
    pub sets: FastMap<UserId, FlipSets>,
    /// Shards whose part of the chunk has not arrived.
    pub parts_left: usize,
    /// Answered once the round is over here.
    pub done: tokio::sync::oneshot::Sender<Vec<UserId>>,
}

/// An answer to the admin thread and its value.
type Ack = (tokio::sync::oneshot::Sender<Vec<UserId>>, Vec<UserId>);

/// One shard: its state and its ways out.
pub struct Shard {
    /// Index of this shard.
    pub id: usize,
    /// The shard itself, for starting writer tasks from handlers.
    pub this: std::rc::Weak<Shard>,
    /// Shared with all shards.
    pub shared: Arc<Shared>,
    /// This shard's metrics.
    pub metrics: Arc<ShardMetrics>,
    /// The shard's own state.
    pub state: RefCell<State>,
    /// Messages to this shard from itself, handled after the current one
    /// ([`dispatch::flush`]).
    pub(super) local: RefCell<VecDeque<ShardMsg>>,
    /// True while the local queue is being drained (no recursion).
    pub(super) draining_local: Cell<bool>,
    /// Messages to other shards, batched until the current handler ends.
    pub(super) outbox: RefCell<Vec<(usize, ShardMsg)>>,
    /// Answers to the admin thread, sent after the outbox (see
    /// [`Shard::ack_after_flush`]).
    pub(super) acks: RefCell<Vec<Ack>>,
    /// Notified when a drain has finished: the shard thread then ends.
    pub finished: tokio::sync::Notify,
    /// Notified when the batch list becomes non-empty: the batch flush
    /// then runs one window later.
    pub batch_due: tokio::sync::Notify,
    /// Per-shard recipient counts, reused by [`Shard::deliver`].
    pub(super) scratch_counts: RefCell<Vec<usize>>,
    /// An empty connection list, reused for the recipients of a message.
    conn_list: RefCell<Vec<ConnRef>>,
    /// Empty write batches, reused by read tasks writing their replies.
    write_batches: RefCell<Vec<Vec<Bytes>>>,
    /// Per-shard recipient lists being built by [`Shard::deliver`].
    pub(super) scratch_groups: RefCell<Vec<(usize, Vec<ConnRef>)>>,
}

/// Connection slots a shard reserves up front: its share of
/// `--max-connections` (accepts spread evenly over the shards' listeners),
/// at most [`limits::CONN_SLOTS_RESERVED_MAX`]. Only touched slots become
/// resident, and a slab that never grows leaves no freed old copies
/// behind: growing by doubling to 19,000 connections had cost about 230
/// bytes of RSS per connection (1590 -> 1360 bytes measured).
fn conn_slots(shared: &Shared) -> usize {
    let share = shared.max_conns / shared.mesh.shards().max(1) as u64;
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .min(limits::CONN_SLOTS_RESERVED_MAX)
}

impl Shard {
    /// A shard's state before it accepts anything (`this` is the `Rc` it
    /// will live in).
    pub(super) fn new(id: usize, shared: Arc<Shared>, this: std::rc::Weak<Shard>) -> Self {
        let now = shared.now_ms();
        let mut rooms = Rooms::new(shared.config.call_timeout_ms, now);
        if shared.cluster.is_some() {
            rooms.enable_cluster();
        }
        let state = State {
            conns: Slots::with_capacity(conn_slots(&shared), limits::CONN_SLOTS_MAX - 1, 0),
            rooms,
            presence: Presence::new(),
            dumps: FastMap::default(),
            relations: ShardRelations::new(),
            updates: Updates::default(),
            timers: TimerWheel::new(limits::TIMER_TICK_MS, limits::TIMER_SLOTS, now),
            arena: FrameArena::default(),
            out_chunks: ChunkPool::default(),
            draining: false,
            drain_end_ms: None,
            writers: Vec::new(),
            batched: Vec::new(),
            finishing: FastMap::default(),
            shut_waiters: FastMap::default(),
            paused_waiters: FastMap::default(),
            lingering: Vec::new(),
        };
        Self {
            id,
            this,
            metrics: shared.metrics[id].clone(),
            shared,
            state: RefCell::new(state),
            local: RefCell::new(VecDeque::new()),
            draining_local: Cell::new(false),
            outbox: RefCell::new(Vec::new()),
            acks: RefCell::new(Vec::new()),
            finished: tokio::sync::Notify::new(),
            batch_due: tokio::sync::Notify::new(),
            scratch_counts: RefCell::new(Vec::new()),
            scratch_groups: RefCell::new(Vec::new()),
            write_batches: RefCell::new(Vec::new()),
            conn_list: RefCell::new(Vec::new()),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shared.mesh.shards()
    }

    /// Sends `msg` to shard `to`: queued locally when that is this shard,
    /// else sent on the mesh once the current handler returns.
    pub fn send(&self, to: usize, msg: ShardMsg) {
        if to == self.id {
            self.local.borrow_mut().push_back(msg);
        } else {
            // An OP_RTMSG counts from now, not when the outbox is flushed:
            // the read's later commands already see it (see [`budget`]).
            if msg.counts_when_queued() {
                self.shared.mesh.budget().charge(to, msg.queued_bytes());
            }
            self.outbox.borrow_mut().push((to, msg));
        }
    }

    /// Answers the admin thread with `value` once everything this shard
    /// has queued so far is handled (its local queue) or sent (to other
    /// shards) by [`dispatch::flush`]: whatever the admin sends next
    /// reaches every shard behind it, which is what orders the rounds of a
    /// relation change.
    pub fn ack_after_flush(
        &self,
        done: tokio::sync::oneshot::Sender<Vec<UserId>>,
        value: Vec<UserId>,
    ) {
        self.acks.borrow_mut().push((done, value));
    }

    /// An empty connection list (recycled; give it back when done).
    pub fn take_conn_list(&self) -> Vec<ConnRef> {
        std::mem::take(&mut *self.conn_list.borrow_mut())
    }

    /// Gives a connection list back for the next message.
    pub fn give_conn_list(&self, mut list: Vec<ConnRef>) {
        list.clear();
        let mut slot = self.conn_list.borrow_mut();
        if list.capacity() > slot.capacity() {
            *slot = list;
        }
    }

    /// An empty write batch (recycled).
    pub fn take_write_batch(&self) -> Vec<Bytes> {
        self.write_batches.borrow_mut().pop().unwrap_or_default()
    }

    /// Gives a write batch back for reuse.
    pub fn give_write_batch(&self, mut batch: Vec<Bytes>) {
        batch.clear();
        let mut pool = self.write_batches.borrow_mut();
        // A few suffice: read tasks of one shard write one at a time
        // between awaits, and a stalled write holds its own.
        if pool.len() < 64 && batch.capacity() <= limits::WRITE_IOVECS_MAX {
            pool.push(batch);
        }
    }

    /// How presence updates about other users are written: batched when
    /// `--presence-batch-ms` is set.
    pub fn presence_flush(&self) -> Flush {
        if self.shared.config.presence_batch_ms > 0 {
            Flush::Batched
        } else {
            Flush::Now
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The I/O backend could not be set up on a shard.
    #[error("shard {shard}: cannot start the {backend} runtime: {source}")]
    Runtime {
        shard: usize,
        backend: &'static str,
        source: std::io::Error,
    },
    /// A shard thread could not be spawned.
    #[error("cannot spawn shard thread: {0}")]
    Thread(std::io::Error),
}

/// A running shard thread.
pub struct ShardHandle {
    /// The thread; joins when the shard has drained.
    pub thread: std::thread::JoinHandle<()>,
}

/// One shard's listeners, bound by the caller (so it can print addresses).
pub struct ShardListeners {
    /// chatd listener.
    pub chatd: std::net::TcpListener,
    /// statusd listener.
    pub statusd: std::net::TcpListener,
    /// WebSocket listener (both services).
    pub ws: std::net::TcpListener,
}

/// The start signal every shard waits for before accepting: relations
/// must be in place first.
#[derive(Default)]
pub struct StartGate {
    open: std::sync::atomic::AtomicBool,
    opened: tokio::sync::Notify,
}

impl StartGate {
    /// Lets every shard accept.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
        self.opened.notify_waiters();
    }

    /// Resolves once the gate is open.
    pub async fn wait(&self) {
        loop {
            let opened = self.opened.notified();
            if self.open.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }
}
