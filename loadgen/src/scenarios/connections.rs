//! `connections`: opens N chatd connections (one user each), every one
//! logged in and joined to its room of `--members`, all threads starting at
//! once with at most `--connect-concurrency` attempts in flight per thread;
//! holds them `--hold-secs`, then reports the connect rate, the latency of
//! one connection's setup (connect + AUTH + HELLO + JOIN), failures, and the
//! server's RSS growth per connection when its pid is known.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chatd_proto::chatd as cw;

use super::keepalive;
use super::{on_threads, Env, ScenarioError, Shared};
use crate::cli::ConnectionsParams;
use crate::client::login_chatd;
use crate::measure::{now_ns, sleep_until_ns, Latency, Verify};
use crate::report::Report;

/// Connection failures printed in full; the rest are only counted.
const PRINT_FAILURES: u64 = 5;

#[derive(Default)]
struct Out {
    lat: Latency,
    v: Verify,
    ok: u64,
    failed: u64,
    start_ns: u64,
    last_ns: u64,
}

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &ConnectionsParams) -> Result<Report, ScenarioError> {
    if p.conns == 0 || p.members == 0 {
        return Err(ScenarioError::Params(
            "connections needs --conns and --members above 0".into(),
        ));
    }
    let base = env.id_base;
    let mut admin = env.admin();
    let rooms = p.conns.div_ceil(p.members);
    for r in 0..rooms {
        let users: Vec<u64> = (r * p.members..((r + 1) * p.members).min(p.conns))
            .map(|i| base + i as u64)
            .collect();
        admin.set_room(base + r as u64, &users)?;
    }
    let mut tokens = HashMap::new();
    for i in 0..p.conns {
        tokens.insert(i, admin.token(base + i as u64)?);
    }
    let run = env.run;
    let threads = env.threads();
    let (outs, shared) = on_threads("connections", threads, run.quiet, |t, shared| {
        thread(env, p, &tokens, t, shared)
    })?;
    let mut lat = Latency::default();
    let mut v = Verify::default();
    let (mut ok, mut failed, mut start, mut last) = (0, 0, u64::MAX, 0);
    for o in &outs {
        lat.merge(&o.lat);
        v.merge(&o.v);
        ok += o.ok;
        failed += o.failed;
        start = start.min(o.start_ns);
        last = last.max(o.last_ns);
    }
    let secs = last.saturating_sub(start) as f64 / 1e9;
    let mut report = Report::new(
        "connections",
        "connections",
        serde_json::json!({
            "conns": p.conns, "members": p.members, "hold_secs": p.hold_secs,
            "threads": threads, "source_ips": run.source_ips,
            "connect_concurrency": run.connect_concurrency,
        }),
    );
    // Setup latency per connection: "intended" is the start of its own
    // attempt here (the concurrency limit queues the rest on purpose).
    report.set_measured(secs, ok, lat.sent.clone(), None);
    report.verify = v;
    report.extra.insert("connected".into(), ok as f64);
    report
        .extra
        .insert("connect_failures".into(), failed as f64);
    report.extra.insert(
        "connects_per_sec".into(),
        if secs > 0.0 { ok as f64 / secs } else { 0.0 },
    );
    if let Ok(s) = shared.snaps.lock() {
        if let (Some(a), Some(b)) = (&s[0], &s[2]) {
            if let (Some(r0), Some(r1)) = (a.srv_rss, b.srv_rss) {
                report
                    .extra
                    .insert("server_rss_kib_before".into(), r0 as f64);
                report
                    .extra
                    .insert("server_rss_kib_connected".into(), r1 as f64);
                if ok > 0 {
                    report.extra.insert(
                        "server_bytes_per_connection".into(),
                        (r1.saturating_sub(r0) * 1024) as f64 / ok as f64,
                    );
                }
            }
        }
    }
    shared.fill_resources(&mut report, threads);
    report.notes.push(
        "latency = one connection's connect + AUTH + HELLO + JOIN, from its own attempt".into(),
    );
    Ok(report)
}

async fn thread(
    env: &Env<'_>,
    p: &ConnectionsParams,
    tokens: &HashMap<usize, String>,
    t: usize,
    shared: Arc<Shared>,
) -> Out {
    let shared = &*shared;
    let run = env.run;
    let threads = env.threads();
    let base = env.id_base;
    let start = shared.gate.wait(threads).await;
    sleep_until_ns(start).await;
    if t == 0 {
        shared.snap(0, env.target.pid);
        shared.snap(1, env.target.pid);
    }
    let out = Rc::new(RefCell::new(Out {
        start_ns: start,
        ..Out::default()
    }));
    let stop = Rc::new(Cell::new(false));
    let sem = Rc::new(tokio::sync::Semaphore::new(run.connect_concurrency.max(1)));
    let handles: Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>> = Rc::default();
    let mut logins = Vec::new();
    for i in env.owned(p.conns, t) {
        let token = tokens.get(&i).cloned().unwrap_or_default();
        let room = base + (i / p.members) as u64;
        let (sem, out, stop, handles) = (sem.clone(), out.clone(), stop.clone(), handles.clone());
        let ep = env.target.chatd.clone();
        let sips = run.source_ips;
        logins.push(tokio::task::spawn_local(async move {
            let permit = sem.acquire().await;
            let t0 = now_ns();
            let res = login_chatd(&ep, i, sips, &token, &[room]).await;
            drop(permit);
            let now = now_ns();
            let mut o = out.borrow_mut();
            match res {
                Ok(c) => {
                    o.lat.record(now, t0, t0);
                    o.ok += 1;
                    o.last_ns = o.last_ns.max(now);
                    drop(o);
                    let mut reader = c.reader;
                    let mut hs = handles.borrow_mut();
                    hs.push(tokio::task::spawn_local(keepalive(c.writer)));
                    hs.push(tokio::task::spawn_local(async move {
                        let res = reader
                            .chatd_events(|ev| {
                                if !matches!(ev, cw::Event::Keepalive) {
                                    out.borrow_mut().v.errors += 1;
                                }
                                ControlFlow::Continue(())
                            })
                            .await;
                        if res.is_err() && !stop.get() {
                            out.borrow_mut().v.closed += 1;
                        }
                    }));
                    true
                }
                Err(e) => {
                    o.failed += 1;
                    o.v.closed += 1;
                    if o.failed <= PRINT_FAILURES {
                        eprintln!("loadgen: connection {i} failed: {e}");
                    }
                    false
                }
            }
        }));
    }
    for l in logins {
        if let Ok(true) = l.await {
            shared.progress.conns.fetch_add(1, Ordering::Relaxed);
        }
    }
    shared.end_gate.wait(threads).await;
    // Snapshots: 0 and 1 at the start, 2 once every thread is connected,
    // so CPU covers the connect phase and RSS its growth.
    if t == 0 {
        shared.snap(2, env.target.pid);
    }
    tokio::time::sleep(Duration::from_secs_f64(p.hold_secs.max(0.0))).await;
    stop.set(true);
    for h in handles.borrow().iter() {
        h.abort();
    }
    let mut o = out.borrow_mut();
    Out {
        lat: std::mem::take(&mut o.lat),
        v: o.v,
        ok: o.ok,
        failed: o.failed,
        start_ns: o.start_ns,
        last_ns: o.last_ns,
    }
}
