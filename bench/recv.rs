//! How a shard could read its sockets: issue 13, item 3. A prototype on
//! raw io_uring (the `io-uring` crate tokio-uring is built on), outside
//! chatd's runtime, so the three ways compare on the same traffic:
//!
//! - `read`: what chatd does today through tokio-uring: one read per
//!   connection in flight, each with its own buffer, submitted again after
//!   every completion.
//! - `multishot`: one multishot `RECV` per connection, armed once, taking
//!   its buffers from a ring registered with the kernel
//!   (`IORING_REGISTER_PBUF_RING`, kernel 6.0+): a completion per arrival,
//!   nothing to submit again, and no buffer pinned by an idle connection.
//! - `epoll`: readiness and a `read(2)` per ready socket, as bench/floor.c
//!   and Redis do.
//!
//! A client thread writes messages of `RECV_SIZE` bytes (32), one per
//! `write(2)`, over `RECV_CONNS` loopback connections (1000), in two
//! regimes:
//!
//! - `rounds`: one message to every connection, then the server reads
//!   them all, `RECV_ROUNDS` times (200): the server finds every socket
//!   ready at once, as a busy shard does, so the figure is the cost of the
//!   reading itself.
//! - `stream`: `RECV_MSGS` messages (200,000) round-robin while the server
//!   reads: an idle server, woken for nearly every message, as a paced
//!   load on a quiet shard.
//!
//! Printed per mode: server thread CPU (CLOCK_THREAD_CPUTIME_ID: user +
//! system, including the io_uring task work run on it) per message, reads
//! (completions or read calls) per message, and the buffer memory an idle
//! connection pins.
//!
//!     cargo bench --bench recv
//!     RECV_CONNS=10000 RECV_ROUNDS=50 cargo bench --bench recv
//!
//! Linux only; needs io_uring (and kernel 6.0+ for the multishot mode,
//! which is skipped with a note where the kernel refuses it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Per-connection buffer of the `read` mode: chatd's read buffer once a
/// connection is logged in and idle (`limits::READ_BUF_IDLE` is 64; a busy
/// one grows), here large enough that a read never fills it.
const READ_BUF: usize = 256;
/// Buffers in the multishot mode's ring, and their size.
const RING_ENTRIES: u16 = 4096;
const RING_BUF: usize = 2048;
/// Buffer group id of the ring.
const BGID: u16 = 7;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `n` connected loopback pairs: (client ends, server ends).
fn pairs(n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut clients = Vec::with_capacity(n);
    let mut servers = Vec::with_capacity(n);
    for _ in 0..n {
        let c = TcpStream::connect(addr).expect("connect");
        c.set_nodelay(true).expect("nodelay");
        let (s, _) = l.accept().expect("accept");
        s.set_nonblocking(true).expect("nonblocking");
        clients.push(c);
        servers.push(s);
    }
    (clients, servers)
}

/// What one mode measured.
struct Run {
    cpu_ns: u64,
    wall_ns: u64,
    reads: u64,
}

impl Run {
    /// A mode's run that began at thread CPU time `c0` and at `t0`.
    fn since(c0: u64, t0: Instant, reads: u64) -> Run {
        Run {
            cpu_ns: thread_cpu_ns() - c0,
            wall_ns: t0.elapsed().as_nanos() as u64,
            reads,
        }
    }
}

/// How the client writes.
#[derive(Clone, Copy)]
enum Regime {
    /// `rounds` times: one message to every connection, then wait.
    Rounds(usize),
    /// This many messages round-robin, without waiting.
    Stream(usize),
}

impl Regime {
    fn messages(self, conns: usize) -> usize {
        match self {
            Regime::Rounds(r) => r * conns,
            Regime::Stream(m) => m,
        }
    }
}

/// The client: writes as `regime` says; in rounds, waits for `go` before
/// each and says `written` after it.
fn client(
    mut clients: Vec<TcpStream>,
    regime: Regime,
    size: usize,
    go: Receiver<()>,
    written: SyncSender<()>,
) -> Vec<TcpStream> {
    let msg = vec![0x5au8; size];
    let n = clients.len();
    match regime {
        Regime::Rounds(rounds) => {
            for _ in 0..rounds {
                if go.recv().is_err() {
                    break;
                }
                for c in clients.iter_mut() {
                    c.write_all(&msg).expect("client write");
                }
                if written.send(()).is_err() {
                    break;
                }
            }
        }
        Regime::Stream(msgs) => {
            for i in 0..msgs {
                clients[i % n].write_all(&msg).expect("client write");
            }
        }
    }
    clients
}

/// The server's side of the rounds: before reading up to `got` bytes,
/// lets the client write the next round and waits until it has (in the
/// stream regime: nothing). `per_round` is one round's bytes.
struct Pace {
    go: Option<SyncSender<()>>,
    written: Option<Receiver<()>>,
    per_round: u64,
    next: u64,
}

impl Pace {
    /// Called before waiting for completions with `got` bytes read.
    fn before_wait(&mut self, got: u64) {
        if let (Some(go), Some(written)) = (&self.go, &self.written) {
            if got == self.next {
                go.send(()).expect("client alive");
                written.recv().expect("client alive");
                self.next += self.per_round;
            }
        }
    }
}

/// A ring as chatd's shards build it.
fn ring() -> std::io::Result<IoUring> {
    IoUring::builder()
        .setup_coop_taskrun()
        .setup_cqsize(8192)
        .build(4096)
}

/// Submits `sqe`, flushing the queue to the kernel when it is full.
fn push(ring: &mut IoUring, sqe: &squeue::Entry) {
    // SAFETY: every SQE built here refers to memory (buffers, the ring)
    // that outlives the operation: the buffers live until the ring is
    // dropped at the end of the mode, after every completion was reaped.
    while unsafe { ring.submission().push(sqe) }.is_err() {
        ring.submit().expect("submit");
    }
}

fn mode_read(servers: &[TcpStream], total: u64, pace: &mut Pace) -> Run {
    let mut ring = ring().expect("io_uring");
    let mut bufs = vec![[0u8; READ_BUF]; servers.len()];
    for (i, s) in servers.iter().enumerate() {
        let sqe = opcode::Recv::new(
            types::Fd(s.as_raw_fd()),
            bufs[i].as_mut_ptr(),
            READ_BUF as u32,
        )
        .build()
        .user_data(i as u64);
        push(&mut ring, &sqe);
    }
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut got, mut reads) = (0u64, 0u64);
    let mut done = Vec::with_capacity(1024);
    while got < total {
        pace.before_wait(got);
        ring.submit_and_wait(1).expect("submit_and_wait");
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for &(i, res) in &done {
            assert!(res > 0, "read: {res}");
            got += res as u64;
            reads += 1;
            let sqe = opcode::Recv::new(
                types::Fd(servers[i].as_raw_fd()),
                bufs[i].as_mut_ptr(),
                READ_BUF as u32,
            )
            .build()
            .user_data(i as u64);
            push(&mut ring, &sqe);
        }
    }
    let run = Run::since(c0, t0, reads);
    // The reads still in flight refer to `bufs`: end them before it goes.
    drop(ring);
    drop(bufs);
    run
}

/// A provided-buffer ring registered with the kernel.
struct BufRing {
    entries: *mut types::BufRingEntry,
    layout: std::alloc::Layout,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> std::io::Result<BufRing> {
        let layout = std::alloc::Layout::from_size_align(
            RING_ENTRIES as usize * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(std::io::Error::other)?;
        // SAFETY: a non-zero size; zeroed memory is a valid (empty) ring.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        let mut br = BufRing {
            entries,
            layout,
            bufs: vec![0u8; RING_ENTRIES as usize * RING_BUF],
            tail: 0,
        };
        // SAFETY: the ring memory is page-aligned, RING_ENTRIES entries
        // long, and lives (in `br`) until after the io_uring is dropped.
        unsafe {
            ring.submitter()
                .register_buf_ring(entries as u64, RING_ENTRIES, BGID)?;
        }
        for bid in 0..RING_ENTRIES {
            br.add(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Puts buffer `bid` back at the ring's tail (visible after `publish`).
    fn add(&mut self, bid: u16) {
        let idx = (self.tail & (RING_ENTRIES - 1)) as usize;
        // SAFETY: idx < RING_ENTRIES, within the ring's allocation.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(self.bufs[bid as usize * RING_BUF..].as_ptr() as u64);
        e.set_len(RING_BUF as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Hands the buffers added so far to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field of the first entry, in memory the kernel
        // shares; an atomic release store is how liburing publishes it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn data(&self, bid: u16, len: usize) -> &[u8] {
        &self.bufs[bid as usize * RING_BUF..][..len]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.entries as *mut u8, self.layout) };
    }
}

fn mode_multishot(servers: &[TcpStream], total: u64, pace: &mut Pace) -> std::io::Result<Run> {
    let mut ring = ring()?;
    let mut br = BufRing::new(&ring)?;
    let arm = |ring: &mut IoUring, i: usize| {
        let sqe = opcode::RecvMulti::new(types::Fd(servers[i].as_raw_fd()), BGID)
            .build()
            .user_data(i as u64);
        push(ring, &sqe);
    };
    for i in 0..servers.len() {
        arm(&mut ring, i);
    }
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut got, mut reads) = (0u64, 0u64);
    let mut done = Vec::with_capacity(1024);
    let mut sum = 0u64;
    while got < total {
        pace.before_wait(got);
        ring.submit_and_wait(1).expect("submit_and_wait");
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result(), c.flags())),
        );
        for &(i, res, flags) in &done {
            if res > 0 {
                let bid = cqueue::buffer_select(flags).expect("a provided buffer");
                sum += u64::from(br.data(bid, res as usize)[0]);
                got += res as u64;
                reads += 1;
                br.add(bid);
            } else {
                // -ENOBUFS: the ring ran dry; re-armed below, once buffers
                // are back.
                assert_eq!(res, -libc::ENOBUFS, "multishot recv: {res}");
            }
            if !cqueue::more(flags) {
                arm(&mut ring, i);
            }
        }
        br.publish();
    }
    std::hint::black_box(sum);
    let run = Run::since(c0, t0, reads);
    drop(ring);
    drop(br);
    Ok(run)
}

fn mode_epoll(servers: &mut [TcpStream], total: u64, pace: &mut Pace) -> Run {
    // SAFETY: plain syscall; the descriptor is closed below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    for (i, s) in servers.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` is valid for the call; the fd is open.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl");
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = [0u8; 16 * 1024];
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut got, mut reads) = (0u64, 0u64);
    while got < total {
        pace.before_wait(got);
        // SAFETY: `events` has room for the count passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        for ev in &events[..n.max(0) as usize] {
            let i = ev.u64 as usize;
            match servers[i].read(&mut buf) {
                Ok(k) if k > 0 => {
                    got += k as u64;
                    reads += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("read: {other:?}"),
            }
        }
    }
    let run = Run::since(c0, t0, reads);
    // SAFETY: created above, not used after.
    unsafe { libc::close(ep) };
    run
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let conns = env("RECV_CONNS", 1000);
    let size = env("RECV_SIZE", 32);
    let regimes = [
        ("rounds", Regime::Rounds(env("RECV_ROUNDS", 200))),
        ("stream", Regime::Stream(env("RECV_MSGS", 200_000))),
    ];
    println!("recv: {conns} connections, {size}-byte messages, one write(2) each");
    for (name, regime) in regimes {
        let msgs = regime.messages(conns);
        println!("{name}: {msgs} messages");
        for mode in ["read", "multishot", "epoll", "read", "multishot", "epoll"] {
            let (clients, mut servers) = pairs(conns);
            let (go_tx, go_rx) = std::sync::mpsc::sync_channel(1);
            let (written_tx, written_rx) = std::sync::mpsc::sync_channel(1);
            let mut pace = Pace {
                go: matches!(regime, Regime::Rounds(_)).then_some(go_tx),
                written: matches!(regime, Regime::Rounds(_)).then_some(written_rx),
                per_round: (conns * size) as u64,
                next: 0,
            };
            let writer =
                std::thread::spawn(move || client(clients, regime, size, go_rx, written_tx));
            let total = (msgs * size) as u64;
            let run = match mode {
                "read" => Ok(mode_read(&servers, total, &mut pace)),
                "multishot" => mode_multishot(&servers, total, &mut pace),
                _ => Ok(mode_epoll(&mut servers, total, &mut pace)),
            };
            // A failed mode read nothing: let the client finish its rounds.
            if run.is_err() {
                while pace.go.as_ref().is_some_and(|go| go.send(()).is_ok()) {
                    if pace.written.as_ref().is_some_and(|w| w.recv().is_err()) {
                        break;
                    }
                }
            }
            drop(pace);
            let _clients = writer.join().expect("client thread");
            match run {
                Ok(r) => println!(
                    "  {mode:>9}: server cpu {:6.0} ns/message, {:.3} reads/message, {:5.0} ms wall; \
                     buffer pinned per idle connection: {} bytes",
                    r.cpu_ns as f64 / msgs as f64,
                    r.reads as f64 / msgs as f64,
                    r.wall_ns as f64 / 1e6,
                    match mode {
                        "read" => READ_BUF,
                        _ => 0,
                    },
                ),
                Err(e) => println!("  {mode:>9}: not available here: {e}"),
            }
        }
    }
}
