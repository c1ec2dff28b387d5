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

use chatd_proto::chatd as cw;

use super::{
    hold, keepalive, load_window, login_and_start, merged, on_threads, provision_rooms,
    room_logins, Env, ScenarioError, Shared, Tally,
};
use crate::cli::CallsParams;
use crate::client::{Reader, Writer};
use crate::measure::{now_ns, Rng, Window};
use crate::pacer;
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

#[derive(Clone, Copy)]
struct Plan {
    flip_ns: u64,
    hb_min_ns: u64,
    hb_max_ns: u64,
    /// Heartbeats written back to back per heartbeat event.
    hb_batch: u64,
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
        hb_batch: p.heartbeat_batch,
    };
    let tokens = provision_rooms(env, p.rooms, p.members)?;
    let run = env.run;
    let threads = env.threads();
    let (outs, shared) = on_threads("calls", threads, run.quiet, |t, shared| {
        thread(env, p, plan, &tokens, t, shared)
    })?;
    // Each thread's tally (sent_measured counts heartbeats) and flips.
    let all = merged(outs.iter().map(|o| &o.0));
    let flips: u64 = outs.iter().map(|o| o.1).sum();
    let mut report = Report::new(
        "calls",
        "heartbeats",
        serde_json::json!({
            "rooms": p.rooms, "members": p.members, "flip_ms": p.flip_ms,
            "heartbeat_ms": [p.heartbeat_min_ms, p.heartbeat_max_ms],
            "heartbeat_batch": p.heartbeat_batch,
            "threads": threads, "duration": run.duration, "warmup": run.warmup,
        }),
    );
    report.extra.insert(
        "flips_per_sec".into(),
        flips as f64 / run.duration.max(1e-9),
    );
    report.notes.push(
        "sent = OP_IN_CALL heartbeats; deliveries = flag changes (OP_IN_CALL) at the other members"
            .into(),
    );
    all.fill_report(&mut report, run.duration, &shared, threads);
    Ok(report)
}

async fn thread(
    env: &Env<'_>,
    p: &CallsParams,
    plan: Plan,
    tokens: &HashMap<u64, String>,
    t: usize,
    shared: Arc<Shared>,
) -> (Tally, u64) {
    let shared = &*shared;
    let run = env.run;
    let base = env.id_base;
    let (my_rooms, specs) = room_logins(env, tokens, p.rooms, p.members, t);
    let Some((conns, start)) = login_and_start(env, shared, "calls login", specs).await else {
        return (Tally::default(), 0);
    };
    let w = Window::new(start, run.warmup, run.duration);
    let acc = Rc::new(RefCell::new(Tally::default()));
    let flips = Rc::new(Cell::new(0u64));
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
            if m < 2 {
                // Member 0 stays in the call; member 1 flips it.
                let first_flip = (m == 1).then_some(w.start_ns + FIRST_FLIP_DELAY_NS + phase);
                tokio::task::spawn_local(participant(
                    c.writer,
                    room.clone(),
                    first_flip,
                    plan,
                    w,
                    seed,
                    (acc.clone(), flips.clone()),
                    stop.clone(),
                ));
            } else {
                tokio::task::spawn_local(keepalive(c.writer));
            }
        }
    }
    let complete = || {
        views
            .iter()
            .all(|(room, v)| v.get().received >= room.flips.get())
    };
    load_window(env, shared, t, w, &acc, &stop, complete).await;
    let mut a = acc.borrow_mut();
    for (room, v) in &views {
        a.v.lost += room.flips.get().saturating_sub(v.get().received);
    }
    (a.take(), flips.get())
}

/// Reads one member's connection: every OP_IN_CALL must be a change.
async fn receive(
    mut reader: Reader,
    room: Rc<Room>,
    is_flipper: bool,
    view: Rc<Cell<View>>,
    w: Window,
    acc: Rc<RefCell<Tally>>,
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
    acc.borrow_mut().closed_unless(&res, &stop);
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
    (acc, flips): (Rc<RefCell<Tally>>, Rc<Cell<u64>>),
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
        pacer::sleep_until(next).await;
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
                    // The flips are the timed events: their lag is the send lag.
                    a.lat.record_lag(intended, now);
                    flips.set(flips.get() + 1);
                    if in_call {
                        a.sent_measured += 1;
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
                for _ in 0..plan.hb_batch {
                    cw::encode_in_call(room.chat, true, &mut wr.out);
                }
                a.v.sent += plan.hb_batch;
                if w.measured(now) {
                    a.sent_measured += plan.hb_batch;
                }
                next_hb = now + rng.range(plan.hb_min_ns, plan.hb_max_ns);
            }
        }
        if let Err(e) = wr.flush().await {
            break Err(e);
        }
    };
    acc.borrow_mut().closed_unless(&res, &stop);
    hold(wr).await;
}
