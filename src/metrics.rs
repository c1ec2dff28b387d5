//! Counters, gauges and histograms, one set per shard.
//!
//! Each shard writes only its own [`ShardMetrics`] (relaxed atomics on
//! cache lines no other core writes), so counting costs no contention on the
//! hot path; the admin thread sums all shards when `/metrics` is scraped.
//! The counters of the per-message paths are bumped with [`add`], a load
//! and a store rather than a locked read-modify-write, which only one
//! writer makes correct.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::ids::Service;

/// Adds `n` to a counter that only its own shard writes (every counter of
/// a [`ShardMetrics`]): a relaxed load and store instead of a locked
/// `fetch_add`, which costs ~20 cycles where this costs one, several times
/// per message (issue 13's profiles). The admin thread only loads, so it
/// sees each value whole, at most a moment late.
#[inline]
pub fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Opcodes are below 8 in both services; larger ones count in the last slot.
const OPCODE_SLOTS: usize = 8;
/// Error codes 1..=13 (protocol section 3 and chatd's extensions); index 0 unused.
pub const ERROR_CODE_SLOTS: usize = 16;

/// A histogram with fixed power-of-two bucket bounds: 0, 1, 2, 4, ... 2^20.
pub struct Pow2Histogram {
    buckets: [AtomicU64; Self::BUCKETS],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Pow2Histogram {
    /// Bucket `i` counts values `<= upper_bound(i)`; the last is +Inf.
    pub const BUCKETS: usize = 23;

    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Upper bound of bucket `i` (`None` for +Inf).
    pub fn upper_bound(i: usize) -> Option<u64> {
        match i {
            0 => Some(0),
            i if i < Self::BUCKETS - 1 => Some(1 << (i - 1)),
            _ => None,
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: u64) {
        let i = if v == 0 {
            0
        } else {
            // Smallest i with 2^(i-1) >= v.
            let bits = 64 - (v - 1).leading_zeros() as usize;
            (bits + 1).min(Self::BUCKETS - 1)
        };
        add(&self.buckets[i], 1);
        add(&self.sum, v);
        add(&self.count, 1);
    }
}

/// One shard's metrics. Written by its shard only.
pub struct ShardMetrics {
    /// Open connections, by service.
    pub connections: [AtomicI64; 2],
    /// Completed logins (AUTH + HELLO), by service.
    pub logins: [AtomicU64; 2],
    /// OP_AUTH rejections, by service.
    pub auth_failures: [AtomicU64; 2],
    /// Commands received, by service and opcode.
    pub commands_in: [[AtomicU64; OPCODE_SLOTS]; 2],
    /// Commands sent, by service and opcode.
    pub commands_out: [[AtomicU64; OPCODE_SLOTS]; 2],
    /// Bytes read, by service.
    pub bytes_in: [AtomicU64; 2],
    /// Bytes written, by service.
    pub bytes_out: [AtomicU64; 2],
    /// Socket writes (one vectored write each), by service, counted when
    /// issued: with `commands_out`, how well output is batched.
    pub socket_writes: [AtomicU64; 2],
    /// OP_ERROR sent, by code.
    pub errors: [AtomicU64; ERROR_CODE_SLOTS],
    /// OP_RTMSG accepted from clients (home shard of the room).
    pub rtmsg_received: AtomicU64,
    /// OP_RTMSG queued to recipients.
    pub rtmsg_deliveries: AtomicU64,
    /// OP_RTMSG with no recipient (dropped, as the protocol allows).
    pub rtmsg_dropped: AtomicU64,
    /// Cluster mode: OP_RTMSG handed to the cluster for other nodes.
    pub rtmsg_to_cluster: AtomicU64,
    /// Cluster mode: OP_RTMSG from other nodes' clients.
    pub rtmsg_from_cluster: AtomicU64,
    /// Recipients per OP_RTMSG.
    pub fanout: Pow2Histogram,
    /// Connections closed as slow consumers.
    pub slow_consumer_closes: AtomicU64,
    /// Times a connection stopped reading because the shard its OP_RTMSG
    /// was for had its queue full.
    pub read_pauses: AtomicU64,
    /// OP_IN_CALL heartbeats (status 1) accepted.
    pub call_heartbeats: AtomicU64,
    /// Rooms homed on this shard whose flag is 1 (gauge).
    pub rooms_in_call: AtomicI64,
    /// Changes of a user's combined presence.
    pub presence_changes: AtomicU64,
    /// OP_PRES sent.
    pub pres_sent: AtomicU64,
    /// Watching users per presence change.
    pub watchers_per_change: Pow2Histogram,
    /// OP_PRES in one login dump (before the final own-presence one).
    pub login_dump_size: Pow2Histogram,
    /// Memberships of the rooms homed on this shard (gauge).
    pub relation_members: AtomicU64,
    /// Contacts of the users homed on this shard, one direction each
    /// (gauge; a contact pair counts on both users' homes).
    pub relation_contacts: AtomicU64,
    /// Heap bytes of this shard's relation indexes (gauge).
    pub relation_bytes: AtomicU64,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        fn z<const N: usize>() -> [AtomicU64; N] {
            std::array::from_fn(|_| AtomicU64::new(0))
        }
        Self {
            connections: std::array::from_fn(|_| AtomicI64::new(0)),
            logins: z(),
            auth_failures: z(),
            commands_in: [z(), z()],
            commands_out: [z(), z()],
            bytes_in: z(),
            bytes_out: z(),
            socket_writes: z(),
            errors: z(),
            rtmsg_received: AtomicU64::new(0),
            rtmsg_deliveries: AtomicU64::new(0),
            rtmsg_dropped: AtomicU64::new(0),
            rtmsg_to_cluster: AtomicU64::new(0),
            rtmsg_from_cluster: AtomicU64::new(0),
            fanout: Pow2Histogram::new(),
            slow_consumer_closes: AtomicU64::new(0),
            read_pauses: AtomicU64::new(0),
            call_heartbeats: AtomicU64::new(0),
            rooms_in_call: AtomicI64::new(0),
            presence_changes: AtomicU64::new(0),
            pres_sent: AtomicU64::new(0),
            watchers_per_change: Pow2Histogram::new(),
            login_dump_size: Pow2Histogram::new(),
            relation_members: AtomicU64::new(0),
            relation_contacts: AtomicU64::new(0),
            relation_bytes: AtomicU64::new(0),
        }
    }
}

impl ShardMetrics {
    /// Counts one command received.
    pub fn command_in(&self, service: Service, opcode: u8) {
        let slot = (opcode as usize).min(OPCODE_SLOTS - 1);
        add(&self.commands_in[service.index()][slot], 1);
    }

    /// Counts `n` commands of one opcode sent.
    pub fn command_out(&self, service: Service, opcode: u8, n: u64) {
        let slot = (opcode as usize).min(OPCODE_SLOTS - 1);
        add(&self.commands_out[service.index()][slot], n);
    }

    /// Counts one OP_ERROR sent.
    pub fn error(&self, code: u8) {
        let slot = (code as usize).min(ERROR_CODE_SLOTS - 1);
        self.errors[slot].fetch_add(1, Relaxed);
    }
}

fn sum_u(shards: &[&ShardMetrics], f: impl Fn(&ShardMetrics) -> &AtomicU64) -> u64 {
    shards.iter().map(|m| f(m).load(Relaxed)).sum()
}

fn sum_i(shards: &[&ShardMetrics], f: impl Fn(&ShardMetrics) -> &AtomicI64) -> i64 {
    shards.iter().map(|m| f(m).load(Relaxed)).sum()
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    shards: &[&ShardMetrics],
    f: impl Fn(&ShardMetrics) -> &Pow2Histogram,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for i in 0..Pow2Histogram::BUCKETS {
        cumulative += shards
            .iter()
            .map(|m| f(m).buckets[i].load(Relaxed))
            .sum::<u64>();
        match Pow2Histogram::upper_bound(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum: u64 = shards.iter().map(|m| f(m).sum.load(Relaxed)).sum();
    let count: u64 = shards.iter().map(|m| f(m).count.load(Relaxed)).sum();
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
}

/// What the queues between shards hold ([`crate::shard::mesh`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct MeshFigures {
    /// Bytes queued in all shards' inboxes now.
    pub queued_bytes: u64,
    /// The most one shard's inbox has held.
    pub queued_bytes_peak: u64,
}

/// Renders every shard's metrics, summed, and the queues between them, in
/// the Prometheus text format.
pub fn render_prometheus(shards: &[&ShardMetrics], mesh: MeshFigures) -> String {
    let mut out = String::with_capacity(8192);
    let per_service = |out: &mut String,
                       name: &str,
                       help: &str,
                       kind: &str,
                       f: &dyn Fn(&ShardMetrics, usize) -> i64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in Service::ALL {
            let v: i64 = shards.iter().map(|m| f(m, s.index())).sum();
            let _ = writeln!(out, "{name}{{service=\"{}\"}} {v}", s.name());
        }
    };
    per_service(
        &mut out,
        "chatd_connections",
        "Open connections.",
        "gauge",
        &|m, i| m.connections[i].load(Relaxed),
    );
    per_service(
        &mut out,
        "chatd_logins_total",
        "Completed logins.",
        "counter",
        &|m, i| m.logins[i].load(Relaxed) as i64,
    );
    per_service(
        &mut out,
        "chatd_auth_failures_total",
        "Rejected OP_AUTH.",
        "counter",
        &|m, i| m.auth_failures[i].load(Relaxed) as i64,
    );
    per_service(
        &mut out,
        "chatd_bytes_in_total",
        "Bytes read from clients.",
        "counter",
        &|m, i| m.bytes_in[i].load(Relaxed) as i64,
    );
    per_service(
        &mut out,
        "chatd_bytes_out_total",
        "Bytes written to clients.",
        "counter",
        &|m, i| m.bytes_out[i].load(Relaxed) as i64,
    );
    per_service(
        &mut out,
        "chatd_socket_writes_total",
        "Vectored socket writes to clients (commands out / writes = batching).",
        "counter",
        &|m, i| m.socket_writes[i].load(Relaxed) as i64,
    );
    for (name, help, pick) in [
        (
            "chatd_commands_in_total",
            "Commands received, by opcode.",
            true,
        ),
        (
            "chatd_commands_out_total",
            "Commands sent, by opcode.",
            false,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in Service::ALL {
            for op in 0..OPCODE_SLOTS {
                let v: u64 = shards
                    .iter()
                    .map(|m| {
                        let arr = if pick {
                            &m.commands_in
                        } else {
                            &m.commands_out
                        };
                        arr[s.index()][op].load(Relaxed)
                    })
                    .sum();
                let _ = writeln!(
                    out,
                    "{name}{{service=\"{}\",opcode=\"{op}\"}} {v}",
                    s.name()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP chatd_errors_total OP_ERROR sent, by code.\n# TYPE chatd_errors_total counter"
    );
    for code in chatd_proto::ErrorCode::ALL.map(|c| c as usize) {
        let v: u64 = shards.iter().map(|m| m.errors[code].load(Relaxed)).sum();
        let _ = writeln!(out, "chatd_errors_total{{code=\"{code}\"}} {v}");
    }
    counter(
        &mut out,
        "chatd_rtmsg_received_total",
        "OP_RTMSG accepted.",
        sum_u(shards, |m| &m.rtmsg_received),
    );
    counter(
        &mut out,
        "chatd_rtmsg_deliveries_total",
        "OP_RTMSG queued to recipients.",
        sum_u(shards, |m| &m.rtmsg_deliveries),
    );
    counter(
        &mut out,
        "chatd_rtmsg_dropped_total",
        "OP_RTMSG with no recipient.",
        sum_u(shards, |m| &m.rtmsg_dropped),
    );
    counter(
        &mut out,
        "chatd_cluster_rtmsg_out_total",
        "OP_RTMSG sent on to other nodes (cluster mode; once per message, however many nodes).",
        sum_u(shards, |m| &m.rtmsg_to_cluster),
    );
    counter(
        &mut out,
        "chatd_cluster_rtmsg_in_total",
        "OP_RTMSG from other nodes' clients (cluster mode).",
        sum_u(shards, |m| &m.rtmsg_from_cluster),
    );
    histogram(
        &mut out,
        "chatd_rtmsg_fanout",
        "Recipients per OP_RTMSG.",
        shards,
        |m| &m.fanout,
    );
    counter(
        &mut out,
        "chatd_slow_consumer_closes_total",
        "Connections closed as slow consumers.",
        sum_u(shards, |m| &m.slow_consumer_closes),
    );
    counter(
        &mut out,
        "chatd_read_pauses_total",
        "Times a connection stopped reading because the shard its OP_RTMSG was for had a full queue.",
        sum_u(shards, |m| &m.read_pauses),
    );
    gauge(
        &mut out,
        "chatd_shard_queue_bytes",
        "Bytes of messages waiting in the queues between shards.",
        mesh.queued_bytes as i64,
    );
    gauge(
        &mut out,
        "chatd_shard_queue_bytes_peak",
        "The most bytes one shard's queue has held since start.",
        mesh.queued_bytes_peak as i64,
    );
    counter(
        &mut out,
        "chatd_call_heartbeats_total",
        "OP_IN_CALL heartbeats accepted.",
        sum_u(shards, |m| &m.call_heartbeats),
    );
    gauge(
        &mut out,
        "chatd_rooms_in_call",
        "Rooms whose in-call flag is 1.",
        sum_i(shards, |m| &m.rooms_in_call),
    );
    counter(
        &mut out,
        "statusd_presence_changes_total",
        "Changes of a user's presence.",
        sum_u(shards, |m| &m.presence_changes),
    );
    counter(
        &mut out,
        "statusd_pres_sent_total",
        "OP_PRES sent.",
        sum_u(shards, |m| &m.pres_sent),
    );
    histogram(
        &mut out,
        "statusd_watchers_per_change",
        "Watching users per presence change.",
        shards,
        |m| &m.watchers_per_change,
    );
    histogram(
        &mut out,
        "statusd_login_dump_size",
        "OP_PRES in one login dump.",
        shards,
        |m| &m.login_dump_size,
    );
    gauge(
        &mut out,
        "chatd_relation_members",
        "Room memberships held (each on its room's home shard).",
        sum_u(shards, |m| &m.relation_members) as i64,
    );
    gauge(
        &mut out,
        "chatd_relation_contact_directions",
        "Contacts held, one direction each (two per contact pair).",
        sum_u(shards, |m| &m.relation_contacts) as i64,
    );
    gauge(
        &mut out,
        "chatd_relation_index_bytes",
        "Heap bytes of the relation indexes, all shards.",
        sum_u(shards, |m| &m.relation_bytes) as i64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow2_histogram_puts_values_in_the_smallest_bucket_that_holds_them() {
        let h = Pow2Histogram::new();
        for v in [0, 1, 2, 3, 4, 5, 1 << 30] {
            h.observe(v);
        }
        let got: Vec<u64> = h.buckets.iter().map(|b| b.load(Relaxed)).collect();
        // Buckets: le 0, 1, 2, 4, 8, ..., +Inf.
        assert_eq!(&got[..5], &[1, 1, 1, 2, 1]);
        assert_eq!(got[Pow2Histogram::BUCKETS - 1], 1);
        assert_eq!(h.count.load(Relaxed), 7);
    }

    #[test]
    fn render_sums_every_shard() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        a.logins[0].fetch_add(2, Relaxed);
        b.logins[0].fetch_add(3, Relaxed);
        b.command_in(Service::Statusd, 2);
        let text = render_prometheus(&[&a, &b], MeshFigures::default());
        assert!(text.contains("chatd_logins_total{service=\"chatd\"} 5"));
        assert!(text.contains("chatd_commands_in_total{service=\"statusd\",opcode=\"2\"} 1"));
    }
}
