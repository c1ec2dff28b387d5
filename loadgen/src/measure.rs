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

    /// Adds another thread's histograms.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.intended.add(&other.intended);
        let _ = self.sent.add(&other.sent);
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
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((ut + st) / hz)
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
