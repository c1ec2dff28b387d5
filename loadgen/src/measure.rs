//! What a run measures: one process-wide clock, the stamp every message
//! carries, latency histograms, delivery verification counters, loadgen's
//! own CPU use and the server's RSS / CPU from /proc.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch (shared by all threads, so a
/// stamp written on one thread can be read on another).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The tokio instant of a [`now_ns`] value.
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    let epoch = *EPOCH.get_or_init(Instant::now);
    tokio::time::Instant::from_std(epoch + Duration::from_nanos(ns))
}

/// Sleeps until the [`now_ns`] value `ns`.
pub async fn sleep_until_ns(ns: u64) {
    tokio::time::sleep_until(instant_at(ns)).await;
}

/// Bytes of the stamp at the start of every message's msgdata:
/// `sender(4) tag(4) seq(8) intended_ns(8) sent_ns(8)`.
pub const STAMP_LEN: usize = 32;

/// The verification stamp of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Global index of the sending connection.
    pub sender: u32,
    /// Scenario-defined addressing tag (stream and target).
    pub tag: u32,
    /// Sequence number within (sender, stream), from 0.
    pub seq: u64,
    /// When the message was scheduled to be sent ([`now_ns`]).
    pub intended_ns: u64,
    /// When it was actually handed to the socket ([`now_ns`]).
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `buf`
    /// (which is at least that long).
    pub fn write(&self, buf: &mut [u8]) {
        if let Some(b) = buf.get_mut(..STAMP_LEN) {
            b[0..4].copy_from_slice(&self.sender.to_le_bytes());
            b[4..8].copy_from_slice(&self.tag.to_le_bytes());
            b[8..16].copy_from_slice(&self.seq.to_le_bytes());
            b[16..24].copy_from_slice(&self.intended_ns.to_le_bytes());
            b[24..32].copy_from_slice(&self.sent_ns.to_le_bytes());
        }
    }

    /// Reads a stamp; `None` when the data is too short.
    pub fn read(buf: &[u8]) -> Option<Stamp> {
        let b = buf.get(..STAMP_LEN)?;
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Some(Stamp {
            sender: u32_at(0),
            tag: u32_at(4),
            seq: u64_at(8),
            intended_ns: u64_at(16),
            sent_ns: u64_at(24),
        })
    }
}

/// The part of a run that counts: load runs from `start_ns`, is measured
/// from `measure_ns` and stops at `end_ns`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Load starts.
    pub start_ns: u64,
    /// Warm-up over; measuring starts.
    pub measure_ns: u64,
    /// Load stops.
    pub end_ns: u64,
}

impl Window {
    /// A window starting at `start_ns`.
    pub fn new(start_ns: u64, warmup_s: f64, duration_s: f64) -> Window {
        let measure_ns = start_ns + (warmup_s.max(0.0) * 1e9) as u64;
        Window {
            start_ns,
            measure_ns,
            end_ns: measure_ns + (duration_s.max(0.0) * 1e9) as u64,
        }
    }

    /// Whether an event scheduled at `ns` is measured.
    pub fn measured(&self, ns: u64) -> bool {
        ns >= self.measure_ns && ns < self.end_ns
    }
}

/// Latency histograms in microseconds, 1 us .. 60 s, 3 significant digits.
pub struct Latency {
    /// From each event's intended (scheduled) time: free of coordinated
    /// omission. This is the number to quote.
    pub intended: Histogram<u64>,
    /// From the time the message was actually written: shows how much of
    /// the above is loadgen's own scheduling delay.
    pub sent: Histogram<u64>,
    /// Send lag of each scheduled event sent in the measured window: when
    /// it was handed to the socket minus when it was due. Loadgen's own
    /// lateness, which every latency "from intended" includes; a large one
    /// means those figures describe loadgen, not the server.
    pub lag: Histogram<u64>,
}

/// A fresh histogram with the bounds every run uses.
pub fn new_histogram() -> Histogram<u64> {
    // 1 us .. 60 s at 3 digits are valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            intended: new_histogram(),
            sent: new_histogram(),
            lag: new_histogram(),
        }
    }
}

impl Latency {
    /// Records one delivery received at `now` of an event scheduled at
    /// `intended` and written at `sent` (all [`now_ns`]).
    pub fn record(&mut self, now: u64, intended: u64, sent: u64) {
        self.intended
            .saturating_record((now.saturating_sub(intended) / 1000).max(1));
        self.sent
            .saturating_record((now.saturating_sub(sent) / 1000).max(1));
    }

    /// Records the send lag of an event due at `intended` and handed to
    /// the socket at `actual` (both [`now_ns`]).
    pub fn record_lag(&mut self, intended: u64, actual: u64) {
        self.lag
            .saturating_record(actual.saturating_sub(intended) / 1000);
    }

    /// Adds another thread's histograms.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.intended.add(&other.intended);
        let _ = self.sent.add(&other.sent);
        let _ = self.lag.add(&other.lag);
    }
}

/// Delivery verification counters. Every field but `sent` and `delivered`
/// must be zero for a run to pass.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Verify {
    /// Messages (or commands) sent during the whole run.
    pub sent: u64,
    /// Deliveries received during the whole run.
    pub delivered: u64,
    /// Expected deliveries never received (by the end of the drain).
    pub lost: u64,
    /// Deliveries received more than once.
    pub duplicated: u64,
    /// Deliveries that arrived after a later message of the same sender.
    pub reordered: u64,
    /// Deliveries to a connection that was not an intended recipient.
    pub misaddressed: u64,
    /// Deliveries whose content differed from what was sent.
    pub corrupt: u64,
    /// Unexpected OP_ERROR commands.
    pub errors: u64,
    /// Connections the server closed, or that failed, unexpectedly.
    pub closed: u64,
}

impl Verify {
    /// Adds another counter set.
    pub fn merge(&mut self, o: &Verify) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.misaddressed += o.misaddressed;
        self.corrupt += o.corrupt;
        self.errors += o.errors;
        self.closed += o.closed;
    }

    /// Whether every failure counter is zero.
    pub fn ok(&self) -> bool {
        self.failures().iter().all(|(_, v)| *v == 0)
    }

    /// The failure counters by name.
    pub fn failures(&self) -> [(&'static str, u64); 7] {
        [
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("reordered", self.reordered),
            ("misaddressed", self.misaddressed),
            ("corrupt", self.corrupt),
            ("errors", self.errors),
            ("closed", self.closed),
        ]
    }
}

/// How one arrival relates to the ones before it, per (sender, receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than everything seen so far.
    InOrder,
    /// Older than the newest seen, not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
}

/// Sequence tracking of one (sender stream, receiver) pair: the highest
/// sequence seen and a 64-entry bitmap below it (like IPsec's anti-replay
/// window), so duplicates and reordering are told apart without a set.
#[derive(Clone, Copy, Debug, Default)]
pub struct Track {
    /// Highest sequence seen + 1 (0: none yet).
    top: u64,
    /// Bit d: sequence `top - 1 - d` was seen.
    window: u64,
    /// Distinct sequences received.
    pub unique: u64,
}

impl Track {
    /// Notes sequence `seq`.
    pub fn on(&mut self, seq: u64) -> Arrival {
        if seq >= self.top {
            let shift = seq + 1 - self.top;
            self.window = if shift >= 64 { 0 } else { self.window << shift };
            self.window |= 1;
            self.top = seq + 1;
            self.unique += 1;
            return Arrival::InOrder;
        }
        let d = self.top - 1 - seq;
        if d >= 64 {
            // Too old to tell; assume a late (reordered) first arrival.
            self.unique += 1;
            return Arrival::Reordered;
        }
        if self.window & (1 << d) != 0 {
            Arrival::Duplicate
        } else {
            self.window |= 1 << d;
            self.unique += 1;
            Arrival::Reordered
        }
    }

    /// Applies an arrival to the counters.
    pub fn count(a: Arrival, v: &mut Verify) {
        match a {
            Arrival::InOrder => {}
            Arrival::Reordered => v.reordered += 1,
            Arrival::Duplicate => v.duplicated += 1,
        }
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; no aliasing.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// VmRSS of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This host's count of connections dropped because a listener's accept
/// queue was full (`TcpExt ListenOverflows` in /proc/net/netstat). Each
/// such SYN is retried by the client a second or more later, which a
/// connect-rate figure must not hide.
pub fn listen_overflows() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/netstat").ok()?;
    netstat_value(&s, "TcpExt:", "ListenOverflows")
}

/// The value of `name` in a /proc/net/netstat style text: a line of names
/// after `prefix`, then a line of values after the same prefix.
fn netstat_value(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let i = names.split_whitespace().position(|n| n == name);
        if let Some(i) = i {
            return values.split_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_cpu(&s)?.1 / clock_ticks())
}

/// User and system CPU seconds of a process apart (`/proc/<pid>/stat`;
/// [`proc_cpu_secs`] is their sum): on loopback most of a socket write's
/// cost is the kernel's (the receiver's side of TCP runs in the sender's
/// system time), so the two tell a server's own work from its writes'.
pub fn proc_cpu_split(pid: Option<u32>) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    let (_, ut, st) = stat_cpu_split(&s)?;
    Some((ut / clock_ticks(), st / clock_ticks()))
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The command name and utime + stime (in clock ticks) of a
/// `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
pub fn stat_cpu(line: &str) -> Option<(&str, f64)> {
    stat_cpu_split(line).map(|(name, ut, st)| (name, ut + st))
}

/// The command name, utime and stime (in clock ticks) of a stat line.
fn stat_cpu_split(line: &str) -> Option<(&str, f64, f64)> {
    // The command name is in parentheses and may hold spaces and ')'.
    let (head, rest) = line.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((name, ut, st))
}

/// Busy CPU seconds of the whole host so far (all cores, all processes:
/// user, nice, system and steal from /proc/stat), so that a report can tell
/// how much of the box other processes took.
pub fn host_busy_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    Some(host_busy_ticks(s.lines().next()?)? / clock_ticks())
}

/// Busy ticks of the aggregate `cpu` line of /proc/stat: user, nice,
/// system and steal (another VM's share). Not irq and softirq: with IRQ
/// time accounting the loopback traffic of the run itself lands there, not
/// in the client's or server's system time. Guest time is inside user.
fn host_busy_ticks(line: &str) -> Option<f64> {
    let mut f = line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<f64> = f.take(8).map(|x| x.parse().unwrap_or(0.0)).collect();
    let [user, nice, system, _idle, _iowait, _irq, _softirq, steal] = v[..] else {
        return None;
    };
    Some(user + nice + system + steal)
}

/// CPU time of one thread so far.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadCpu {
    /// Thread id.
    pub tid: u32,
    /// Its name (/proc's `comm`).
    pub name: String,
    /// User + system seconds.
    pub secs: f64,
}

/// Every thread of process `pid` (`None`: this process) and its CPU time,
/// from `/proc/<pid>/task/*/stat`; empty when /proc cannot be read.
pub fn threads_cpu(pid: Option<u32>) -> Vec<ThreadCpu> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/task"),
        None => "/proc/self/task".to_string(),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let hz = clock_ticks();
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = stat_cpu(&text) {
            out.push(ThreadCpu {
                tid,
                name: name.to_string(),
                secs: ticks / hz,
            });
        }
    }
    out.sort_by_key(|t| t.tid);
    out
}

/// How busy one thread was over an interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadBusy {
    /// Its name.
    pub name: String,
    /// CPU seconds over the interval / wall seconds: 1.0 is a whole core.
    pub busy: f64,
}

/// Each thread's busy share over `wall_secs` between two readings of
/// [`threads_cpu`] (a thread that started in between counts from 0), the
/// busiest first.
pub fn threads_busy(before: &[ThreadCpu], after: &[ThreadCpu], wall_secs: f64) -> Vec<ThreadBusy> {
    if wall_secs <= 0.0 {
        return Vec::new();
    }
    let mut out: Vec<ThreadBusy> = after
        .iter()
        .map(|a| {
            let b = before
                .iter()
                .find(|b| b.tid == a.tid)
                .map_or(0.0, |b| b.secs);
            ThreadBusy {
                name: a.name.clone(),
                busy: (a.secs - b).max(0.0) / wall_secs,
            }
        })
        .collect();
    out.sort_by(|x, y| y.busy.total_cmp(&x.busy));
    out
}

/// A small xorshift generator for jitter (no need for a crate).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A uniform value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A uniform value in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_value_reads_the_named_column_of_its_prefix() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                    TcpExt: 1 42 43\n\
                    IpExt: ListenOverflows InOctets\n\
                    IpExt: 7 8\n";
        assert_eq!(netstat_value(text, "TcpExt:", "ListenOverflows"), Some(42));
        assert_eq!(netstat_value(text, "IpExt:", "InOctets"), Some(8));
        assert_eq!(netstat_value(text, "TcpExt:", "Missing"), None);
        assert_eq!(
            netstat_value("TcpExt: ListenOverflows\n", "TcpExt:", "ListenOverflows"),
            None
        );
    }

    #[test]
    fn stat_cpu_reads_name_and_ticks_past_a_name_with_spaces_and_parens() {
        let line = "4242 (lg w(0) x) R 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0\n";
        assert_eq!(stat_cpu(line), Some(("lg w(0) x", 175.0)));
        assert_eq!(stat_cpu_split(line), Some(("lg w(0) x", 150.0, 25.0)));
        assert_eq!(stat_cpu("4242 (x) R 1 2"), None, "too few fields");
    }

    #[test]
    fn threads_busy_divides_each_threads_cpu_by_the_wall_time() {
        let t = |tid, name: &str, secs| ThreadCpu {
            tid,
            name: name.into(),
            secs,
        };
        let before = [t(1, "main", 1.0), t(2, "lg-worker-0", 10.0)];
        let after = [
            t(1, "main", 1.1),
            t(2, "lg-worker-0", 14.6),
            t(3, "lg-worker-1", 2.0),
        ];
        let b = threads_busy(&before, &after, 5.0);
        let names: Vec<&str> = b.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            ["lg-worker-0", "lg-worker-1", "main"],
            "busiest first"
        );
        assert!((b[0].busy - 0.92).abs() < 1e-9);
        assert!((b[1].busy - 0.4).abs() < 1e-9, "a new thread counts from 0");
        assert!((b[2].busy - 0.02).abs() < 1e-9);
        assert!(threads_busy(&before, &after, 0.0).is_empty());
    }

    #[test]
    fn host_busy_counts_user_nice_system_and_steal() {
        let line = "cpu  100 2 30 5000 7 1 4 3 0 0";
        assert_eq!(host_busy_ticks(line), Some(135.0));
        assert_eq!(
            host_busy_ticks("cpu0 1 2 3 4 5 6 7 8"),
            None,
            "a single core"
        );
        assert_eq!(host_busy_ticks("cpu 1 2 3"), None, "too short");
    }

    #[test]
    fn lag_records_actual_minus_intended_in_microseconds() {
        let mut l = Latency::default();
        l.record_lag(1_000_000, 1_050_000);
        l.record_lag(2_000_000, 1_999_000);
        assert_eq!(l.lag.len(), 2);
        assert_eq!(l.lag.max(), 50);
        assert_eq!(l.lag.min(), 0, "an early send counts as no lag");
    }

    #[test]
    fn stamp_roundtrip() {
        let s = Stamp {
            sender: 7,
            tag: 3,
            seq: 99,
            intended_ns: 123,
            sent_ns: 456,
        };
        let mut b = [0u8; 40];
        s.write(&mut b);
        assert_eq!(Stamp::read(&b), Some(s));
        assert_eq!(Stamp::read(&b[..31]), None);
    }

    #[test]
    fn track_classifies() {
        let mut t = Track::default();
        assert_eq!(t.on(0), Arrival::InOrder);
        assert_eq!(t.on(2), Arrival::InOrder);
        assert_eq!(t.on(1), Arrival::Reordered);
        assert_eq!(t.on(1), Arrival::Duplicate);
        assert_eq!(t.on(2), Arrival::Duplicate);
        assert_eq!(t.on(100), Arrival::InOrder);
        assert_eq!(t.on(3), Arrival::Reordered);
        assert_eq!(t.unique, 5);
    }
}
