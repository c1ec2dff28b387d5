//! `calls`: R rooms x M members. Member 0 is in the call for the whole run,
//! heartbeating (OP_IN_CALL 1) every 2-5 s with jitter. Member 1 enters and
//! leaves the call every `--flip-ms` (its first heartbeat makes two users
//! and flips the room's flag to 1; its status 0 flips it back), heartbeating
//! while in. Everyone else only watches. Each flip must reach every joined
//! connection exactly once; the latency is measured from the flip command's
//! intended send time to OP_IN_CALL at the other members.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chatd::protocol::chatd as cw;

use super::fanout::keepalive;
use super::{drain, login_many, on_threads, publish, Env, ScenarioError, Shared};
use crate::cli::CallsParams;
use crate::client::{Reader, Writer};
use crate::measure::{now_ns, sleep_until_ns, Latency, Rng, Verify, Window};
use crate::report::Report;

/// First flips come this long after the start, after member 0's first
/// heartbeat has surely been handled.
const FIRST_FLIP_DELAY_NS: u64 = 200_000_000;

/// One room's flip state.
struct Room {
    chat: u64,
    /// Flips sent so far.
    flips: Cell<u64>,
    /// The flag the last flip set.
    expected: Cell<bool>,
    /// Intended and actual send time of the last flip.
    flip_at: Cell<(u64, u64)>,
}

/// One watching connection's view.
#[derive(Default, Clone, Copy)]
struct View {
    received: u64,
    last: bool,
}

#[derive(Default)]
struct Acc {
    lat: Latency,
    v: Verify,
    heartbeats_measured: u64,
    flips_measured: u64,
}

#[derive(Default)]
struct Out {
    lat: Latency,
    v: Verify,
    heartbeats_measured: u64,
    flips_measured: u64,
}

#[derive(Clone, Copy)]
struct Plan {
    flip_ns: u64,
    hb_min_ns: u64,
    hb_max_ns: u64,
}

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &CallsParams) -> Result<Report, ScenarioError> {
    if p.members < 2 || p.rooms == 0 || p.flip_ms == 0 {
        return Err(ScenarioError::Params(
            "calls needs --rooms >= 1, --members >= 2 and --flip-ms > 0".into(),
        ));
    }
    let plan = Plan {
        flip_ns: p.flip_ms * 1_000_000,
        hb_min_ns: p.heartbeat_min_ms * 1_000_000,
        hb_max_ns: p.heartbeat_max_ms.max(p.heartbeat_min_ms) * 1_000_000,
    };
    let base = env.id_base;
    let mut admin = env.admin();
    let mut tokens = HashMap::new();
    for r in 0..p.rooms {
        let users: Vec<u64> = (0..p.members)
            .map(|m| base + (r * p.members + m) as u64)
            .collect();
        admin.set_room(base + r as u64, &users)?;
        for u in users {
            tokens.insert(u, admin.token(u)?);
        }
    }
    let run = env.run;
    let threads = run.threads.max(1);
    let (outs, shared) = on_threads("calls", threads, run.quiet, |t, shared| {
        thread(env, p, plan, &tokens, t, shared)
    })?;
    let mut lat = Latency::default();
    let mut v = Verify::default();
    let (mut hb, mut flips) = (0, 0);
    for o in &outs {
        lat.merge(&o.lat);
        v.merge(&o.v);
        hb += o.heartbeats_measured;
        flips += o.flips_measured;
    }
    let mut report = Report::new(
        "calls",
        "heartbeats",
        serde_json::json!({
            "rooms": p.rooms, "members": p.members, "flip_ms": p.flip_ms,
            "heartbeat_ms": [p.heartbeat_min_ms, p.heartbeat_max_ms],
            "threads": threads, "duration": run.duration, "warmup": run.warmup,
        }),
    );
    report.set_measured(run.duration, hb, lat.intended.clone(), Some(&lat.sent));
    report.verify = v;
    report.extra.insert(
        "flips_per_sec".into(),
        flips as f64 / run.duration.max(1e-9),
    );
    report.notes.push(
        "sent = OP_IN_CALL heartbeats; deliveries = flag changes (OP_IN_CALL) at the other members"
            .into(),
    );
    shared.fill_resources(&mut report, threads);
    Ok(report)
}

async fn thread(
    env: &Env<'_>,
    p: &CallsParams,
    plan: Plan,
    tokens: &HashMap<u64, String>,
    t: usize,
    shared: Arc<Shared>,
) -> Out {
    let shared = &*shared;
    let run = env.run;
    let threads = run.threads.max(1);
    let base = env.id_base;
    let my_rooms: Vec<usize> = (0..p.rooms).filter(|r| r % threads == t).collect();
    let mut specs = Vec::new();
    for &r in &my_rooms {
        for m in 0..p.members {
            let idx = r * p.members + m;
            let token = tokens
                .get(&(base + idx as u64))
                .cloned()
                .unwrap_or_default();
            specs.push((idx, token, vec![base + r as u64]));
        }
    }
    let conns = match login_many(
        env.target.chatd,
        run.source_ips,
        run.connect_concurrency,
        specs,
        &shared.progress,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            shared.fail(format!("calls login: {e}"));
            Vec::new()
        }
    };
    let start = shared.gate.wait(threads).await;
    if shared.has_failed() {
        return Out::default();
    }
    let w = Window::new(start, run.warmup, run.duration);
    let acc = Rc::new(RefCell::new(Acc::default()));
    let stop = Rc::new(Cell::new(false));
    let mut rng = Rng::new(run.seed ^ ((t as u64) << 32));
    let mut views = Vec::new();
    let mut conns = conns.into_iter();
    for &r in &my_rooms {
        let room = Rc::new(Room {
            chat: base + r as u64,
            flips: Cell::new(0),
            expected: Cell::new(false),
            flip_at: Cell::new((0, 0)),
        });
        let phase = rng.range(0, plan.flip_ns);
        for m in 0..p.members {
            let Some(c) = conns.next() else { break };
            let view = Rc::new(Cell::new(View::default()));
            views.push((room.clone(), view.clone()));
            tokio::task::spawn_local(receive(
                c.reader,
                room.clone(),
                m == 1,
                view,
                w,
                acc.clone(),
                stop.clone(),
            ));
            let seed = rng.next_u64();
            match m {
                0 => {
                    tokio::task::spawn_local(participant(
                        c.writer,
                        room.clone(),
                        None,
                        plan,
                        w,
                        seed,
                        acc.clone(),
                        stop.clone(),
                    ));
                }
                1 => {
                    tokio::task::spawn_local(participant(
                        c.writer,
                        room.clone(),
                        Some(w.start_ns + FIRST_FLIP_DELAY_NS + phase),
                        plan,
                        w,
                        seed,
                        acc.clone(),
                        stop.clone(),
                    ));
                }
                _ => {
                    tokio::task::spawn_local(keepalive(c.writer));
                }
            }
        }
    }
    let complete = || {
        views
            .iter()
            .all(|(room, v)| v.get().received >= room.flips.get())
    };
    let main = async {
        let mut last = (0, 0, 0);
        while now_ns() < w.end_ns {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let a = acc.borrow();
            let fails = a.v.failures().iter().map(|x| x.1).sum();
            publish(
                &shared.progress,
                (a.v.sent, a.v.delivered, fails),
                &mut last,
            );
        }
        drain(w.end_ns + run.drain_ms * 1_000_000, complete).await;
    };
    let snaps = async {
        if t == 0 {
            shared.snap_window(w, env.target.pid).await;
        }
    };
    tokio::join!(main, snaps);
    stop.set(true);
    let mut a = acc.borrow_mut();
    for (room, v) in &views {
        a.v.lost += room.flips.get().saturating_sub(v.get().received);
    }
    Out {
        lat: std::mem::take(&mut a.lat),
        v: a.v,
        heartbeats_measured: a.heartbeats_measured,
        flips_measured: a.flips_measured,
    }
}

/// Reads one member's connection: every OP_IN_CALL must be a change.
async fn receive(
    mut reader: Reader,
    room: Rc<Room>,
    is_flipper: bool,
    view: Rc<Cell<View>>,
    w: Window,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let res = reader
        .chatd_events(|ev| {
            let mut a = acc.borrow_mut();
            match ev {
                cw::Event::InCall { chatid, in_call } => {
                    let now = now_ns();
                    a.v.delivered += 1;
                    if chatid != room.chat {
                        a.v.misaddressed += 1;
                        return ControlFlow::Continue(());
                    }
                    let mut v = view.get();
                    if in_call == v.last {
                        // The flag did not change: a redundant OP_IN_CALL.
                        a.v.duplicated += 1;
                        return ControlFlow::Continue(());
                    }
                    v.last = in_call;
                    v.received += 1;
                    view.set(v);
                    let (intended, sent) = room.flip_at.get();
                    if !is_flipper && in_call == room.expected.get() && w.measured(intended) {
                        a.lat.record(now, intended, sent);
                    }
                }
                cw::Event::Keepalive => {}
                _ => a.v.errors += 1,
            }
            ControlFlow::Continue(())
        })
        .await;
    if res.is_err() && !stop.get() {
        acc.borrow_mut().v.closed += 1;
    }
}

/// A call participant: heartbeats with jitter while in the call; with
/// `first_flip`, also enters and leaves the call on the flip schedule
/// (until the load ends), else stays in from the start.
#[allow(clippy::too_many_arguments)]
async fn participant(
    mut wr: Writer,
    room: Rc<Room>,
    first_flip: Option<u64>,
    plan: Plan,
    w: Window,
    seed: u64,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let mut rng = Rng::new(seed);
    let flipper = first_flip.is_some();
    let mut in_call = !flipper;
    let mut next_flip = first_flip.unwrap_or(u64::MAX);
    let mut next_hb = if flipper { u64::MAX } else { w.start_ns };
    let res = loop {
        let next = next_flip.min(next_hb);
        if next == u64::MAX {
            break Ok(());
        }
        sleep_until_ns(next).await;
        let now = now_ns();
        {
            let mut a = acc.borrow_mut();
            if next_flip <= now && next_flip < w.end_ns {
                let intended = next_flip;
                in_call = !in_call;
                cw::encode_in_call(room.chat, in_call, &mut wr.out);
                room.flips.set(room.flips.get() + 1);
                room.expected.set(in_call);
                room.flip_at.set((intended, now));
                a.v.sent += 1;
                if w.measured(intended) {
                    a.flips_measured += 1;
                    if in_call {
                        a.heartbeats_measured += 1;
                    }
                }
                next_flip += plan.flip_ns;
                // Entering is the first heartbeat: the next one follows with jitter.
                next_hb = if in_call {
                    now + rng.range(plan.hb_min_ns, plan.hb_max_ns)
                } else {
                    u64::MAX
                };
            } else if next_flip <= now {
                next_flip = u64::MAX;
            }
            if next_hb <= now {
                cw::encode_in_call(room.chat, true, &mut wr.out);
                a.v.sent += 1;
                if w.measured(now) {
                    a.heartbeats_measured += 1;
                }
                next_hb = now + rng.range(plan.hb_min_ns, plan.hb_max_ns);
            }
        }
        if let Err(e) = wr.flush().await {
            break Err(e);
        }
    };
    if res.is_err() && !stop.get() {
        acc.borrow_mut().v.closed += 1;
    }
    std::future::pending::<()>().await;
    drop(wr);
}
