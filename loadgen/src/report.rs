//! Reports: a human summary, the HDR percentile distribution in the
//! standard `.hgrm` layout (values in milliseconds) and a JSON summary,
//! written to `<report-dir>/<scenario>.{txt,hgrm,json}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::measure::{ThreadBusy, Verify};

/// Send lag p99 above which a report warns that its latency figures are
/// loadgen's, not the server's (issue 12: 200 us; a server's own p50 on
/// loopback is 100-200 us, so more lag than that swamps it).
pub const SEND_LAG_WARN_MS: f64 = 0.2;

/// Other processes using this much of the host (cores) during a run make
/// its figures the busy box's: they move every latency and, with client and
/// server sharing the cores, the throughput. A quiet box shows ~0.02.
pub const OTHERS_BUSY_CORES: f64 = 0.25;

/// A thread this busy (share of one core over the measured window) is
/// treated as saturated: the process it belongs to is the limit. Not 1.0:
/// /proc's CPU times tick at 100 Hz and a saturated thread still loses
/// some time to scheduling on a shared box.
pub const BOUND_BUSY: f64 = 0.9;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// From a microsecond histogram.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// CPU used by loadgen itself over the measured window.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadgenCpu {
    /// Loadgen worker threads.
    pub threads: usize,
    /// User + system seconds.
    pub cpu_secs: f64,
    /// Wall seconds.
    pub wall_secs: f64,
    /// cpu_secs / wall_secs: cores in use.
    pub cores_used: f64,
    /// cores_used / threads: near 1.0 means loadgen itself is saturated and
    /// the numbers describe loadgen, not the server.
    pub per_thread_busy: f64,
    /// Each loadgen thread's share of a core (workers `lg-worker-N`, the
    /// progress monitor, main), busiest first: the process average above
    /// can hide one saturated thread.
    pub threads_busy: Vec<ThreadBusy>,
    /// The busiest thread's share of a core.
    pub busiest_thread: f64,
}

/// The server's resources, when its pid is known.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerStats {
    /// Process id.
    pub pid: u32,
    /// VmRSS before the load (KiB).
    pub rss_kib_before: u64,
    /// VmRSS at the end of the load (KiB).
    pub rss_kib_after: u64,
    /// User + system seconds over the measured window.
    pub cpu_secs: f64,
    /// cpu_secs / wall seconds.
    pub cores_used: f64,
    /// The busiest server thread's share of a core over the window
    /// (`/proc/<pid>/task/*/stat`).
    pub busiest_thread: f64,
    /// Deliveries measured per server CPU-second: the efficiency figure,
    /// fair across thread models (0 when the server used no CPU).
    pub deliveries_per_cpu_sec: f64,
}

/// Whose limit a report's figures show.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Trust {
    /// Whether the figures describe the server: loadgen sent on time and
    /// none of its threads was saturated.
    pub trustworthy: bool,
    /// Send lag p99 in ms (`None`: nothing was sent on a schedule).
    pub send_lag_p99_ms: Option<f64>,
    /// The send lag p99 is above [`SEND_LAG_WARN_MS`].
    pub send_lag_high: bool,
    /// A loadgen thread was at least [`BOUND_BUSY`] busy.
    pub client_bound: bool,
    /// A server thread was at least [`BOUND_BUSY`] busy.
    pub server_bound: bool,
    /// Loadgen and the server together used at least [`BOUND_BUSY`] of
    /// every core of this host: they were taking turns on the cores.
    pub box_bound: bool,
    /// Other processes used at least [`OTHERS_BUSY_CORES`] of the host.
    pub box_busy: bool,
    /// Cores other processes used (`None`: unknown without the server's pid).
    pub others_cores: Option<f64>,
    /// Cores of this host.
    pub cpus: usize,
    /// One line: which one was the limit and whether to believe the figures.
    pub verdict: String,
}

/// The CPU and timing facts [`Trust::judge`] weighs.
#[derive(Clone, Debug, Default)]
pub struct TrustInputs {
    /// Send lag p99 (ms), when anything was sent on a schedule.
    pub send_lag_p99_ms: Option<f64>,
    /// The busiest loadgen thread: name and share of a core.
    pub client_busiest: Option<(String, f64)>,
    /// Loadgen's cores in use.
    pub client_cores: f64,
    /// The busiest server thread's share of a core, when the pid is known.
    pub server_busiest: Option<f64>,
    /// The server's cores in use, when the pid is known.
    pub server_cores: Option<f64>,
    /// Cores the host's other processes used, when known.
    pub others_cores: Option<f64>,
    /// Cores of this host.
    pub cpus: usize,
}

impl Trust {
    /// Decides whose limit the figures show.
    pub fn judge(i: &TrustInputs) -> Trust {
        let send_lag_high = i.send_lag_p99_ms.is_some_and(|p| p > SEND_LAG_WARN_MS);
        let client_bound = i.client_busiest.as_ref().is_some_and(|c| c.1 >= BOUND_BUSY);
        let server_bound = i.server_busiest.is_some_and(|b| b >= BOUND_BUSY);
        let together = i.client_cores + i.server_cores.unwrap_or(0.0);
        let box_bound =
            i.server_cores.is_some() && i.cpus > 0 && together >= BOUND_BUSY * i.cpus as f64;
        let box_busy = i.others_cores.is_some_and(|o| o >= OTHERS_BUSY_CORES);
        let pct = |v: f64| format!("{:.0}%", v * 100.0);
        let mut why = Vec::new();
        if send_lag_high {
            why.push(format!(
                "loadgen sent late (send lag p99 {:.3} ms > {SEND_LAG_WARN_MS} ms)",
                i.send_lag_p99_ms.unwrap_or(0.0)
            ));
        }
        if let Some((name, b)) = i.client_busiest.as_ref().filter(|_| client_bound) {
            why.push(format!(
                "loadgen thread {name} at {} of a core (client-bound)",
                pct(*b)
            ));
        }
        if box_busy {
            why.push(format!(
                "other processes used {:.2} of the box's {} cores (a busy box)",
                i.others_cores.unwrap_or(0.0),
                i.cpus
            ));
        }
        let trustworthy = why.is_empty();
        let mut verdict = if trustworthy {
            let lag = i
                .send_lag_p99_ms
                .map_or(String::new(), |p| format!(", send lag p99 {p:.3} ms"));
            let head = i
                .client_busiest
                .as_ref()
                .map_or(String::new(), |c| format!(" (busiest thread {})", pct(c.1)));
            format!("trustworthy: loadgen had headroom{head}{lag}")
        } else {
            format!("NOT the server's figures: {}", why.join("; "))
        };
        if server_bound {
            verdict.push_str(&format!(
                "; the server was the limit (a thread at {})",
                pct(i.server_busiest.unwrap_or(0.0))
            ));
        }
        if box_bound {
            verdict.push_str(&format!(
                "; client and server together used {together:.2} of {} cores: they shared the box",
                i.cpus
            ));
        }
        Trust {
            trustworthy,
            send_lag_p99_ms: i.send_lag_p99_ms,
            send_lag_high,
            client_bound,
            server_bound,
            box_bound,
            box_busy,
            others_cores: i.others_cores,
            cpus: i.cpus,
            verdict,
        }
    }
}

/// One scenario's results.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Scenario name (file names derive from it).
    pub scenario: String,
    /// The parameters it ran with.
    pub params: serde_json::Value,
    /// Measured seconds.
    pub measured_secs: f64,
    /// What "sent" counts (messages, heartbeats, presence changes, logins).
    pub unit: String,
    /// Sent within the measured window.
    pub sent: u64,
    /// sent / measured_secs.
    pub sent_per_sec: f64,
    /// Deliveries measured (samples of the latency histogram).
    pub deliveries: u64,
    /// deliveries / measured_secs.
    pub deliveries_per_sec: f64,
    /// Latency from each event's intended send time.
    pub latency_ms: Option<Percentiles>,
    /// Latency from the actual write (the difference to the above is
    /// loadgen's own scheduling delay).
    pub latency_from_write_ms: Option<Percentiles>,
    /// Send lag of the scheduled sends: actual minus intended send time
    /// (`None`: nothing was sent on a schedule, e.g. --max).
    pub send_lag_ms: Option<Percentiles>,
    /// Whose limit these figures show ([`Trust::judge`]).
    pub trust: Trust,
    /// Cores this host's other processes used over the measured window
    /// (`None`: unknown, e.g. without the server's pid).
    pub others_cores: Option<f64>,
    /// Delivery verification over the whole run.
    pub verify: Verify,
    /// Loadgen's CPU.
    pub loadgen: LoadgenCpu,
    /// The server's resources.
    pub server: Option<ServerStats>,
    /// Scenario-specific figures.
    pub extra: BTreeMap<String, f64>,
    /// Remarks (saturation warnings, ...).
    pub notes: Vec<String>,
    /// The latency histogram (microseconds) for the .hgrm file.
    #[serde(skip)]
    pub hist: Option<Histogram<u64>>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &str, unit: &str, params: serde_json::Value) -> Report {
        Report {
            scenario: scenario.to_string(),
            params,
            measured_secs: 0.0,
            unit: unit.to_string(),
            sent: 0,
            sent_per_sec: 0.0,
            deliveries: 0,
            deliveries_per_sec: 0.0,
            latency_ms: None,
            latency_from_write_ms: None,
            send_lag_ms: None,
            trust: Trust::default(),
            others_cores: None,
            verify: Verify::default(),
            loadgen: LoadgenCpu::default(),
            server: None,
            extra: BTreeMap::new(),
            notes: Vec::new(),
            hist: None,
        }
    }

    /// Fills the throughput and latency fields.
    pub fn set_measured(
        &mut self,
        secs: f64,
        sent: u64,
        intended: Histogram<u64>,
        written: Option<&Histogram<u64>>,
    ) {
        self.measured_secs = secs;
        self.sent = sent;
        let per = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        self.sent_per_sec = per(sent);
        self.deliveries = intended.len();
        self.deliveries_per_sec = per(intended.len());
        if !intended.is_empty() {
            self.latency_ms = Some(Percentiles::of(&intended));
        }
        self.latency_from_write_ms = written.filter(|h| !h.is_empty()).map(Percentiles::of);
        self.hist = Some(intended);
    }

    /// Fills the send lag of the scheduled sends (an empty histogram: none).
    pub fn set_send_lag(&mut self, lag: &Histogram<u64>) {
        self.send_lag_ms = (!lag.is_empty()).then(|| Percentiles::of(lag));
    }

    /// Judges the figures ([`Trust::judge`]) from the CPU and send-lag
    /// fields filled so far, and adds the loud warnings to the notes.
    pub fn judge(&mut self) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let l = &self.loadgen;
        let inputs = TrustInputs {
            send_lag_p99_ms: self.send_lag_ms.as_ref().map(|p| p.p99),
            client_busiest: l.threads_busy.first().map(|t| (t.name.clone(), t.busy)),
            client_cores: l.cores_used,
            server_busiest: self.server.as_ref().map(|s| s.busiest_thread),
            server_cores: self.server.as_ref().map(|s| s.cores_used),
            others_cores: self.others_cores,
            cpus,
        };
        self.trust = Trust::judge(&inputs);
    }

    /// Whether verification passed.
    pub fn ok(&self) -> bool {
        self.verify.ok()
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "=== {} ===", self.scenario);
        let _ = writeln!(s, "params: {}", self.params);
        let _ = writeln!(
            s,
            "measured {:.1} s: sent {} {} ({:.0}/s), deliveries {} ({:.0}/s)",
            self.measured_secs,
            self.sent,
            self.unit,
            self.sent_per_sec,
            self.deliveries,
            self.deliveries_per_sec
        );
        let lat = |name: &str, p: &Option<Percentiles>, s: &mut String| {
            if let Some(p) = p {
                let _ = writeln!(
                    s,
                    "{name}: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3}, n={})",
                    p.p50, p.p90, p.p99, p.p999, p.max, p.mean, p.count
                );
            }
        };
        lat("latency ms (from intended send)", &self.latency_ms, &mut s);
        lat(
            "latency ms (from actual write) ",
            &self.latency_from_write_ms,
            &mut s,
        );
        match &self.send_lag_ms {
            Some(_) => lat(
                "send lag ms (actual - intended) ",
                &self.send_lag_ms,
                &mut s,
            ),
            None => {
                let _ = writeln!(s, "send lag: none measured (nothing sent on a schedule)");
            }
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k}: {}", fmt_num(*v));
        }
        let l = &self.loadgen;
        let busiest: Vec<String> = l
            .threads_busy
            .iter()
            .take(3)
            .map(|t| format!("{} {:.0}%", t.name, t.busy * 100.0))
            .collect();
        let _ = writeln!(
            s,
            "loadgen cpu: {:.2} cores over {} worker thread(s); busiest threads: {}",
            l.cores_used,
            l.threads,
            if busiest.is_empty() {
                "-".to_string()
            } else {
                busiest.join(", ")
            }
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "server pid {}: cpu {:.2} cores (busiest thread {:.0}%), rss {} KiB -> {} KiB",
                sv.pid,
                sv.cores_used,
                sv.busiest_thread * 100.0,
                sv.rss_kib_before,
                sv.rss_kib_after
            );
            if sv.deliveries_per_cpu_sec > 0.0 {
                let _ = writeln!(
                    s,
                    "deliveries per server cpu-second: {:.0}",
                    sv.deliveries_per_cpu_sec
                );
            }
        }
        if let Some(o) = self.others_cores {
            let _ = writeln!(s, "other processes on this host: {o:.2} cores");
        }
        let _ = writeln!(s, "limit: {}", self.trust.verdict);
        if self.trust.send_lag_high {
            let _ = writeln!(
                s,
                "!!!!!!!! SEND LAG p99 {:.3} ms > {SEND_LAG_WARN_MS} ms: loadgen sent late; the latency figures are loadgen's, not the server's !!!!!!!!",
                self.trust.send_lag_p99_ms.unwrap_or(0.0)
            );
        }
        if self.trust.box_busy {
            let _ = writeln!(
                s,
                "!!!!!!!! BUSY BOX: other processes used {:.2} cores during the run: latency and throughput are this box's, not the server's !!!!!!!!",
                self.others_cores.unwrap_or(0.0)
            );
        }
        if self.trust.client_bound {
            let _ = writeln!(
                s,
                "!!!!!!!! CLIENT-BOUND: a loadgen thread was at {:.0}% of a core: throughput and latency are loadgen's limit, not the server's (add --threads, or run loadgen elsewhere) !!!!!!!!",
                l.busiest_thread * 100.0
            );
        }
        let v = &self.verify;
        let _ = writeln!(
            s,
            "verify: sent {} delivered {} lost {} duplicated {} reordered {} misaddressed {} corrupt {} errors {} closed {}",
            v.sent, v.delivered, v.lost, v.duplicated, v.reordered, v.misaddressed, v.corrupt, v.errors, v.closed
        );
        if !v.ok() {
            let bad: Vec<String> = v
                .failures()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let _ = writeln!(
                s,
                "!!!!!!!! VERIFICATION FAILED: {} !!!!!!!!",
                bad.join(", ")
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }

    /// Writes `<dir>/<scenario>.{txt,hgrm,json}`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{}.txt", self.scenario)), self.text())?;
        let empty = crate::measure::new_histogram();
        let h = self.hist.as_ref().unwrap_or(&empty);
        std::fs::write(dir.join(format!("{}.hgrm", self.scenario)), hgrm(h))?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{}.json", self.scenario)), json + "\n")?;
        Ok(())
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The percentile distribution of a microsecond histogram in the layout of
/// HdrHistogram's `outputPercentileDistribution` (5 ticks per half
/// distance), values in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / 1000.0;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let sub_buckets = (2.0 * 10f64.powi(i32::from(h.sigfig())))
        .log2()
        .ceil()
        .exp2() as u64;
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> TrustInputs {
        TrustInputs {
            send_lag_p99_ms: Some(0.05),
            client_busiest: Some(("lg-worker-0".into(), 0.5)),
            client_cores: 0.5,
            server_busiest: Some(0.6),
            server_cores: Some(0.6),
            others_cores: Some(0.02),
            cpus: 2,
        }
    }

    #[test]
    fn figures_with_headroom_and_punctual_sends_are_trustworthy() {
        let t = Trust::judge(&inputs());
        assert!(t.trustworthy);
        assert!(!t.client_bound && !t.server_bound && !t.box_bound && !t.send_lag_high);
        assert!(t.verdict.starts_with("trustworthy"), "{}", t.verdict);
    }

    #[test]
    fn a_saturated_loadgen_thread_flags_the_run_client_bound() {
        let mut i = inputs();
        i.client_busiest = Some(("lg-worker-0".into(), 0.93));
        let t = Trust::judge(&i);
        assert!(t.client_bound && !t.trustworthy);
        assert!(t.verdict.contains("lg-worker-0 at 93%"), "{}", t.verdict);
        i.client_busiest = Some(("lg-worker-0".into(), 0.89));
        assert!(!Trust::judge(&i).client_bound, "just below the bound");
    }

    #[test]
    fn a_late_sender_makes_the_latency_loadgens() {
        let mut i = inputs();
        i.send_lag_p99_ms = Some(0.35);
        let t = Trust::judge(&i);
        assert!(t.send_lag_high && !t.trustworthy);
        assert!(t.verdict.contains("send lag p99 0.350 ms"), "{}", t.verdict);
        i.send_lag_p99_ms = None;
        assert!(Trust::judge(&i).trustworthy, "no schedule, no lag to judge");
    }

    #[test]
    fn a_saturated_server_is_the_limit_and_still_trustworthy() {
        let mut i = inputs();
        i.server_busiest = Some(0.97);
        i.server_cores = Some(0.97);
        let t = Trust::judge(&i);
        assert!(t.server_bound && t.trustworthy);
        assert!(t.verdict.contains("server was the limit"), "{}", t.verdict);
    }

    #[test]
    fn other_processes_on_the_box_make_the_figures_untrustworthy() {
        let mut i = inputs();
        i.others_cores = Some(1.2);
        let t = Trust::judge(&i);
        assert!(t.box_busy && !t.trustworthy);
        assert!(
            t.verdict.contains("other processes used 1.20"),
            "{}",
            t.verdict
        );
        i.others_cores = Some(0.2);
        assert!(Trust::judge(&i).trustworthy, "below the bound");
        i.others_cores = None;
        assert!(Trust::judge(&i).trustworthy, "unknown: no verdict on it");
    }

    #[test]
    fn client_and_server_filling_the_cores_is_box_bound() {
        let mut i = inputs();
        i.client_cores = 0.95;
        i.server_cores = Some(0.9);
        assert!(Trust::judge(&i).box_bound, "1.85 of 2 cores");
        i.server_cores = None;
        assert!(!Trust::judge(&i).box_bound, "unknown without the server");
    }

    #[test]
    fn the_json_report_carries_the_send_lag_and_the_verdict() {
        let mut r = Report::new("fanout", "messages", serde_json::json!({}));
        let mut lag = crate::measure::new_histogram();
        for us in [10u64, 20, 30, 400] {
            lag.record(us).unwrap_or_default();
        }
        r.set_send_lag(&lag);
        r.loadgen.threads_busy = vec![ThreadBusy {
            name: "lg-worker-0".into(),
            busy: 0.4,
        }];
        r.judge();
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(j["send_lag_ms"]["count"], 4);
        assert_eq!(j["send_lag_ms"]["max"], 0.4);
        assert_eq!(j["send_lag_ms"]["p50"], 0.02);
        assert_eq!(j["trust"]["send_lag_high"], true, "p99 0.4 ms > 0.2 ms");
        assert_eq!(j["trust"]["trustworthy"], false);
        assert!(
            r.text().contains("!!!!!!!! SEND LAG p99 0.400 ms"),
            "{}",
            r.text()
        );
        let empty = Report::new("fanout-max", "messages", serde_json::json!({}));
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&empty).unwrap_or_default())
                .unwrap_or_default();
        assert!(j["send_lag_ms"].is_null(), "no schedule: null, not zeros");
    }

    #[test]
    fn hgrm_layout() {
        let mut h = crate::measure::new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap_or_default();
        }
        let out = hgrm(&h);
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        assert!(out.contains("Total count    =         1000]"), "{out}");
        assert!(out.contains("SubBuckets     =         2048]"));
        // The 100% line has no 1/(1-p) column.
        let last = out.lines().rfind(|l| !l.starts_with('#')).unwrap_or("");
        assert!(last.contains("1.000000000000"), "{last}");
    }
}
