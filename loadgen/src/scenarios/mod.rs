//! What every scenario shares: the target server, the worker threads (one
//! tokio current-thread runtime each), the start gate that lines the
//! threads up after setup, progress lines on stderr, and resource snapshots
//! for the report.

pub mod calls;
pub mod connections;
pub mod direct;
pub mod fanout;
pub mod presence;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::RunOpts;
use crate::client::ClientError;
use crate::measure::{self, now_ns, Window};
use crate::provision::ProvisionError;
use crate::report::{LoadgenCpu, Report, ServerStats};

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
    /// chatd listener.
    pub chatd: SocketAddr,
    /// statusd listener.
    pub statusd: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
    /// Admin bearer token.
    pub admin_token: String,
    /// Server pid, when known.
    pub pid: Option<u32>,
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
    /// An admin API client.
    pub fn admin(&self) -> crate::provision::Admin {
        crate::provision::Admin::new(self.target.admin, &self.target.admin_token)
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

    /// Takes the three snapshots at the window's times (run on one thread).
    pub async fn snap_window(&self, w: Window, pid: Option<u32>) {
        self.snap(0, pid);
        measure::sleep_until_ns(w.measure_ns).await;
        self.snap(1, pid);
        measure::sleep_until_ns(w.end_ns).await;
        self.snap(2, pid);
    }

    /// Fills the report's CPU and server fields from the snapshots.
    pub fn fill_resources(&self, r: &mut Report, threads: usize) {
        let Ok(s) = self.snaps.lock() else { return };
        let (Some(a), Some(b), Some(c)) = (s[0], s[1], s[2]) else {
            return;
        };
        let wall = (c.wall_ns.saturating_sub(b.wall_ns)) as f64 / 1e9;
        let cpu = c.cpu - b.cpu;
        let cores = if wall > 0.0 { cpu / wall } else { 0.0 };
        r.loadgen = LoadgenCpu {
            threads,
            cpu_secs: cpu,
            wall_secs: wall,
            cores_used: cores,
            per_thread_busy: cores / threads.max(1) as f64,
        };
        if r.loadgen.per_thread_busy > 0.85 {
            r.notes.push(format!(
                "loadgen used {:.0}% of its {} thread(s): it may be the bottleneck; add --threads",
                r.loadgen.per_thread_busy * 100.0,
                threads
            ));
        }
        if let (Some(pid), Some(rb), Some(rc)) = (c.pid, a.srv_rss, c.srv_rss) {
            let scpu = c.srv_cpu.unwrap_or(0.0) - b.srv_cpu.unwrap_or(0.0);
            r.server = Some(ServerStats {
                pid,
                rss_kib_before: rb,
                rss_kib_after: rc,
                cpu_secs: scpu,
                cores_used: if wall > 0.0 { scpu / wall } else { 0.0 },
            });
        }
    }
}

/// Process resources at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Snap {
    /// [`now_ns`].
    pub wall_ns: u64,
    /// Loadgen CPU seconds.
    pub cpu: f64,
    /// Server pid.
    pub pid: Option<u32>,
    /// Server CPU seconds.
    pub srv_cpu: Option<f64>,
    /// Server VmRSS KiB.
    pub srv_rss: Option<u64>,
}

impl Snap {
    /// Now.
    pub fn take(pid: Option<u32>) -> Snap {
        Snap {
            wall_ns: now_ns(),
            cpu: measure::self_cpu_secs(),
            pid,
            srv_cpu: pid.and_then(measure::proc_cpu_secs),
            srv_rss: pid.and_then(measure::rss_kib),
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
        let monitor = scope.spawn(move || monitor(name, shared, quiet));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                scope.spawn(move || -> Result<R, ScenarioError> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(ScenarioError::Runtime)?;
                    let local = tokio::task::LocalSet::new();
                    Ok(local.block_on(&rt, f(i, shared.clone())))
                })
            })
            .collect();
        let mut out = Vec::with_capacity(threads);
        let mut err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => err = Some(e),
                Err(_) => err = Some(ScenarioError::Setup("worker thread panicked".into())),
            }
        }
        shared.done.store(true, Ordering::Release);
        let _ = monitor.join();
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
        std::thread::sleep(Duration::from_millis(50));
        let now = now_ns();
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

/// Logs in many chatd connections of one thread with at most `concurrency`
/// in flight. `specs` are (connection index, token, rooms); returns the
/// connections in the same order, or the first error.
pub async fn login_many(
    addr: SocketAddr,
    source_ips: u32,
    concurrency: usize,
    specs: Vec<(usize, String, Vec<u64>)>,
    progress: &Progress,
) -> Result<Vec<crate::client::Chatd>, ClientError> {
    let sem = std::rc::Rc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(specs.len());
    for (idx, token, rooms) in specs {
        let sem = sem.clone();
        handles.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await;
            crate::client::login_chatd(addr, idx, source_ips, &token, &rooms).await
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

/// Waits (polling every 20 ms) until `complete()` or `deadline_ns`.
pub async fn drain(deadline_ns: u64, mut complete: impl FnMut() -> bool) {
    while !complete() && now_ns() < deadline_ns {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
