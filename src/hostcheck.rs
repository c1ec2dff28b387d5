//! `chatd check-host`: reads the host's settings and says which are below
//! what tuning.md recommends for a number of connections, with the command
//! that fixes each.
//!
//! [`evaluate`] is pure (readings and N in, findings out) so the rules are
//! unit-tested; [`read_host`] is the thin part that reads `/proc` and
//! `getrlimit`.

use std::fmt::Write as _;

/// What was read off the host (`None`: could not be read).
#[derive(Clone, Debug, Default)]
pub struct Readings {
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: Option<(u64, u64)>,
    /// fs.nr_open
    pub nr_open: Option<u64>,
    /// fs.file-max
    pub file_max: Option<u64>,
    /// net.core.somaxconn
    pub somaxconn: Option<u64>,
    /// net.ipv4.tcp_max_syn_backlog
    pub tcp_max_syn_backlog: Option<u64>,
    /// net.ipv4.ip_local_port_range (low, high)
    pub port_range: Option<(u64, u64)>,
    /// net.ipv4.tcp_tw_reuse
    pub tcp_tw_reuse: Option<u64>,
    /// net.ipv4.tcp_mem, third value (pages)
    pub tcp_mem_max_pages: Option<u64>,
    /// net.core.netdev_max_backlog
    pub netdev_max_backlog: Option<u64>,
    /// net.netfilter.nf_conntrack_max (absent when conntrack is not loaded)
    pub conntrack_max: Option<u64>,
    /// kernel.io_uring_disabled
    pub io_uring_disabled: Option<u64>,
    /// The selected mode in /sys/kernel/mm/transparent_hugepage/enabled
    pub thp: Option<String>,
    /// net.core.busy_poll (microseconds; optional tuning)
    pub busy_poll: Option<u64>,
    /// net.core.rps_sock_flow_entries (RFS; optional tuning)
    pub rps_sock_flow_entries: Option<u64>,
    /// /sys/devices/system/cpu/isolated (CPU isolation; optional tuning)
    pub isolated_cpus: Option<String>,
    /// CPUs this process may run on (one shard each by default)
    pub cpus_allowed: Option<usize>,
}

/// One setting compared with the recommendation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The setting's name.
    pub name: &'static str,
    /// What the host has, as text.
    pub have: String,
    /// What tuning.md recommends, as text.
    pub want: String,
    /// Below the recommendation (check-host exits non-zero).
    pub short: bool,
    /// Optional tuning, shown for information only (never short).
    pub optional: bool,
    /// Why it matters.
    pub why: &'static str,
    /// The command that fixes it.
    pub fix: String,
}

/// File descriptors chatd needs for `n` connections: one per connection
/// plus listeners, the database, the rings and some slack.
pub fn fds_needed(n: u64) -> u64 {
    n + n / 20 + 1024
}

fn at_least(
    out: &mut Vec<Finding>,
    name: &'static str,
    have: Option<u64>,
    want: u64,
    why: &'static str,
    fix: String,
) {
    let (have_s, short) = match have {
        Some(v) => (v.to_string(), v < want),
        None => ("unreadable".to_string(), true),
    };
    out.push(Finding {
        name,
        have: have_s,
        want: format!(">= {want}"),
        short,
        optional: false,
        why,
        fix,
    });
}

/// Compares `r` with the recommendations for `n` connections.
pub fn evaluate(r: &Readings, n: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let fds = fds_needed(n);
    let sysctl = |k: &str, v: u64| {
        format!("sysctl -w {k}={v} && echo '{k} = {v}' >> /etc/sysctl.d/90-chatd.conf")
    };
    at_least(
        &mut out,
        "nofile (soft)",
        r.nofile.map(|x| x.0),
        fds,
        "one descriptor per connection",
        format!("ulimit -n {fds}   (systemd: LimitNOFILE={fds})"),
    );
    at_least(
        &mut out,
        "nofile (hard)",
        r.nofile.map(|x| x.1),
        fds,
        "the soft limit cannot exceed it",
        format!("echo '* hard nofile {fds}' >> /etc/security/limits.conf   (systemd: LimitNOFILE={fds})"),
    );
    at_least(
        &mut out,
        "fs.nr_open",
        r.nr_open,
        fds,
        "caps nofile",
        sysctl("fs.nr_open", fds),
    );
    let sys_fds = 2 * n + 65_536;
    at_least(
        &mut out,
        "fs.file-max",
        r.file_max,
        sys_fds,
        "system-wide descriptors: the server's plus a same-host load generator's",
        sysctl("fs.file-max", sys_fds),
    );
    at_least(
        &mut out,
        "net.core.somaxconn",
        r.somaxconn,
        4096,
        "caps each listener's accept queue (--listen-backlog); a login storm overflows a short one",
        sysctl("net.core.somaxconn", 4096),
    );
    at_least(
        &mut out,
        "net.ipv4.tcp_max_syn_backlog",
        r.tcp_max_syn_backlog,
        8192,
        "half-open connections during a connect storm",
        sysctl("net.ipv4.tcp_max_syn_backlog", 8192),
    );
    // Shown as sysctl prints it (a range), compared by the ports it holds.
    let ports_wanted = n.clamp(1, 64_000);
    out.push(Finding {
        name: "net.ipv4.ip_local_port_range",
        have: r.port_range.map_or("unreadable".into(), |(lo, hi)| {
            format!("{lo} {hi} ({} ports)", (hi + 1).saturating_sub(lo))
        }),
        want: format!(">= {ports_wanted} ports"),
        short: r
            .port_range
            .is_none_or(|(lo, hi)| (hi + 1).saturating_sub(lo) < ports_wanted),
        optional: false,
        why: "ports per (source address, destination) for clients on this host; past 64k use more source addresses (loadgen --source-ips)",
        fix: "sysctl -w net.ipv4.ip_local_port_range='1024 65535'".to_string(),
    });
    // 2 (the kernel's default) reuses TIME_WAIT ports for loopback
    // connections only: enough for clients on this host (a load
    // generator), while a client host connecting out in storms needs 1
    // (tuning.md). Both are shown as what they are.
    out.push(Finding {
        name: "net.ipv4.tcp_tw_reuse",
        have: match r.tcp_tw_reuse {
            None => "unreadable".into(),
            Some(2) => "2 (loopback only)".into(),
            Some(v) => v.to_string(),
        },
        want: "1, or 2 for clients on this host".into(),
        short: !matches!(r.tcp_tw_reuse, Some(1) | Some(2)),
        optional: false,
        why: "reconnect storms from one client host exhaust ports held in TIME_WAIT",
        fix: sysctl("net.ipv4.tcp_tw_reuse", 1),
    });
    // Two 4 KiB pages per connection under light traffic, more with load.
    let pages = (2 * n).max(575_796);
    at_least(
        &mut out,
        "net.ipv4.tcp_mem (max)",
        r.tcp_mem_max_pages,
        pages,
        "beyond it the kernel drops socket memory and stalls every connection",
        format!(
            "sysctl -w net.ipv4.tcp_mem='{} {} {}'",
            pages / 2,
            pages * 3 / 4,
            pages
        ),
    );
    at_least(
        &mut out,
        "net.core.netdev_max_backlog",
        r.netdev_max_backlog,
        16_384,
        "packets queued per core before the stack processes them (loopback too)",
        sysctl("net.core.netdev_max_backlog", 16_384),
    );
    if r.conntrack_max.is_some() {
        let want = 2 * n + 65_536;
        at_least(
            &mut out,
            "net.netfilter.nf_conntrack_max",
            r.conntrack_max,
            want,
            "connection tracking drops new connections past it",
            sysctl("net.netfilter.nf_conntrack_max", want),
        );
    }
    out.push(Finding {
        name: "kernel.io_uring_disabled",
        have: r
            .io_uring_disabled
            .map_or("absent".into(), |v| v.to_string()),
        want: "0".into(),
        short: matches!(r.io_uring_disabled, Some(v) if v != 0),
        optional: false,
        why: "io_uring blocked: chatd falls back to epoll (more system calls per message)",
        fix: "sysctl -w kernel.io_uring_disabled=0".into(),
    });
    // Optional tunings: reported so the operator sees them, never short
    // (they help only with real NICs or dedicated cores; see tuning.md).
    let info =
        |name: &'static str, have: String, want: &str, why: &'static str, fix: &str| Finding {
            name,
            have,
            want: want.into(),
            short: false,
            optional: true,
            why,
            fix: fix.into(),
        };
    let show = |v: Option<u64>| v.map_or("absent".to_string(), |v| v.to_string());
    out.push(info(
        "net.core.busy_poll",
        show(r.busy_poll),
        "optional: 50 with dedicated cores",
        "spin on the NIC queue instead of sleeping; lower latency for more CPU",
        "sysctl -w net.core.busy_poll=50 net.core.busy_read=50",
    ));
    out.push(info(
        "net.core.rps_sock_flow_entries",
        show(r.rps_sock_flow_entries),
        "optional: 32768 with fewer NIC queues than shards",
        "RFS steers a flow's packets to the core that reads it",
        "sysctl -w net.core.rps_sock_flow_entries=32768",
    ));
    out.push(info(
        "isolated cpus",
        r.isolated_cpus
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into()),
        "optional: the shards' cores",
        "keeps other processes off the cores shards are pinned to",
        "kernel command line isolcpus=<cpus>, or a cpuset; start chatd with taskset -c <cpus>",
    ));
    out.push(info(
        "cpus for shards",
        r.cpus_allowed.map_or("unknown".into(), |n| n.to_string()),
        "one shard per core given to chatd",
        "--shards defaults to the CPUs in the process's affinity mask",
        "taskset -c <cpus> chatd, or --shards N",
    ));
    let thp_ok = matches!(r.thp.as_deref(), Some("madvise") | Some("never") | None);
    out.push(Finding {
        name: "transparent_hugepage",
        have: r.thp.clone().unwrap_or_else(|| "absent".into()),
        want: "madvise or never".into(),
        short: !thp_ok,
        optional: false,
        why: "'always' makes the kernel compact memory on the allocation path: latency spikes",
        fix: "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".into(),
    });
    out
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_fields(path: &str) -> Option<Vec<u64>> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect()
}

/// Raises this process's soft open-file limit to its hard limit, as Go's
/// runtime does: the soft limit is often 1024, below what a server (or a
/// load generator) needs, while the hard limit is the administrator's real
/// ceiling. Returns (old, new) when it raised it.
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    let (old, hard) = nofile_limit()?;
    if old >= hard {
        return None;
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up
    // to the hard one needs no privilege.
    (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0).then_some((old, hard))
}

/// This process's open-file limit, (soft, hard); `RLIM_INFINITY` where
/// unlimited.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
        .then_some((lim.rlim_cur, lim.rlim_max))
}

/// Reads the host's current settings.
pub fn read_host() -> Readings {
    let nofile = nofile_limit();
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| {
            let start = s.find('[')?;
            let end = s[start..].find(']')?;
            Some(s[start + 1..start + end].to_string())
        });
    Readings {
        nofile,
        nr_open: read_u64("/proc/sys/fs/nr_open"),
        file_max: read_u64("/proc/sys/fs/file-max"),
        somaxconn: read_u64("/proc/sys/net/core/somaxconn"),
        tcp_max_syn_backlog: read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        port_range: read_fields("/proc/sys/net/ipv4/ip_local_port_range")
            .and_then(|v| Some((*v.first()?, *v.get(1)?))),
        tcp_tw_reuse: read_u64("/proc/sys/net/ipv4/tcp_tw_reuse"),
        tcp_mem_max_pages: read_fields("/proc/sys/net/ipv4/tcp_mem")
            .and_then(|v| v.get(2).copied()),
        netdev_max_backlog: read_u64("/proc/sys/net/core/netdev_max_backlog"),
        conntrack_max: read_u64("/proc/sys/net/netfilter/nf_conntrack_max"),
        io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled"),
        thp,
        busy_poll: read_u64("/proc/sys/net/core/busy_poll"),
        rps_sock_flow_entries: read_u64("/proc/sys/net/core/rps_sock_flow_entries"),
        isolated_cpus: std::fs::read_to_string("/sys/devices/system/cpu/isolated")
            .ok()
            .map(|s| s.trim().to_string()),
        cpus_allowed: std::thread::available_parallelism().ok().map(|n| n.get()),
    }
}

/// Renders findings as the report `check-host` prints.
pub fn render(findings: &[Finding], n: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "chatd check-host for {n} connections (see tuning.md)");
    for f in findings {
        let tag = match (f.short, f.optional) {
            (true, _) => "SHORT",
            (false, true) => "info ",
            (false, false) => "ok   ",
        };
        let _ = writeln!(
            s,
            "{tag} {:<32} have {:<14} want {}",
            f.name, f.have, f.want
        );
        if f.short {
            let _ = writeln!(s, "      why: {}\n      fix: {}", f.why, f.fix);
        }
    }
    let short = findings.iter().filter(|f| f.short).count();
    let _ = writeln!(s, "{short} setting(s) short");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuned() -> Readings {
        Readings {
            nofile: Some((2_000_000, 2_000_000)),
            nr_open: Some(2_000_000),
            file_max: Some(5_000_000),
            somaxconn: Some(65_535),
            tcp_max_syn_backlog: Some(65_535),
            port_range: Some((1024, 65_535)),
            tcp_tw_reuse: Some(1),
            tcp_mem_max_pages: Some(4_000_000),
            netdev_max_backlog: Some(65_536),
            conntrack_max: None,
            io_uring_disabled: Some(0),
            thp: Some("madvise".into()),
            ..Readings::default()
        }
    }

    #[test]
    fn a_tuned_host_has_nothing_short_for_a_million_connections() {
        let f = evaluate(&tuned(), 1_000_000);
        assert!(f.iter().all(|f| !f.short), "{f:#?}");
    }

    #[test]
    fn each_low_setting_is_reported_with_its_fix() {
        let mut r = tuned();
        r.nofile = Some((20_000, 20_000));
        r.somaxconn = Some(128);
        r.thp = Some("always".into());
        r.conntrack_max = Some(1000);
        let f = evaluate(&r, 1_000_000);
        let short: Vec<&str> = f.iter().filter(|f| f.short).map(|f| f.name).collect();
        assert_eq!(
            short,
            [
                "nofile (soft)",
                "nofile (hard)",
                "net.core.somaxconn",
                "net.netfilter.nf_conntrack_max",
                "transparent_hugepage"
            ]
        );
        let somax = f.iter().find(|f| f.name == "net.core.somaxconn").unwrap();
        assert!(somax.fix.contains("sysctl -w net.core.somaxconn=4096"));
    }

    #[test]
    fn tcp_tw_reuse_says_what_2_covers_and_0_is_short() {
        let mut r = tuned();
        r.tcp_tw_reuse = Some(2);
        let f = evaluate(&r, 1000);
        let line = render(&f, 1000);
        let reuse = line
            .lines()
            .find(|l| l.contains("tcp_tw_reuse"))
            .unwrap()
            .to_string();
        assert!(
            reuse.starts_with("ok ")
                && reuse.contains("have 2 (loopback only)")
                && reuse.contains("want 1, or 2 for clients on this host"),
            "{reuse}"
        );
        r.tcp_tw_reuse = Some(0);
        let f = evaluate(&r, 1000);
        assert!(f
            .iter()
            .any(|f| f.short && f.name == "net.ipv4.tcp_tw_reuse"));
    }

    #[test]
    fn the_port_range_is_shown_as_a_range_with_its_size() {
        let mut r = tuned();
        r.port_range = Some((32_768, 60_999));
        let f = evaluate(&r, 100_000);
        let range = f
            .iter()
            .find(|f| f.name == "net.ipv4.ip_local_port_range")
            .unwrap();
        assert_eq!(range.have, "32768 60999 (28232 ports)");
        assert_eq!(range.want, ">= 64000 ports");
        assert!(range.short);
        assert!(evaluate(&r, 28_232)
            .iter()
            .all(|f| f.name != "net.ipv4.ip_local_port_range" || !f.short));
    }

    #[test]
    fn unreadable_settings_count_as_short() {
        let f = evaluate(&Readings::default(), 10);
        assert!(f.iter().find(|f| f.name == "fs.nr_open").unwrap().short);
    }

    #[test]
    fn the_descriptor_need_grows_with_connections() {
        let mut r = tuned();
        r.nofile = Some((20_000, 20_000));
        assert!(evaluate(&r, 10_000).iter().all(|f| !f.short));
        assert!(evaluate(&r, 100_000)
            .iter()
            .any(|f| f.short && f.name == "nofile (soft)"));
    }
}
