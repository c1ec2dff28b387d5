//! What every scenario shares: the target server, the worker threads (one
//! tokio current-thread runtime each), the start gate that lines the
//! threads up after setup, progress lines on stderr, and resource snapshots
//! for the report.

pub mod bigroom;
pub mod calls;
pub mod connections;
pub mod direct;
pub mod fanout;
pub mod presence;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::RunOpts;
use crate::client::{login_chatd, Chatd, ClientError, Writer};
use crate::measure::{self, now_ns, Latency, ThreadCpu, Verify, Window};
use crate::provision::ProvisionError;
use crate::report::{LoadgenCpu, Report, ServerStats};
use crate::transport::Endpoint;
use crate::wire;

/// Delay between the last thread finishing setup and the load starting.
const START_LEAD_NS: u64 = 100_000_000;

/// Why a scenario could not run (as opposed to a run that found problems,
/// which is a report with non-zero verification counters).
#[derive(Debug)]
pub enum ScenarioError {
    /// Provisioning through the admin API failed.
    Provision(ProvisionError),
    /// A worker runtime could not be built.
    Runtime(std::io::Error),
    /// Connections could not be set up.
    Setup(String),
    /// Bad parameters.
    Params(String),
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScenarioError::Provision(e) => write!(f, "{e}"),
            ScenarioError::Runtime(e) => write!(f, "runtime: {e}"),
            ScenarioError::Setup(s) => write!(f, "setup: {s}"),
            ScenarioError::Params(s) => write!(f, "bad parameters: {s}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl From<ProvisionError> for ScenarioError {
    fn from(e: ProvisionError) -> Self {
        ScenarioError::Provision(e)
    }
}

/// The server under test.
#[derive(Clone, Debug)]
pub struct Target {
    /// chatd, over the run's transport.
    pub chatd: Endpoint,
    /// Other nodes' chatd listeners (cluster mode, `--chatd-also`; plain
    /// TCP runs).
    pub chatd_also: Vec<SocketAddr>,
    /// statusd, over the run's transport.
    pub statusd: Endpoint,
    /// Admin API.
    pub admin: SocketAddr,
    /// Admin bearer token.
    pub admin_token: String,
    /// Server pid, when known.
    pub pid: Option<u32>,
}

impl Target {
    /// The chatd listener connection `index` uses: `--chatd` and every
    /// `--chatd-also`, round-robin.
    pub fn chatd_for(&self, index: usize) -> Endpoint {
        match index % (1 + self.chatd_also.len()) {
            0 => self.chatd.clone(),
            i => Endpoint {
                addr: self.chatd_also[i - 1],
                ..self.chatd.clone()
            },
        }
    }
}

/// Everything a scenario needs besides its own parameters.
pub struct Env<'a> {
    /// The server.
    pub target: &'a Target,
    /// Common options.
    pub run: &'a RunOpts,
    /// First user and chat id of this run.
    pub id_base: u64,
}

impl Env<'_> {
    /// Loadgen threads (at least one).
    pub fn threads(&self) -> usize {
        self.run.threads.max(1)
    }

    /// The units (rooms, pairs, users) of `n` that thread `t` owns: unit i
    /// goes to thread i % threads.
    pub fn owned(&self, n: usize, t: usize) -> Vec<usize> {
        let threads = self.threads();
        (0..n).filter(|i| i % threads == t).collect()
    }

    /// An admin API client.
    pub fn admin(&self) -> crate::provision::Admin {
        let tls = self.target.chatd.tls.clone();
        crate::provision::Admin::new(self.target.admin, &self.target.admin_token, tls)
    }
}

/// A default id base from the clock: milliseconds since the epoch times
/// 1000, so runs a millisecond apart get disjoint ranges of 10^6+ ids...
/// in practice runs are seconds apart.
pub fn default_id_base() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    (ms % 1_000_000_000_000) * 1000 + 1
}

/// Lines the worker threads up: the last to arrive sets the start time.
#[derive(Default)]
pub struct Gate {
    arrived: AtomicUsize,
    start: AtomicU64,
}

impl Gate {
    /// Waits until `n` threads arrived; returns the common start time.
    pub async fn wait(&self, n: usize) -> u64 {
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 >= n {
            self.start
                .store(now_ns() + START_LEAD_NS, Ordering::Release);
        }
        loop {
            let s = self.start.load(Ordering::Acquire);
            if s != 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Counters the progress line shows, published by the workers.
#[derive(Default)]
pub struct Progress {
    /// Sent so far.
    pub sent: AtomicU64,
    /// Delivered so far.
    pub delivered: AtomicU64,
    /// Verification failures so far.
    pub failures: AtomicU64,
    /// Connections up.
    pub conns: AtomicU64,
}

/// State shared by a scenario's worker threads and the monitor.
#[derive(Default)]
pub struct Shared {
    /// Start gate.
    pub gate: Gate,
    /// A second gate, for scenarios that line up again after the load.
    pub end_gate: Gate,
    /// Progress counters.
    pub progress: Progress,
    /// Set by a thread whose setup failed; the others stop after the gate.
    pub failed: AtomicBool,
    /// The first setup failure.
    pub failure: Mutex<Option<String>>,
    /// Resource snapshots at load start, measure start and load end.
    pub snaps: Mutex<[Option<Snap>; 3]>,
    /// The window whose snapshots 1 and 2 the monitor thread is to take,
    /// and the server's pid ([`Shared::snap_window`]).
    planned: Mutex<Option<(Window, Option<u32>)>>,
    done: AtomicBool,
}

impl Shared {
    /// Records a setup failure.
    pub fn fail(&self, msg: String) {
        self.failed.store(true, Ordering::Release);
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(msg);
        }
    }

    /// Whether some thread failed setup.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn failure_text(&self) -> String {
        self.failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "setup failed".into())
    }

    /// Stores snapshot `i` (0 load start, 1 measure start, 2 load end).
    pub fn snap(&self, i: usize, pid: Option<u32>) {
        let s = Snap::take(pid);
        if let Ok(mut v) = self.snaps.lock() {
            if let Some(slot) = v.get_mut(i) {
                *slot = Some(s);
            }
        }
    }

    /// Takes snapshot 0 now and has the monitor thread take 1 and 2 at the
    /// window's measure start and end: an OS thread of its own, so that a
    /// worker that is saturated (or starved of CPU) cannot take them late
    /// and skew the CPU figures of exactly the runs that need them most.
    pub fn snap_window(&self, w: Window, pid: Option<u32>) {
        self.snap(0, pid);
        if let Ok(mut p) = self.planned.lock() {
            *p = Some((w, pid));
        }
    }

    /// The monitor's part of [`Shared::snap_window`]: takes the planned
    /// snapshots due by `now`; returns when the next one is due.
    fn take_planned(&self, now: u64) -> Option<u64> {
        let (w, pid) = (*self.planned.lock().ok()?)?;
        let have = |i: usize| self.snaps.lock().map_or(true, |s| s[i].is_some());
        for (i, at) in [(1, w.measure_ns), (2, w.end_ns)] {
            if have(i) {
                continue;
            }
            if now < at {
                return Some(at);
            }
            self.snap(i, pid);
        }
        None
    }

    /// Fills the report's CPU and server fields from the snapshots, then
    /// judges whose limit the figures show ([`Report::judge`]; call it after
    /// the latency and send-lag fields are set).
    pub fn fill_resources(&self, r: &mut Report, threads: usize) {
        let Ok(s) = self.snaps.lock() else { return };
        let (Some(a), Some(b), Some(c)) = (&s[0], &s[1], &s[2]) else {
            return;
        };
        let wall = (c.wall_ns.saturating_sub(b.wall_ns)) as f64 / 1e9;
        let cpu = c.cpu - b.cpu;
        let cores = if wall > 0.0 { cpu / wall } else { 0.0 };
        let threads_busy = measure::threads_busy(&b.threads, &c.threads, wall);
        r.loadgen = LoadgenCpu {
            threads,
            cpu_secs: cpu,
            wall_secs: wall,
            cores_used: cores,
            per_thread_busy: cores / threads.max(1) as f64,
            busiest_thread: threads_busy.first().map_or(0.0, |t| t.busy),
            threads_busy,
        };
        // What the rest of the box used: only known with the server's pid
        // (else the server's own CPU would count as others').
        r.others_cores = match (b.host_busy, c.host_busy, c.pid) {
            (Some(h0), Some(h1), Some(_)) if wall > 0.0 => {
                let scpu = c.srv_cpu.unwrap_or(0.0) - b.srv_cpu.unwrap_or(0.0);
                Some(((h1 - h0 - cpu - scpu) / wall).max(0.0))
            }
            _ => None,
        };
        if let (Some(before), Some(after)) = (a.listen_overflows, c.listen_overflows) {
            let dropped = after.saturating_sub(before);
            r.extra.insert("listen_overflows".into(), dropped as f64);
            if dropped > 0 {
                r.notes.push(format!(
                    "{dropped} connections were dropped by a full accept queue on this host during the load \
                     (each SYN retried a second or more later): raise net.core.somaxconn (tuning.md, Listen backlogs)"
                ));
            }
        }
        if let (Some(pid), Some(rb), Some(rc)) = (c.pid, a.srv_rss, c.srv_rss) {
            let scpu = c.srv_cpu.unwrap_or(0.0) - b.srv_cpu.unwrap_or(0.0);
            let busiest = measure::threads_busy(&b.srv_threads, &c.srv_threads, wall)
                .first()
                .map_or(0.0, |t| t.busy);
            r.server = Some(ServerStats {
                pid,
                rss_kib_before: rb,
                rss_kib_after: rc,
                cpu_secs: scpu,
                cores_used: if wall > 0.0 { scpu / wall } else { 0.0 },
                busiest_thread: busiest,
                deliveries_per_cpu_sec: if scpu > 0.0 {
                    r.deliveries as f64 / scpu
                } else {
                    0.0
                },
            });
        }
        r.judge();
    }
}

/// Process resources at one moment.
#[derive(Clone, Debug)]
pub struct Snap {
    /// [`now_ns`].
    pub wall_ns: u64,
    /// Loadgen CPU seconds.
    pub cpu: f64,
    /// Loadgen's threads and their CPU seconds.
    pub threads: Vec<ThreadCpu>,
    /// Server pid.
    pub pid: Option<u32>,
    /// Server CPU seconds.
    pub srv_cpu: Option<f64>,
    /// The server's threads and their CPU seconds (empty: pid unknown).
    pub srv_threads: Vec<ThreadCpu>,
    /// Server VmRSS KiB.
    pub srv_rss: Option<u64>,
    /// This host's listen overflows so far ([`measure::listen_overflows`]).
    pub listen_overflows: Option<u64>,
    /// This host's busy CPU seconds so far ([`measure::host_busy_secs`]).
    pub host_busy: Option<f64>,
}

impl Snap {
    /// Now.
    pub fn take(pid: Option<u32>) -> Snap {
        Snap {
            wall_ns: now_ns(),
            cpu: measure::self_cpu_secs(),
            threads: measure::threads_cpu(None),
            pid,
            srv_cpu: pid.and_then(measure::proc_cpu_secs),
            srv_threads: pid.map_or_else(Vec::new, |p| measure::threads_cpu(Some(p))),
            srv_rss: pid.and_then(measure::rss_kib),
            listen_overflows: measure::listen_overflows(),
            host_busy: measure::host_busy_secs(),
        }
    }
}

/// Runs `f(thread_index, shared)` on `threads` threads, each inside its own
/// current-thread runtime and `LocalSet`, while a monitor thread prints a
/// progress line per second (unless `quiet`). Returns each thread's output
/// and the shared state (for its resource snapshots), or the first setup
/// failure.
pub fn on_threads<R, Fut, F>(
    name: &str,
    threads: usize,
    quiet: bool,
    f: F,
) -> Result<(Vec<R>, Arc<Shared>), ScenarioError>
where
    R: Send,
    Fut: Future<Output = R>,
    F: Fn(usize, Arc<Shared>) -> Fut + Sync,
{
    let shared = Arc::new(Shared::default());
    let threads = threads.max(1);
    let out = std::thread::scope(|scope| {
        let shared = &shared;
        let f = &f;
        // Named, so that the per-thread CPU in the report says which one.
        let monitor = std::thread::Builder::new()
            .name("lg-monitor".into())
            .spawn_scoped(scope, move || monitor(name, shared, quiet));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("lg-worker-{i}"))
                    .spawn_scoped(scope, move || -> Result<R, ScenarioError> {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(ScenarioError::Runtime)?;
                        let local = tokio::task::LocalSet::new();
                        let out = local.block_on(&rt, f(i, shared.clone()));
                        crate::pacer::reset();
                        Ok(out)
                    })
            })
            .collect();
        let mut out = Vec::with_capacity(threads);
        let mut err = None;
        for h in handles {
            match h.map(|h| h.join()) {
                Ok(Ok(Ok(r))) => out.push(r),
                Ok(Ok(Err(e))) => err = Some(e),
                Ok(Err(_)) => err = Some(ScenarioError::Setup("worker thread panicked".into())),
                Err(e) => err = Some(ScenarioError::Runtime(e)),
            }
        }
        shared.done.store(true, Ordering::Release);
        if let Ok(m) = monitor {
            let _ = m.join();
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })?;
    if shared.has_failed() {
        return Err(ScenarioError::Setup(shared.failure_text()));
    }
    Ok((out, shared))
}

/// Prints one progress line per second until the workers are done.
fn monitor(name: &str, shared: &Shared, quiet: bool) {
    let t0 = now_ns();
    let mut last = (0u64, 0u64, measure::self_cpu_secs(), t0);
    let mut next = t0 + 1_000_000_000;
    while !shared.done.load(Ordering::Acquire) {
        // Wakes for the next snapshot on time, else every 50 ms.
        let wake = shared
            .take_planned(now_ns())
            .map_or(50_000_000, |at| at.saturating_sub(now_ns()).min(50_000_000));
        std::thread::sleep(Duration::from_nanos(wake));
        let now = now_ns();
        shared.take_planned(now);
        if now < next {
            continue;
        }
        next += 1_000_000_000;
        let p = &shared.progress;
        let sent = p.sent.load(Ordering::Relaxed);
        let del = p.delivered.load(Ordering::Relaxed);
        let cpu = measure::self_cpu_secs();
        let dt = (now - last.3) as f64 / 1e9;
        if !quiet && dt > 0.0 {
            eprintln!(
                "[{name} {:>4.0}s] conns {:>6}  sent {:>8.0}/s  delivered {:>9.0}/s  failures {}  loadgen cpu {:>3.0}%",
                (now - t0) as f64 / 1e9,
                p.conns.load(Ordering::Relaxed),
                (sent - last.0) as f64 / dt,
                (del - last.1) as f64 / dt,
                p.failures.load(Ordering::Relaxed),
                (cpu - last.2) / dt * 100.0
            );
        }
        last = (sent, del, cpu, now);
    }
    // The workers drain past the window's end: whatever is planned is due.
    shared.take_planned(now_ns());
}

/// Publishes a thread's running totals into the progress counters: call
/// with the totals so far and the totals last published.
pub fn publish(p: &Progress, now: (u64, u64, u64), last: &mut (u64, u64, u64)) {
    p.sent
        .fetch_add(now.0.saturating_sub(last.0), Ordering::Relaxed);
    p.delivered
        .fetch_add(now.1.saturating_sub(last.1), Ordering::Relaxed);
    p.failures
        .fetch_add(now.2.saturating_sub(last.2), Ordering::Relaxed);
    *last = now;
}

/// Opens many connections of one thread with at most `concurrency` in
/// flight: `open(spec)` for each of `specs`. Returns the connections in the
/// same order, or the first error.
pub async fn connect_many<S, T, F, Fut>(
    concurrency: usize,
    specs: Vec<S>,
    progress: &Progress,
    open: F,
) -> Result<Vec<T>, ClientError>
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = Result<T, ClientError>> + 'static,
    T: 'static,
{
    let sem = Rc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(specs.len());
    for spec in specs {
        let sem = sem.clone();
        let fut = open(spec);
        handles.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await;
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(Ok(c)) => {
                progress.conns.fetch_add(1, Ordering::Relaxed);
                out.push(c)
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClientError::Closed),
        }
    }
    Ok(out)
}

/// One chatd login: connection index, token, rooms to join.
pub type LoginSpec = (usize, String, Vec<u64>);

/// Logs in many chatd connections of one thread (see [`connect_many`]).
pub async fn login_many(
    ep: &Endpoint,
    source_ips: u32,
    concurrency: usize,
    specs: Vec<LoginSpec>,
    progress: &Progress,
) -> Result<Vec<Chatd>, ClientError> {
    connect_many(concurrency, specs, progress, |(idx, token, rooms)| {
        let ep = ep.clone();
        async move { login_chatd(&ep, idx, source_ips, &token, &rooms).await }
    })
    .await
}

/// The setup every load thread does: waits for its connections (`conns`),
/// records a failure as `"<what>: <error>"`, then lines up with the other
/// threads at the start gate. Returns the connections and the common start
/// time, or `None` when any thread's setup failed.
pub async fn start_after<T>(
    shared: &Shared,
    threads: usize,
    what: &str,
    conns: impl Future<Output = Result<Vec<T>, ClientError>>,
) -> Option<(Vec<T>, u64)> {
    let conns = match conns.await {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("{what}: {e}"));
            Vec::new()
        }
    };
    let start = shared.gate.wait(threads).await;
    if shared.has_failed() {
        return None;
    }
    Some((conns, start))
}

/// Logs in the chatd connections `specs` of one thread and waits at the
/// start gate ([`start_after`]).
pub async fn login_and_start(
    env: &Env<'_>,
    shared: &Shared,
    what: &str,
    specs: Vec<LoginSpec>,
) -> Option<(Vec<Chatd>, u64)> {
    let run = env.run;
    let conns = login_many(
        &env.target.chatd,
        run.source_ips,
        run.connect_concurrency,
        specs,
        &shared.progress,
    );
    start_after(shared, env.threads(), what, conns).await
}

/// Provisions `rooms` rooms of `members` users each (room r is chat
/// `base + r` with users `base + r * members + m`) and a token per user.
pub fn provision_rooms(
    env: &Env<'_>,
    rooms: usize,
    members: usize,
) -> Result<HashMap<u64, String>, ScenarioError> {
    let base = env.id_base;
    let mut admin = env.admin();
    let mut tokens = HashMap::new();
    for r in 0..rooms {
        let users: Vec<u64> = (0..members)
            .map(|m| base + (r * members + m) as u64)
            .collect();
        admin.set_room(base + r as u64, &users)?;
        for u in users {
            tokens.insert(u, admin.token(u)?);
        }
    }
    Ok(tokens)
}

/// The rooms thread `t` owns (room r goes to thread r % threads) and the
/// logins of their members, as [`provision_rooms`] laid them out.
pub fn room_logins(
    env: &Env<'_>,
    tokens: &HashMap<u64, String>,
    rooms: usize,
    members: usize,
    t: usize,
) -> (Vec<usize>, Vec<LoginSpec>) {
    let base = env.id_base;
    let mine = env.owned(rooms, t);
    let mut specs = Vec::with_capacity(mine.len() * members);
    for &r in &mine {
        for m in 0..members {
            let idx = r * members + m;
            let token = tokens
                .get(&(base + idx as u64))
                .cloned()
                .unwrap_or_default();
            specs.push((idx, token, vec![base + r as u64]));
        }
    }
    (mine, specs)
}

/// What a load thread counts: latency, verification, and how many events
/// it sent inside the measured window.
#[derive(Default)]
pub struct Tally {
    /// Latency histograms.
    pub lat: Latency,
    /// Verification counters.
    pub v: Verify,
    /// Events sent within the measured window.
    pub sent_measured: u64,
}

impl Tally {
    /// Counts one event sent, scheduled at `intended`.
    pub fn sent(&mut self, w: &Window, intended: u64) {
        self.v.sent += 1;
        if w.measured(intended) {
            self.sent_measured += 1;
        }
    }

    /// Counts one event of a schedule, due at `intended` and sent at
    /// `now`, with its send lag.
    pub fn sent_paced(&mut self, w: &Window, intended: u64, now: u64) {
        self.sent(w, intended);
        if w.measured(intended) {
            self.lat.record_lag(intended, now);
        }
    }

    /// Adds another thread's tally.
    pub fn merge(&mut self, o: &Tally) {
        self.lat.merge(&o.lat);
        self.v.merge(&o.v);
        self.sent_measured += o.sent_measured;
    }

    /// Moves the counts out, leaving an empty tally.
    pub fn take(&mut self) -> Tally {
        std::mem::take(self)
    }

    /// Counts a connection that failed (`res` is an error) before the run
    /// stopped.
    pub fn closed_unless<T, E>(&mut self, res: &Result<T, E>, stop: &Cell<bool>) {
        if res.is_err() && !stop.get() {
            self.v.closed += 1;
        }
    }

    /// Fills the report's measured figures, verification and resources.
    pub fn fill_report(&self, report: &mut Report, secs: f64, shared: &Shared, threads: usize) {
        report.set_measured(
            secs,
            self.sent_measured,
            self.lat.intended.clone(),
            Some(&self.lat.sent),
        );
        report.set_send_lag(&self.lat.lag);
        report.verify = self.v;
        shared.fill_resources(report, threads);
    }
}

/// All threads' tallies together.
pub fn merged<'a>(outs: impl IntoIterator<Item = &'a Tally>) -> Tally {
    let mut all = Tally::default();
    for o in outs {
        all.merge(o);
    }
    all
}

/// Publishes a thread's counts to the progress line every 200 ms until the
/// window's end.
pub async fn progress_until_end(shared: &Shared, w: Window, v: impl Fn() -> Verify) {
    let mut last = (0, 0, 0);
    while now_ns() < w.end_ns {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = v();
        let fails = v.failures().iter().map(|x| x.1).sum();
        publish(&shared.progress, (v.sent, v.delivered, fails), &mut last);
    }
}

/// The load window of one thread: progress until the window's end, then
/// up to `--drain-ms` for `complete()`; thread 0 plans the resource
/// snapshots ([`Shared::snap_window`]). Sets `stop` at the end, after which connection
/// failures no longer count.
pub async fn load_window(
    env: &Env<'_>,
    shared: &Shared,
    t: usize,
    w: Window,
    tally: &RefCell<Tally>,
    stop: &Cell<bool>,
    complete: impl FnMut() -> bool,
) {
    if t == 0 {
        shared.snap_window(w, env.target.pid);
    }
    progress_until_end(shared, w, || tally.borrow().v).await;
    drain(w.end_ns + env.run.drain_ms * 1_000_000, complete).await;
    stop.set(true);
}

/// Keeps a chatd connection that never sends alive past the server's idle
/// timeout.
pub async fn keepalive(wr: Writer) {
    wire::idle(wire::Chatd, wr, Rc::default()).await;
}

/// Holds a writer until the run ends: dropping it would half-close the
/// connection while the room still drains.
pub async fn hold(wr: Writer) {
    std::future::pending::<()>().await;
    drop(wr);
}

/// Waits (polling every 20 ms) until `complete()` or `deadline_ns`.
pub async fn drain(deadline_ns: u64, mut complete: impl FnMut() -> bool) {
    while !complete() && now_ns() < deadline_ns {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
