//! `fanout`: R rooms x M members, one user and one connection per member.
//! The first `sender_share x M` members of each room broadcast OP_RTMSG
//! (receiver 0/0) on a fixed schedule whose total is `--rate` messages per
//! second; every other member of the room must receive each message once,
//! in order. With `--max`, each sender instead keeps `--window` messages in
//! flight (in flight until every other member received it), which finds
//! the throughput at which the server saturates.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chatd::protocol::chatd as cw;
use tokio::sync::Notify;

use super::{drain, login_many, on_threads, publish, Env, ScenarioError, Shared};
use crate::cli::FanoutParams;
use crate::client::{Reader, Writer};
use crate::measure::{
    now_ns, sleep_until_ns, Arrival, Latency, Stamp, Track, Verify, Window, STAMP_LEN,
};
use crate::report::Report;

/// Messages encoded into one write at most when a sender catches up.
const MAX_BATCH: usize = 256;
/// Idle connections send OP_KEEPALIVE this often (server idle timeout: 90 s).
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(30);

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

/// A receiver's room, member index and per-sender tracks.
type ReceiverState = (Rc<Room>, usize, Rc<RefCell<Vec<Track>>>);

/// One room of this thread.
struct Room {
    index: usize,
    chat: u64,
    users: Vec<u64>,
    senders: Vec<Sender>,
}

/// A thread's accumulated results.
#[derive(Default)]
struct Acc {
    lat: Latency,
    v: Verify,
    sent_measured: u64,
}

/// What one thread hands back.
#[derive(Default)]
struct Out {
    lat: Latency,
    v: Verify,
    sent_measured: u64,
}

/// Fixed parameters every task of a run reads.
#[derive(Clone, Copy)]
struct Plan {
    members: usize,
    senders: usize,
    size: usize,
    max: bool,
    window: usize,
    /// Nanoseconds between two messages of one sender.
    interval_ns: f64,
    total_senders: usize,
}

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &FanoutParams) -> Result<Report, ScenarioError> {
    if p.members < 2 || p.rooms == 0 {
        return Err(ScenarioError::Params(
            "fanout needs --rooms >= 1 and --members >= 2".into(),
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
    let senders = ((p.members as f64 * p.sender_share).round() as usize).clamp(1, p.members);
    let total_senders = senders * p.rooms;
    let plan = Plan {
        members: p.members,
        senders,
        size: p.size,
        max: p.max,
        window: p.window.max(1),
        interval_ns: total_senders as f64 / p.rate.max(1e-9) * 1e9,
        total_senders,
    };
    let base = env.id_base;
    let mut admin = env.admin();
    let mut tokens = HashMap::new();
    for r in 0..p.rooms {
        let users: Vec<u64> = (0..p.members)
            .map(|m| base + (r * p.members + m) as u64)
            .collect();
        admin.set_room(base + r as u64, &users)?;
    }
    for u in 0..p.rooms * p.members {
        let user = base + u as u64;
        tokens.insert(user, admin.token(user)?);
    }
    let run = env.run;
    let threads = run.threads.max(1);
    let (outs, shared) = on_threads("fanout", threads, run.quiet, |t, shared| {
        thread(env, p, plan, &tokens, t, shared)
    })?;
    let mut lat = Latency::default();
    let mut v = Verify::default();
    let mut sent = 0;
    for o in &outs {
        lat.merge(&o.lat);
        v.merge(&o.v);
        sent += o.sent_measured;
    }
    let name = if p.max { "fanout-max" } else { "fanout" };
    let mut report = Report::new(
        name,
        "messages",
        serde_json::json!({
            "rooms": p.rooms, "members": p.members, "senders_per_room": senders,
            "rate": if p.max { serde_json::Value::Null } else { p.rate.into() },
            "max": p.max, "window": p.window, "size": p.size, "threads": threads,
            "duration": run.duration, "warmup": run.warmup,
        }),
    );
    report.set_measured(run.duration, sent, lat.intended.clone(), Some(&lat.sent));
    report.verify = v;
    shared.fill_resources(&mut report, threads);
    report
        .extra
        .insert("deliveries_per_message".into(), (p.members - 1) as f64);
    if !p.max && report.sent_per_sec < p.rate * 0.95 {
        report.notes.push(format!(
            "sent {:.0}/s, below the target {:.0}/s",
            report.sent_per_sec, p.rate
        ));
    }
    Ok(report)
}

async fn thread(
    env: &Env<'_>,
    p: &FanoutParams,
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
            shared.fail(format!("fanout login: {e}"));
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
    let mut rooms = Vec::new();
    let mut receivers: Vec<ReceiverState> = Vec::new();
    let mut conns = conns.into_iter();
    for &r in &my_rooms {
        let room = Rc::new(Room {
            index: r,
            chat: base + r as u64,
            users: (0..p.members)
                .map(|m| base + (r * p.members + m) as u64)
                .collect(),
            senders: (0..plan.senders).map(|_| Sender::default()).collect(),
        });
        rooms.push(room.clone());
        for m in 0..p.members {
            let Some(c) = conns.next() else { break };
            let tracks = Rc::new(RefCell::new(vec![Track::default(); plan.senders]));
            receivers.push((room.clone(), m, tracks.clone()));
            tokio::task::spawn_local(receive(
                c.reader,
                room.clone(),
                m,
                tracks,
                plan,
                w,
                acc.clone(),
                stop.clone(),
            ));
            if m < plan.senders {
                tokio::task::spawn_local(send(
                    c.writer,
                    room.clone(),
                    m,
                    plan,
                    w,
                    acc.clone(),
                    stop.clone(),
                ));
            } else {
                tokio::task::spawn_local(keepalive(c.writer));
            }
        }
    }
    let complete = || {
        receivers.iter().all(|(room, m, tracks)| {
            let tr = tracks.borrow();
            room.senders
                .iter()
                .enumerate()
                .all(|(ls, s)| ls == *m || tr[ls].unique >= s.seq.get())
        })
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
    for (room, m, tracks) in &receivers {
        let tr = tracks.borrow();
        for (ls, s) in room.senders.iter().enumerate() {
            if ls != *m {
                a.v.lost += s.seq.get().saturating_sub(tr[ls].unique);
            }
        }
    }
    Out {
        lat: std::mem::take(&mut a.lat),
        v: a.v,
        sent_measured: a.sent_measured,
    }
}

/// Reads one member's connection, verifying and timing every message.
#[allow(clippy::too_many_arguments)]
async fn receive(
    mut reader: Reader,
    room: Rc<Room>,
    me: usize,
    tracks: Rc<RefCell<Vec<Track>>>,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let me_global = (room.index * plan.members + me) as u32;
    let res = reader
        .chatd_events(|ev| {
            let mut a = acc.borrow_mut();
            match ev {
                cw::Event::RtMsg {
                    chatid,
                    sender_userid,
                    data,
                    ..
                } => {
                    let now = now_ns();
                    a.v.delivered += 1;
                    let Some(st) = Stamp::read(data) else {
                        a.v.corrupt += 1;
                        return ControlFlow::Continue(());
                    };
                    let (sr, sm) = (
                        st.sender as usize / plan.members,
                        st.sender as usize % plan.members,
                    );
                    if chatid != room.chat
                        || sr != room.index
                        || sm >= plan.senders
                        || st.sender == me_global
                    {
                        a.v.misaddressed += 1;
                        return ControlFlow::Continue(());
                    }
                    if sender_userid != room.users[sm] || data.len() != plan.size || st.tag != 0 {
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

/// Sends one sender's messages: on the fixed schedule, or window-bounded
/// with --max. Keeps the connection open afterwards.
async fn send(
    mut wr: Writer,
    room: Rc<Room>,
    ls: usize,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let mut payload = vec![0u8; plan.size];
    let me = (room.index * plan.members + ls) as u32;
    let s = &room.senders[ls];
    let res = if plan.max {
        send_max(&mut wr, &room, s, me, &mut payload, plan, w, &acc).await
    } else {
        // This sender's place among all senders staggers the schedules.
        let g = room.index * plan.senders + ls;
        let phase = g as f64 / plan.total_senders as f64 * plan.interval_ns;
        let at = |k: u64| w.start_ns + (phase + k as f64 * plan.interval_ns) as u64;
        let mut k = 0u64;
        loop {
            let t0 = at(k);
            if t0 >= w.end_ns {
                break Ok(());
            }
            sleep_until_ns(t0).await;
            let now = now_ns();
            let mut n = 0;
            {
                let mut a = acc.borrow_mut();
                while n < MAX_BATCH {
                    let t = at(k);
                    if t > now || t >= w.end_ns {
                        break;
                    }
                    encode(&mut wr, &room, s, me, &mut payload, t, now);
                    a.v.sent += 1;
                    if w.measured(t) {
                        a.sent_measured += 1;
                    }
                    k += 1;
                    n += 1;
                }
            }
            if let Err(e) = wr.flush().await {
                break Err(e);
            }
        }
    };
    if res.is_err() && !stop.get() {
        acc.borrow_mut().v.closed += 1;
    }
    // Dropping the writer would half-close the connection while the room
    // still drains: hold it until the run ends.
    std::future::pending::<()>().await;
    drop(wr);
}

#[allow(clippy::too_many_arguments)]
async fn send_max(
    wr: &mut Writer,
    room: &Room,
    s: &Sender,
    me: u32,
    payload: &mut [u8],
    plan: Plan,
    w: Window,
    acc: &RefCell<Acc>,
) -> Result<(), crate::client::ClientError> {
    sleep_until_ns(w.start_ns).await;
    let receivers = (plan.members - 1) as u32;
    loop {
        let now = now_ns();
        if now >= w.end_ns {
            return Ok(());
        }
        let free = plan.window.saturating_sub(s.inflight.borrow().len());
        if free > 0 {
            let mut a = acc.borrow_mut();
            for _ in 0..free {
                s.inflight.borrow_mut().push_back(receivers);
                encode(wr, room, s, me, payload, now, now);
                a.v.sent += 1;
                if w.measured(now) {
                    a.sent_measured += 1;
                }
            }
        }
        wr.flush().await?;
        tokio::select! {
            _ = s.notify.notified() => {}
            _ = sleep_until_ns(w.end_ns) => return Ok(()),
        }
    }
}

/// Encodes one broadcast message with a fresh stamp.
fn encode(
    wr: &mut Writer,
    room: &Room,
    s: &Sender,
    me: u32,
    payload: &mut [u8],
    intended: u64,
    now: u64,
) {
    let seq = s.seq.get();
    s.seq.set(seq + 1);
    Stamp {
        sender: me,
        tag: 0,
        seq,
        intended_ns: intended,
        sent_ns: now,
    }
    .write(payload);
    cw::encode_request(
        &cw::Request::RtMsg {
            chatid: room.chat,
            receiver_userid: 0,
            receiver_clientid: 0,
            msgtype: 0,
            data: payload,
        },
        &mut wr.out,
    );
}

/// Keeps a connection that never sends alive past the server's idle timeout.
pub async fn keepalive(mut wr: Writer) {
    loop {
        tokio::time::sleep(KEEPALIVE_EVERY).await;
        cw::encode_request(&cw::Request::Keepalive, &mut wr.out);
        if wr.flush().await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
}
