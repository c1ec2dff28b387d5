//! `fanout`: R rooms, each with connections that publish and connections
//! that receive; every receiver must get each message of every publisher
//! of its room once, in order. With `--max`, each publisher keeps
//! `--window` messages in flight (in flight until every receiver got it),
//! which finds the throughput at which the server saturates; otherwise the
//! publishers follow fixed schedules totalling `--rate` messages per second.
//!
//! The same workload runs against chatd (OP_RTMSG to `room/0/0`), Redis
//! (`PUBLISH room.N`) and NATS (`PUB room.N`) through [`PubSub`]: one
//! connection, I/O and verification path, generic over the protocol.
//!
//! A room has `slots` connections; slots `0..senders` publish. In chatd
//! every slot is a room member and receives (a sender gets the other
//! senders' messages, never its own); in Redis and NATS the senders are
//! publish-only connections and the other slots subscribe.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::Notify;

use super::{
    connect_many, load_window, merged, on_threads, provision_rooms, start_after, Env,
    ScenarioError, Shared, Tally,
};
use crate::cli::{FanoutParams, PubSubTarget};
use crate::client::{ClientError, Reader, Writer};
use crate::measure::{now_ns, sleep_until_ns, Arrival, Stamp, Track, Window, STAMP_LEN};
use crate::pacer::{paced, Schedule};
use crate::report::Report;
use crate::transport::Endpoint;
use crate::wire::{self, Frame, Frames, Open, Pongs, PubSub};

/// One sender's shared state.
#[derive(Default)]
struct Sender {
    /// Next sequence number = messages sent so far.
    seq: Cell<u64>,
    /// --max: receivers still missing each in-flight message, oldest first.
    inflight: RefCell<VecDeque<u32>>,
    /// Sequence number of the front of `inflight`.
    base: Cell<u64>,
    /// Signalled when in-flight messages complete.
    notify: Notify,
}

impl Sender {
    /// One receiver got message `seq`.
    fn ack(&self, seq: u64) {
        let mut q = self.inflight.borrow_mut();
        let Some(i) = seq.checked_sub(self.base.get()) else {
            return;
        };
        if let Some(left) = q.get_mut(i as usize) {
            *left = left.saturating_sub(1);
        }
        let mut popped = false;
        while q.front() == Some(&0) {
            q.pop_front();
            self.base.set(self.base.get() + 1);
            popped = true;
        }
        if popped {
            self.notify.notify_one();
        }
    }
}

/// A receiver's room, slot and per-sender tracks.
type ReceiverState = (Rc<Room>, usize, Rc<RefCell<Vec<Track>>>);

/// One room of this thread.
struct Room {
    index: usize,
    /// chatd chat id; `room.<chat>` in Redis and NATS.
    chat: u64,
    /// chatd user ids by slot (checked where the protocol names the sender).
    users: Vec<u64>,
    senders: Vec<Sender>,
}

/// Fixed parameters every task of a run reads.
#[derive(Clone, Copy)]
struct Plan {
    /// Connections per room.
    slots: usize,
    /// Slots `0..senders` publish.
    senders: usize,
    /// Whether senders receive the other senders' messages (chatd).
    sender_receives: bool,
    size: usize,
    max: bool,
    window: usize,
    /// Nanoseconds between two messages of one sender.
    interval_ns: f64,
    total_senders: usize,
}

impl Plan {
    /// Whether slot `s` receives.
    fn receives(&self, s: usize) -> bool {
        self.sender_receives || s >= self.senders
    }

    /// Receivers of each message.
    fn receivers(&self) -> u32 {
        let others = if self.sender_receives {
            self.slots - 1
        } else {
            self.slots - self.senders
        };
        others as u32
    }
}

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &FanoutParams) -> Result<Report, ScenarioError> {
    if p.members == 0 || p.rooms == 0 || (p.target.chatd_wire() && p.members < 2) {
        return Err(ScenarioError::Params(
            "fanout needs --rooms >= 1 and --members >= 2 (1 with --target redis/nats)".into(),
        ));
    }
    if p.size < STAMP_LEN || p.size > 65536 {
        return Err(ScenarioError::Params(format!(
            "--size must be {STAMP_LEN}..=65536"
        )));
    }
    if !p.max && p.rate <= 0.0 {
        return Err(ScenarioError::Params("--rate must be > 0".into()));
    }
    if p.publishers == Some(0) {
        return Err(ScenarioError::Params("--publishers must be >= 1".into()));
    }
    let share = ((p.members as f64 * p.sender_share).round() as usize).clamp(1, p.members);
    let chatd = p.target.chatd_wire();
    let (slots, senders) = match p.publishers {
        Some(n) => (p.members + n, n),
        None if chatd => (p.members, share),
        None => (p.members + share, share),
    };
    let total_senders = senders * p.rooms;
    let plan = Plan {
        slots,
        senders,
        sender_receives: chatd,
        size: p.size,
        max: p.max,
        window: p.window.max(1),
        interval_ns: total_senders as f64 / p.rate.max(1e-9) * 1e9,
        total_senders,
    };
    let tokens = match p.target {
        PubSubTarget::Chatd => provision_rooms(env, p.rooms, slots)?,
        // The floor has no admin API and checks no token: it takes the
        // token's text as the user id, so senders are still named right.
        PubSubTarget::Floor => (0..(p.rooms * slots) as u64)
            .map(|i| (env.id_base + i, (env.id_base + i).to_string()))
            .collect(),
        PubSubTarget::Redis | PubSubTarget::Nats => HashMap::new(),
    };
    let run = env.run;
    let threads = env.threads();
    let name = match (p.target, p.max) {
        (PubSubTarget::Chatd, false) => "fanout".to_string(),
        (PubSubTarget::Chatd, true) => "fanout-max".to_string(),
        (t, false) => format!("fanout-{}", t.name()),
        (t, true) => format!("fanout-{}-max", t.name()),
    };
    let (outs, shared) = on_threads(&name, threads, run.quiet, |t, shared| {
        let tokens = &tokens;
        async move {
            match p.target {
                PubSubTarget::Chatd | PubSubTarget::Floor => {
                    let ep = env.target.chatd.clone();
                    thread(wire::Chatd, ep, env, p, plan, tokens, t, shared).await
                }
                PubSubTarget::Redis => {
                    let ep = Endpoint::tcp(p.redis);
                    thread(wire::Redis, ep, env, p, plan, tokens, t, shared).await
                }
                PubSubTarget::Nats => {
                    // --transport ws: NATS's own WebSocket listener at --nats.
                    let ep = Endpoint {
                        ws_path: env.target.chatd.ws().then_some("/"),
                        ..Endpoint::tcp(p.nats)
                    };
                    thread(wire::Nats, ep, env, p, plan, tokens, t, shared).await
                }
            }
        }
    })?;
    let all = merged(&outs);
    let mut report = Report::new(
        &name,
        "messages",
        serde_json::json!({
            "target": p.target.name(),
            "rooms": p.rooms, "members": p.members, "senders_per_room": senders,
            "connections_per_room": slots,
            "rate": if p.max { serde_json::Value::Null } else { p.rate.into() },
            "max": p.max, "window": p.window, "size": p.size, "threads": threads,
            "duration": run.duration, "warmup": run.warmup,
        }),
    );
    all.fill_report(&mut report, run.duration, &shared, threads);
    report
        .extra
        .insert("deliveries_per_message".into(), f64::from(plan.receivers()));
    if !p.max && report.sent_per_sec < p.rate * 0.95 {
        report.notes.push(format!(
            "sent {:.0}/s, below the target {:.0}/s",
            report.sent_per_sec, p.rate
        ));
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn thread<P: PubSub>(
    wire: P,
    ep: Endpoint,
    env: &Env<'_>,
    p: &FanoutParams,
    plan: Plan,
    tokens: &HashMap<u64, String>,
    t: usize,
    shared: Arc<Shared>,
) -> Tally {
    let shared = &*shared;
    let run = env.run;
    let threads = env.threads();
    let base = env.id_base;
    let my_rooms = env.owned(p.rooms, t);
    let mut opens = Vec::with_capacity(my_rooms.len() * plan.slots);
    for &r in &my_rooms {
        for s in 0..plan.slots {
            let idx = r * plan.slots + s;
            // A cluster's nodes round-robin (the chatd wire only: the
            // pub/sub baselines have one server).
            let ep = if ep.addr == env.target.chatd.addr {
                env.target.chatd_for(idx)
            } else {
                ep.clone()
            };
            opens.push(Open {
                ep,
                index: idx,
                source_ips: run.source_ips,
                room: base + r as u64,
                subscribe: plan.receives(s),
                token: tokens
                    .get(&(base + idx as u64))
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    let conns = connect_many(run.connect_concurrency, opens, &shared.progress, |o| {
        wire.open(o)
    });
    let Some((conns, start)) = start_after(shared, threads, "fanout connect", conns).await else {
        return Tally::default();
    };
    let w = Window::new(start, run.warmup, run.duration);
    let acc = Rc::new(RefCell::new(Tally::default()));
    let stop = Rc::new(Cell::new(false));
    let mut receivers: Vec<ReceiverState> = Vec::new();
    let mut conns = conns.into_iter();
    for &r in &my_rooms {
        let room = Rc::new(Room {
            index: r,
            chat: base + r as u64,
            users: (0..plan.slots)
                .map(|s| base + (r * plan.slots + s) as u64)
                .collect(),
            senders: (0..plan.senders).map(|_| Sender::default()).collect(),
        });
        for s in 0..plan.slots {
            let Some((reader, writer)) = conns.next() else {
                break;
            };
            let pongs = Rc::new(Pongs::default());
            let tracks = Rc::new(RefCell::new(vec![Track::default(); plan.senders]));
            if plan.receives(s) {
                receivers.push((room.clone(), s, tracks.clone()));
            }
            let conn = Conn {
                wire,
                room: room.clone(),
                slot: s,
                plan,
                w,
                acc: acc.clone(),
                stop: stop.clone(),
                pongs: pongs.clone(),
            };
            tokio::task::spawn_local(receive(reader, conn.clone(), tracks));
            if s < plan.senders {
                tokio::task::spawn_local(send(writer, conn));
            } else {
                tokio::task::spawn_local(wire::idle(wire, writer, pongs));
            }
        }
    }
    let complete = || {
        receivers.iter().all(|(room, s, tracks)| {
            let tr = tracks.borrow();
            room.senders
                .iter()
                .enumerate()
                .all(|(ls, snd)| ls == *s || tr[ls].unique >= snd.seq.get())
        })
    };
    load_window(env, shared, t, w, &acc, &stop, complete).await;
    let mut a = acc.borrow_mut();
    for (room, s, tracks) in &receivers {
        let tr = tracks.borrow();
        for (ls, snd) in room.senders.iter().enumerate() {
            if ls != *s {
                a.v.lost += snd.seq.get().saturating_sub(tr[ls].unique);
            }
        }
    }
    a.take()
}

/// What the tasks of one connection share.
#[derive(Clone)]
struct Conn<P> {
    wire: P,
    room: Rc<Room>,
    slot: usize,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Tally>>,
    stop: Rc<Cell<bool>>,
    pongs: Rc<Pongs>,
}

/// Reads one connection, verifying and timing every delivery (a slot that
/// does not receive must get none), consuming publish replies and noting
/// PINGs.
async fn receive<P: PubSub>(mut reader: Reader, c: Conn<P>, tracks: Rc<RefCell<Vec<Track>>>) {
    let (room, plan, w) = (&*c.room, c.plan, c.w);
    let me_global = (room.index * plan.slots + c.slot) as u32;
    let receives = plan.receives(c.slot);
    let res = reader
        .timed_events(&Frames(c.wire), |f, now| {
            let mut a = c.acc.borrow_mut();
            match f {
                Frame::Delivery {
                    room: chat,
                    sender_user,
                    data,
                } => {
                    a.v.delivered += 1;
                    let Some(st) = Stamp::read(data) else {
                        a.v.corrupt += 1;
                        return ControlFlow::Continue(());
                    };
                    let (sr, sm) = (
                        st.sender as usize / plan.slots,
                        st.sender as usize % plan.slots,
                    );
                    if !receives
                        || chat != Some(room.chat)
                        || sr != room.index
                        || sm >= plan.senders
                        || st.sender == me_global
                    {
                        a.v.misaddressed += 1;
                        return ControlFlow::Continue(());
                    }
                    let wrong_user = sender_user.is_some_and(|u| room.users.get(sm) != Some(&u));
                    if wrong_user || data.len() != plan.size || st.tag != 0 {
                        a.v.corrupt += 1;
                    }
                    let arrival = tracks.borrow_mut()[sm].on(st.seq);
                    Track::count(arrival, &mut a.v);
                    if arrival != Arrival::Duplicate {
                        if w.measured(st.intended_ns) {
                            a.lat.record(now, st.intended_ns, st.sent_ns);
                        }
                        if plan.max {
                            room.senders[sm].ack(st.seq);
                        }
                    }
                }
                Frame::Ping => c.pongs.owe(),
                Frame::Reply(_) | Frame::Ready | Frame::Other => {}
                Frame::Unexpected(_) | Frame::Refused { .. } => {
                    if a.v.errors == 0 {
                        eprintln!(
                            "loadgen: connection {me_global} (room {}): {}",
                            room.chat,
                            f.describe()
                        );
                    }
                    a.v.errors += 1;
                }
            }
            ControlFlow::Continue(())
        })
        .await;
    c.acc.borrow_mut().closed_unless(&res, &c.stop);
}

/// Sends one sender's messages: on the fixed schedule, or window-bounded
/// with --max. Then keeps the connection open (answering PINGs).
async fn send<P: PubSub>(mut wr: Writer, c: Conn<P>) {
    let mut payload = vec![0u8; c.plan.size];
    let res = if c.plan.max {
        send_max(&mut wr, &c, &mut payload).await
    } else {
        let (plan, w) = (c.plan, c.w);
        // This sender's place among all senders staggers the schedules.
        let g = c.room.index * plan.senders + c.slot;
        let sched = Schedule::staggered(w, g, plan.total_senders, plan.interval_ns);
        let cc = c.clone();
        let res;
        (wr, res) = paced(wr, sched, move |_, t, now, out| {
            cc.pongs.pay(cc.wire, out);
            encode(&cc, &mut payload, t, now, out);
            cc.acc.borrow_mut().sent_paced(&w, t, now);
        })
        .await;
        res
    };
    c.acc.borrow_mut().closed_unless(&res, &c.stop);
    wire::idle(c.wire, wr, c.pongs).await;
}

/// --max: keeps `window` messages in flight until the window's end.
async fn send_max<P: PubSub>(
    wr: &mut Writer,
    c: &Conn<P>,
    payload: &mut [u8],
) -> Result<(), ClientError> {
    let (plan, w) = (c.plan, c.w);
    let s = &c.room.senders[c.slot];
    sleep_until_ns(w.start_ns).await;
    loop {
        let now = now_ns();
        if now >= w.end_ns {
            return Ok(());
        }
        c.pongs.pay(c.wire, &mut wr.out);
        let free = plan.window.saturating_sub(s.inflight.borrow().len());
        if free > 0 {
            let mut a = c.acc.borrow_mut();
            for _ in 0..free {
                s.inflight.borrow_mut().push_back(plan.receivers());
                encode(c, payload, now, now, &mut wr.out);
                a.sent(&w, now);
            }
        }
        wr.flush().await?;
        tokio::select! {
            _ = s.notify.notified() => {}
            _ = c.pongs.wait() => {}
            _ = sleep_until_ns(w.end_ns) => return Ok(()),
        }
    }
}

/// Encodes one message of the sender in slot `c.slot` with a fresh stamp.
fn encode<P: PubSub>(c: &Conn<P>, payload: &mut [u8], intended: u64, now: u64, out: &mut Vec<u8>) {
    let s = &c.room.senders[c.slot];
    let seq = s.seq.get();
    s.seq.set(seq + 1);
    Stamp {
        sender: (c.room.index * c.plan.slots + c.slot) as u32,
        tag: 0,
        seq,
        intended_ns: intended,
        sent_ns: now,
    }
    .write(payload);
    c.wire.publish(c.room.chat, payload, out);
}
