//! Reports: a human summary, the HDR percentile distribution in the
//! standard `.hgrm` layout (values in milliseconds) and a JSON summary,
//! written to `<report-dir>/<scenario>.{txt,hgrm,json}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::measure::Verify;

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
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k}: {}", fmt_num(*v));
        }
        let l = &self.loadgen;
        let _ = writeln!(
            s,
            "loadgen cpu: {:.2} cores over {} thread(s) ({:.0}% busy per thread)",
            l.cores_used,
            l.threads,
            l.per_thread_busy * 100.0
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "server pid {}: cpu {:.2} cores, rss {} KiB -> {} KiB",
                sv.pid, sv.cores_used, sv.rss_kib_before, sv.rss_kib_after
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
