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

pub mod chatd;
pub mod client_ids;
pub mod conn;
pub mod control;
pub mod flips;
pub mod mesh;
pub mod msg;
pub mod pool;
pub mod route;
pub mod statusd;
pub mod striped;
pub mod user_conns;

use crate::ids::FastMap;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slab::Slab;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::core::presence::Presence;
use crate::core::relations::ShardRelations;
use crate::core::room::Rooms;
use crate::ids::{Service, UserId};
use crate::limits;
use crate::metrics::ShardMetrics;
use crate::net::arena::FrameArena;
use crate::net::io::{Backend, Listener};
use crate::net::outbuf::Flush;
use crate::protocol::Limits;
use crate::timer::TimerWheel;

use self::client_ids::ClientIds;
use self::conn::Conn;
use self::mesh::{InboxRx, Mesh};
use self::msg::{ConnRef, ShardMsg};

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
}

impl Shared {
    /// Milliseconds since start, on the monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// State owned by one shard. Borrowed only inside one handler at a time.
pub struct State {
    /// Connections accepted by this shard.
    pub conns: Slab<Conn>,
    /// Next generation for a slot, so stale [`ConnRef`]s miss.
    pub next_gen: u16,
    /// Rooms homed here.
    pub rooms: Rooms<ConnRef>,
    /// Users homed here: presence and the state of their updates.
    pub presence: Presence<ConnRef>,
    /// Login dumps in progress for statusd clients of users homed here.
    pub dumps: FastMap<ConnRef, statusd::Dump>,
    /// This shard's part of the relations, and who is active.
    pub relations: ShardRelations,
    /// Gathers and the relation change's round in flight here.
    pub updates: statusd::Updates,
    /// Login, idle and close deadlines of this shard's connections.
    pub timers: TimerWheel<ConnRef>,
    /// Small frames the server builds.
    pub arena: FrameArena,
    /// Set once draining started.
    pub draining: bool,
    /// When a drain must end.
    pub drain_end_ms: Option<u64>,
    /// Connections that have a writer task, checked every tick.
    pub writers: Vec<ConnRef>,
    /// Connections with batched frames waiting for the batch flush.
    pub batched: Vec<ConnRef>,
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
    /// Messages to this shard from itself, handled after the current one.
    local: RefCell<VecDeque<ShardMsg>>,
    /// True while the local queue is being drained (no recursion).
    draining_local: Cell<bool>,
    /// Messages to other shards, batched until the current handler ends.
    outbox: RefCell<Vec<(usize, ShardMsg)>>,
    /// Answers to the admin thread, sent after the outbox (see
    /// [`Shard::ack_after_flush`]).
    acks: RefCell<Vec<Ack>>,
    /// Notified when a drain has finished: the shard thread then ends.
    pub finished: tokio::sync::Notify,
    /// Notified when the batch list becomes non-empty: the batch flush
    /// then runs one window later.
    pub batch_due: tokio::sync::Notify,
    /// Per-shard recipient counts, reused by [`Shard::deliver`].
    scratch_counts: RefCell<Vec<usize>>,
    /// An empty connection list, reused for the recipients of a message.
    conn_list: RefCell<Vec<ConnRef>>,
    /// Empty write batches, reused by read tasks writing their replies.
    write_batches: RefCell<Vec<Vec<Bytes>>>,
    /// Per-shard recipient lists being built by [`Shard::deliver`].
    scratch_groups: RefCell<Vec<(usize, Vec<ConnRef>)>>,
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
    fn new(id: usize, shared: Arc<Shared>, this: std::rc::Weak<Shard>) -> Self {
        let now = shared.now_ms();
        let state = State {
            conns: Slab::with_capacity(conn_slots(&shared)),
            next_gen: 0,
            rooms: Rooms::new(shared.config.call_timeout_ms, now),
            presence: Presence::new(),
            dumps: FastMap::default(),
            relations: ShardRelations::new(),
            updates: statusd::Updates::default(),
            timers: TimerWheel::new(limits::TIMER_TICK_MS, limits::TIMER_SLOTS, now),
            arena: FrameArena::default(),
            draining: false,
            drain_end_ms: None,
            writers: Vec::new(),
            batched: Vec::new(),
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
            self.outbox.borrow_mut().push((to, msg));
        }
    }

    /// Handles everything queued for this shard by itself, then sends what
    /// handlers addressed to other shards. Call after every entry point.
    pub fn flush(&self) {
        if self.draining_local.replace(true) {
            return;
        }
        loop {
            let next = self.local.borrow_mut().pop_front();
            match next {
                Some(msg) => self.handle(msg),
                None => break,
            }
        }
        self.draining_local.set(false);
        let out = std::mem::take(&mut *self.outbox.borrow_mut());
        for (to, msg) in out {
            self.shared.mesh.send(to, msg);
        }
        let acks = std::mem::take(&mut *self.acks.borrow_mut());
        for (done, value) in acks {
            // An error means the admin side stopped waiting (shutdown).
            let _ = done.send(value);
        }
    }

    /// Answers the admin thread with `value` once everything this shard
    /// has queued so far is handled (its local queue) or sent (to other
    /// shards): whatever the admin sends next reaches every shard behind
    /// it, which is what orders the rounds of a relation change.
    pub fn ack_after_flush(
        &self,
        done: tokio::sync::oneshot::Sender<Vec<UserId>>,
        value: Vec<UserId>,
    ) {
        self.acks.borrow_mut().push((done, value));
    }

    /// Handles one message addressed to this shard.
    fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Nop => {}
            ShardMsg::Join { .. }
            | ShardMsg::Leave { .. }
            | ShardMsg::RtMsg { .. }
            | ShardMsg::InCall { .. }
            | ShardMsg::ConnGone { .. } => chatd::handle_room_msg(self, msg),
            ShardMsg::Deliver {
                frame,
                conns,
                from,
                flush,
            } => {
                self.deliver_local(&frame, &conns, flush);
                // The list goes back to the shard that built it.
                if let Some(pool) = self.shared.list_pools.get(from as usize) {
                    pool.give(conns);
                }
            }
            ShardMsg::Notice { conn, notice } => conn::apply_notice(self, conn, notice),
            ShardMsg::PresHello { .. }
            | ShardMsg::PresSet { .. }
            | ShardMsg::PresGone { .. }
            | ShardMsg::PresFanout { .. }
            | ShardMsg::DumpQuery { .. }
            | ShardMsg::DumpPart { .. }
            | ShardMsg::Active { .. }
            | ShardMsg::Gather { .. }
            | ShardMsg::Gathered { .. } => statusd::handle_user_msg(self, msg),
            ShardMsg::FlipGather { .. } | ShardMsg::FlipPart { .. } | ShardMsg::Emit { .. } => {
                flips::handle(self, msg)
            }
            ShardMsg::Install { .. }
            | ShardMsg::Apply { .. }
            | ShardMsg::Flips { .. }
            | ShardMsg::RoundDone
            | ShardMsg::QueryRooms { .. }
            | ShardMsg::QueryRoom { .. }
            | ShardMsg::QueryUser { .. } => control::handle_admin_msg(self, msg),
            ShardMsg::Shutdown { deadline_ms } => conn::start_drain(self, deadline_ms),
        }
    }

    /// Queues `frame` on every listed connection, wherever it lives, to be
    /// written as `flush` says: one reference-counted buffer for all, one
    /// mesh message per other shard.
    pub fn deliver(&self, frame: &Bytes, conns: &[ConnRef], flush: Flush) {
        let me = self.id;
        if self.shards() == 1 || conns.iter().all(|c| c.shard as usize == me) {
            return self.deliver_local(frame, conns, flush);
        }
        // Count first, so each other shard's list is taken once at its exact
        // size (from this shard's pool: the receiver gives it back); local
        // ones are served without a list.
        let mut counts = self.scratch_counts.borrow_mut();
        counts.clear();
        counts.resize(self.shards(), 0);
        for c in conns {
            counts[c.shard as usize] += 1;
        }
        let mut groups = self.scratch_groups.borrow_mut();
        for (shard, &n) in counts.iter().enumerate() {
            if n > 0 && shard != me {
                groups.push((shard, self.shared.list_pools[me].take(n)));
            }
        }
        drop(counts);
        {
            let mut st = self.state.borrow_mut();
            for &c in conns {
                let shard = c.shard as usize;
                if shard == me {
                    conn::queue_frame(self, &mut st, c, frame.clone(), flush);
                } else if let Some((_, g)) = groups.iter_mut().find(|(s, _)| *s == shard) {
                    g.push(c);
                }
            }
        }
        for (shard, conns) in groups.drain(..) {
            let frame = frame.clone();
            let from = me as u16;
            let msg = ShardMsg::Deliver {
                frame,
                conns,
                from,
                flush,
            };
            self.send(shard, msg);
        }
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

    /// Queues `frame` on connections of this shard.
    pub fn deliver_local(&self, frame: &Bytes, conns: &[ConnRef], flush: Flush) {
        let mut st = self.state.borrow_mut();
        for &c in conns {
            conn::queue_frame(self, &mut st, c, frame.clone(), flush);
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
}

/// Starts shard `id` on its own thread, pinned to `core` if given. The
/// shard builds its runtime, then waits for `go` before accepting (so
/// relations are in place first). Reports runtime set-up failure on `ready`.
pub fn spawn_shard(
    id: usize,
    shared: Arc<Shared>,
    inbox: InboxRx,
    listeners: ShardListeners,
    backend: Backend,
    core: Option<core_affinity::CoreId>,
    ready: std::sync::mpsc::Sender<Result<usize, StartError>>,
) -> Result<ShardHandle, StartError> {
    let thread = std::thread::Builder::new()
        .name(format!("shard-{id}"))
        .spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(shard = id, "could not pin to core {}", core.id);
                }
            }
            let shard = Rc::new_cyclic(|this| Shard::new(id, shared, this.clone()));
            let run = run_shard(shard, inbox, listeners, backend);
            match backend {
                Backend::Uring => {
                    let mut builder = tokio_uring::builder();
                    let mut urb = tokio_uring::uring_builder();
                    // COOP_TASKRUN avoids interrupting the thread for every
                    // completion; SINGLE_ISSUER|DEFER_TASKRUN would hang
                    // tokio-uring 0.5. The CQ is twice the SQ so a burst of
                    // completions does not overflow.
                    urb.setup_coop_taskrun()
                        .setup_cqsize(limits::URING_ENTRIES * 2);
                    builder.entries(limits::URING_ENTRIES).uring_builder(&urb);
                    match tokio_uring::Runtime::new(&builder) {
                        Ok(rt) => {
                            let _ = ready.send(Ok(id));
                            rt.block_on(run);
                        }
                        Err(source) => {
                            let _ = ready.send(Err(StartError::Runtime {
                                shard: id,
                                backend: "io_uring",
                                source,
                            }));
                        }
                    }
                }
                Backend::Epoll => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = ready.send(Ok(id));
                            let local = tokio::task::LocalSet::new();
                            local.block_on(&rt, run);
                        }
                        Err(source) => {
                            let _ = ready.send(Err(StartError::Runtime {
                                shard: id,
                                backend: "epoll",
                                source,
                            }));
                        }
                    }
                }
            }
        })
        .map_err(StartError::Thread)?;
    Ok(ShardHandle { thread })
}

/// The shard's life: inbox task, timer task, then (after `go`) accept
/// loops; returns when a drain has finished.
async fn run_shard(shard: Rc<Shard>, inbox: InboxRx, listeners: ShardListeners, backend: Backend) {
    tokio::task::spawn_local(inbox_loop(shard.clone(), inbox));
    tokio::task::spawn_local(timer_loop(shard.clone()));
    let window = shard.shared.config.presence_batch_ms;
    if window > 0 {
        let window = Duration::from_millis(window);
        tokio::task::spawn_local(batch_flush_loop(shard.clone(), window));
    }
    shard.shared.start_gate.wait().await;
    for (service, std_listener) in [
        (Service::Chatd, listeners.chatd),
        (Service::Statusd, listeners.statusd),
    ] {
        match Listener::from_std(backend, std_listener) {
            Ok(l) => {
                tokio::task::spawn_local(crate::net::conn::accept_loop(shard.clone(), l, service));
            }
            Err(e) => tracing::error!(
                shard = shard.id,
                "cannot listen for {}: {e}",
                service.name()
            ),
        }
    }
    shard.finished.notified().await;
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
    async fn wait(&self) {
        loop {
            let opened = self.opened.notified();
            if self.open.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            opened.await;
        }
    }
}

/// Drains the shard's inbox, in batches so connections' I/O interleaves.
async fn inbox_loop(shard: Rc<Shard>, inbox: InboxRx) {
    /// Messages handled before yielding to the connections' tasks.
    const BATCH: usize = 512;
    loop {
        let mut handled = 0;
        while let Some(msg) = inbox.try_recv() {
            shard.handle(msg);
            handled += 1;
            if handled == BATCH {
                break;
            }
        }
        shard.flush();
        if handled == BATCH {
            tokio::task::yield_now().await;
        } else {
            inbox.wait().await;
        }
    }
}

/// Flushes the batch list `window` after it became non-empty (so a
/// batched frame waits at most `window`); sleeps while it stays empty.
async fn batch_flush_loop(shard: Rc<Shard>, window: Duration) {
    loop {
        // `notify_one` leaves a permit when this task is not waiting yet,
        // so a list that became non-empty meanwhile is not missed.
        shard.batch_due.notified().await;
        tokio::time::sleep(window).await;
        conn::flush_batched(&shard);
    }
}

/// Drives the shard's timer wheels every tick.
async fn timer_loop(shard: Rc<Shard>) {
    let mut tick = tokio::time::interval(Duration::from_millis(limits::TIMER_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fired = Vec::new();
    loop {
        tick.tick().await;
        let now = shard.shared.now_ms();
        conn::poll_timers(&shard, now, &mut fired);
        conn::tick_writers(&shard);
        chatd::poll_call_timeouts(&shard, now);
        shard.flush();
        if conn::drain_finished(&shard, now) {
            shard.finished.notify_one();
            return;
        }
    }
}
