//! Fan-out of one room broadcast, sans-IO: the room state machine picks the
//! recipients and one shared `Bytes` frame is queued on each recipient's
//! [`OutQueue`] (copied into its output chunk from the shard's
//! [`ChunkPool`]), as a shard does for an OP_RTMSG to `0/0`.
//!
//! - `fanout/local/N`: every recipient on the room's home shard, each
//!   queue written after every broadcast (a reader that keeps up with a
//!   paced sender: one frame per write).
//! - `fanout/local_burst/N`: the same, but queues are written after every
//!   [`BURST`] broadcasts (saturation: many frames per write, chunks
//!   filling and growing).
//! - `fanout/across_shards/N`: recipients split over two fake shards by
//!   connection id; the remote half goes through a crossbeam channel to a
//!   second thread that queues them (the shard mesh's `Deliver`); the list
//!   comes from the sender's `ListPool` and the receiver gives it back,
//!   as the server's `Shard::deliver` does.
//!
//! Each room has N recipients plus the sender (N + 1 joined connections);
//! throughput is in deliveries. Queues are drained every iteration with
//! `take_batch` / `written`, as a writer that keeps up would, so memory
//! stays flat. A counting global allocator (over mimalloc, the server's)
//! reports allocations per delivery over a steady-state loop after
//! warm-up; the goal on the local path is 0.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chatd::core::room::{RoomOutput, Rooms};
use chatd::net::chunk::ChunkPool;
use chatd::net::outbuf::{Flush, OutQueue};
use chatd::shard::pool::ListPool;
use chatd_proto::chatd::{self as cw, Event};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::Arc;

/// Counts allocations (and reallocations) on top of mimalloc.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// Safety: forwards every call unchanged to mimalloc, which upholds the
// GlobalAlloc contract; the counter has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: same layout contract as our caller's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // Safety: `ptr` came from this allocator with `layout`.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Safety: `ptr` came from this allocator with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SIZES: [u64; 4] = [1, 10, 100, 1000];
const CHAT: u64 = 7;
/// The sender's connection id; recipients are 0..N.
const SENDER: u64 = u64::MAX;
/// Queue cap: far above what one iteration queues.
const CAP: usize = 4 << 20;
/// Segments per vectored write, as the server's epoll writer.
const IOVECS: usize = 64;
/// Broadcasts between two writes in the burst case.
const BURST: usize = 64;

/// A room with `n` recipients (connections 0..n, one user each) and the
/// sender, all joined.
fn room(n: u64) -> Rooms<u64> {
    let mut rooms = Rooms::new(10_000, 0);
    let mut out: Vec<RoomOutput<u64>> = Vec::new();
    // Every user is a member (the shard's relation index says so).
    rooms.join(CHAT, SENDER, 1_000_000, 1, true, &mut out);
    for c in 0..n {
        rooms.join(CHAT, c, c + 1, c as u32 + 2, true, &mut out);
    }
    assert_eq!(out.len() as u64, n + 1, "every join succeeds");
    rooms
}

/// One OP_RTMSG delivery frame with a 100-byte payload, in one shared buffer.
fn frame() -> Bytes {
    let data = [0x5au8; 100];
    let ev = Event::RtMsg {
        chatid: CHAT,
        sender_userid: 1_000_000,
        sender_clientid: 1,
        msgtype: 1,
        data: &data,
    };
    let mut b = BytesMut::with_capacity(ev.encoded_len());
    cw::encode_event(&ev, &mut b);
    b.freeze()
}

/// Drains `q` as a writer whose socket takes everything.
fn drain(q: &mut OutQueue, batch: &mut Vec<Bytes>, pool: &mut ChunkPool) {
    while !q.is_empty() {
        q.take_batch(batch, IOVECS);
        let n: usize = batch.iter().map(Bytes::len).sum();
        q.written(batch, n, pool);
    }
}

/// Everything the local fan-out loop reuses.
struct Local {
    rooms: Rooms<u64>,
    queues: Vec<OutQueue>,
    chunks: ChunkPool,
    recipients: Vec<u64>,
    batch: Vec<Bytes>,
    frame: Bytes,
}

impl Local {
    fn new(n: u64) -> Self {
        Local {
            rooms: room(n),
            queues: (0..n).map(|_| OutQueue::default()).collect(),
            chunks: ChunkPool::default(),
            recipients: Vec::with_capacity(n as usize),
            batch: Vec::with_capacity(IOVECS),
            frame: frame(),
        }
    }

    /// One broadcast: recipients, the frame queued on each.
    fn queue(&mut self) {
        self.recipients.clear();
        self.rooms
            .recipients(CHAT, SENDER, 0, 0, &mut self.recipients)
            .expect("sender joined");
        for &c in &self.recipients {
            let _ = self.queues[c as usize]
                .push(&self.frame, CAP, Flush::Now, &mut self.chunks)
                .expect("under the cap");
        }
    }

    /// Every recipient's queue written.
    fn drain_all(&mut self) {
        for &c in &self.recipients {
            drain(
                &mut self.queues[c as usize],
                &mut self.batch,
                &mut self.chunks,
            );
        }
        black_box(&self.queues);
    }

    /// One broadcast, then every queue written.
    fn broadcast(&mut self) {
        self.queue();
        self.drain_all();
    }

    /// [`BURST`] broadcasts, then every queue written.
    fn burst(&mut self) {
        for _ in 0..BURST {
            self.queue();
        }
        self.drain_all();
    }
}

/// Work for the second "shard": a frame and the connections to queue it on.
enum Job {
    Deliver(Bytes, Vec<u64>),
    /// Answer on the reply channel once everything before is queued.
    Sync,
}

/// The second shard's thread: its own queues, drained after each job.
fn remote_shard(n: u64, jobs: Receiver<Job>, done: Sender<()>, pool: Arc<ListPool<u64>>) {
    let mut queues: Vec<OutQueue> = (0..n).map(|_| OutQueue::default()).collect();
    let mut chunks = ChunkPool::default();
    let mut batch = Vec::with_capacity(IOVECS);
    for job in jobs {
        match job {
            Job::Deliver(frame, conns) => {
                for &c in &conns {
                    let _ = queues[c as usize]
                        .push(&frame, CAP, Flush::Now, &mut chunks)
                        .expect("under the cap");
                }
                for &c in &conns {
                    drain(&mut queues[c as usize], &mut batch, &mut chunks);
                }
                pool.give(conns);
            }
            Job::Sync => {
                if done.send(()).is_err() {
                    return;
                }
            }
        }
    }
}

/// The home shard's side of the cross-shard fan-out.
struct Across {
    local: Local,
    pool: Arc<ListPool<u64>>,
    jobs: Sender<Job>,
    done: Receiver<()>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Across {
    fn new(n: u64) -> Self {
        let (jobs, jobs_rx) = bounded(1024);
        let (done_tx, done) = bounded(1);
        let pool = Arc::new(ListPool::default());
        let theirs = pool.clone();
        let worker = std::thread::spawn(move || remote_shard(n, jobs_rx, done_tx, theirs));
        Across {
            local: Local::new(n),
            pool,
            jobs,
            done,
            worker: Some(worker),
        }
    }

    /// One broadcast: recipients split by fake shard (`conn % 2`); shard 0
    /// queues here, shard 1's group travels to the other thread.
    fn broadcast(&mut self) {
        let l = &mut self.local;
        l.recipients.clear();
        l.rooms
            .recipients(CHAT, SENDER, 0, 0, &mut l.recipients)
            .expect("sender joined");
        let remote_n = l.recipients.iter().filter(|&&c| c % 2 == 1).count();
        let mut remote = self.pool.take(remote_n);
        for &c in &l.recipients {
            if c % 2 == 0 {
                let _ = l.queues[c as usize]
                    .push(&l.frame, CAP, Flush::Now, &mut l.chunks)
                    .expect("under the cap");
            } else {
                remote.push(c);
            }
        }
        if !remote.is_empty() {
            self.jobs
                .send(Job::Deliver(l.frame.clone(), remote))
                .expect("worker alive");
        }
        for &c in &l.recipients {
            if c % 2 == 0 {
                drain(&mut l.queues[c as usize], &mut l.batch, &mut l.chunks);
            }
        }
    }

    /// Waits until the other thread has queued everything sent so far.
    fn sync(&self) {
        self.jobs.send(Job::Sync).expect("worker alive");
        self.done.recv().expect("worker alive");
    }
}

impl Drop for Across {
    fn drop(&mut self) {
        let (dead, _) = bounded(0);
        self.jobs = dead;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Allocations per delivery over `rounds` calls of `broadcast` (each
/// `per_call` broadcasts) after a warm-up.
fn allocs_per_delivery(
    n: u64,
    rounds: u64,
    per_call: u64,
    mut broadcast: impl FnMut(),
    sync: impl Fn(),
) -> f64 {
    for _ in 0..1000 {
        broadcast();
    }
    sync();
    let before = ALLOCS.load(Relaxed);
    for _ in 0..rounds {
        broadcast();
    }
    sync();
    let allocs = ALLOCS.load(Relaxed) - before;
    allocs as f64 / (rounds * per_call * n) as f64
}

fn fanout(c: &mut Criterion) {
    for &n in &SIZES {
        let mut l = Local::new(n);
        let per = allocs_per_delivery(n, 10_000, 1, || l.broadcast(), || {});
        eprintln!("fanout/local/{n}: {per:.4} allocations per delivery (steady state)");
    }
    for &n in &SIZES {
        let mut l = Local::new(n);
        let per = allocs_per_delivery(n, 200, BURST as u64, || l.burst(), || {});
        eprintln!("fanout/local_burst/{n}: {per:.4} allocations per delivery (steady state)");
    }
    for &n in &SIZES {
        let mut a = Across::new(n);
        let jobs = a.jobs.clone();
        let done = a.done.clone();
        let sync = move || {
            jobs.send(Job::Sync).expect("worker alive");
            done.recv().expect("worker alive");
        };
        let per = allocs_per_delivery(n, 10_000, 1, || a.broadcast(), sync);
        eprintln!("fanout/across_shards/{n}: {per:.4} allocations per delivery (steady state)");
    }

    let mut g = c.benchmark_group("fanout/local");
    for &n in &SIZES {
        g.throughput(Throughput::Elements(n));
        let mut l = Local::new(n);
        g.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| l.broadcast()));
    }
    g.finish();

    let mut g = c.benchmark_group("fanout/local_burst");
    for &n in &SIZES {
        g.throughput(Throughput::Elements(n * BURST as u64));
        let mut l = Local::new(n);
        g.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| l.burst()));
    }
    g.finish();

    let mut g = c.benchmark_group("fanout/across_shards");
    for &n in &SIZES {
        g.throughput(Throughput::Elements(n));
        let mut a = Across::new(n);
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    a.broadcast();
                }
                a.sync();
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = fanout
}
criterion_main!(benches);
