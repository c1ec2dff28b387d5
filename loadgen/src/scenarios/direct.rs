//! `direct`: pairs of users (A, B) sharing a room, each with `--devices`
//! connections. Every device sends on a fixed schedule (total `--rate`),
//! alternating two streams with their own sequence numbers:
//! - stream 0, user-addressed (receiver = the other user, clientid 0):
//!   every device of the other user must receive it, no device of the
//!   sender's own user may;
//! - stream 1, client-addressed (receiver = the other user's device with the
//!   same index, by its client id): exactly that device must receive it.
//!
//! The stamp's tag names the stream and the intended receiver, so a
//! delivery anywhere else counts as misaddressed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use chatd::protocol::chatd as cw;

use super::{drain, login_many, on_threads, publish, Env, ScenarioError, Shared};
use crate::cli::DirectParams;
use crate::client::{Reader, Writer};
use crate::measure::{
    now_ns, sleep_until_ns, Arrival, Latency, Stamp, Track, Verify, Window, STAMP_LEN,
};
use crate::report::Report;

/// Tag bit of stream 1 (client-addressed); the low bits name the target.
const CLIENT_STREAM: u32 = 1 << 31;
/// Messages encoded into one write at most when a sender catches up.
const MAX_BATCH: usize = 256;

/// One pair of users and their devices.
struct Pair {
    index: usize,
    chat: u64,
    /// User ids of side 0 and side 1.
    users: [u64; 2],
    /// Client ids by local device index (side * devices + device).
    client_ids: Vec<u32>,
    /// Sequence counters (messages sent) by local device, per stream.
    seq: Vec<[Cell<u64>; 2]>,
}

#[derive(Default)]
struct Acc {
    lat: Latency,
    v: Verify,
    sent_measured: u64,
}

#[derive(Default)]
struct Out {
    lat: Latency,
    v: Verify,
    sent_measured: u64,
}

#[derive(Clone, Copy)]
struct Plan {
    devices: usize,
    size: usize,
    interval_ns: f64,
    total: usize,
}

impl Plan {
    /// Global index of device `d` of side `side` of pair `q`.
    fn conn(&self, q: usize, side: usize, d: usize) -> usize {
        (q * 2 + side) * self.devices + d
    }
}

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &DirectParams) -> Result<Report, ScenarioError> {
    if p.pairs == 0 || p.devices == 0 || p.rate <= 0.0 {
        return Err(ScenarioError::Params(
            "direct needs --pairs, --devices and --rate above 0".into(),
        ));
    }
    if p.size < STAMP_LEN || p.size > 65536 {
        return Err(ScenarioError::Params(format!(
            "--size must be {STAMP_LEN}..=65536"
        )));
    }
    let total = p.pairs * 2 * p.devices;
    let plan = Plan {
        devices: p.devices,
        size: p.size,
        interval_ns: total as f64 / p.rate * 1e9,
        total,
    };
    let base = env.id_base;
    let mut admin = env.admin();
    let mut tokens = HashMap::new();
    for q in 0..p.pairs {
        let users = [base + 2 * q as u64, base + 2 * q as u64 + 1];
        admin.set_room(base + q as u64, &users)?;
        for u in users {
            tokens.insert(u, admin.token(u)?);
        }
    }
    let run = env.run;
    let threads = run.threads.max(1);
    let (outs, shared) = on_threads("direct", threads, run.quiet, |t, shared| {
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
    let mut report = Report::new(
        "direct",
        "messages",
        serde_json::json!({
            "pairs": p.pairs, "devices": p.devices, "rate": p.rate, "size": p.size,
            "threads": threads, "duration": run.duration, "warmup": run.warmup,
        }),
    );
    report.set_measured(run.duration, sent, lat.intended.clone(), Some(&lat.sent));
    report.verify = v;
    report.extra.insert(
        "deliveries_per_message_avg".into(),
        (p.devices as f64 + 1.0) / 2.0,
    );
    shared.fill_resources(&mut report, threads);
    Ok(report)
}

async fn thread(
    env: &Env<'_>,
    p: &DirectParams,
    plan: Plan,
    tokens: &HashMap<u64, String>,
    t: usize,
    shared: Arc<Shared>,
) -> Out {
    let shared = &*shared;
    let run = env.run;
    let threads = run.threads.max(1);
    let base = env.id_base;
    let my_pairs: Vec<usize> = (0..p.pairs).filter(|q| q % threads == t).collect();
    let mut specs = Vec::new();
    for &q in &my_pairs {
        for side in 0..2 {
            let user = base + (2 * q + side) as u64;
            for d in 0..p.devices {
                let token = tokens.get(&user).cloned().unwrap_or_default();
                specs.push((plan.conn(q, side, d), token, vec![base + q as u64]));
            }
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
            shared.fail(format!("direct login: {e}"));
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
    let per_pair = 2 * p.devices;
    let mut receivers = Vec::new();
    let mut conns = conns.into_iter();
    for &q in &my_pairs {
        let mine: Vec<_> = conns.by_ref().take(per_pair).collect();
        let pair = Rc::new(Pair {
            index: q,
            chat: base + q as u64,
            users: [base + 2 * q as u64, base + 2 * q as u64 + 1],
            client_ids: mine.iter().map(|c| c.client_id).collect(),
            seq: (0..per_pair).map(|_| Default::default()).collect(),
        });
        for (local, c) in mine.into_iter().enumerate() {
            let tracks = Rc::new(RefCell::new(vec![[Track::default(); 2]; p.devices]));
            receivers.push((pair.clone(), local, tracks.clone()));
            tokio::task::spawn_local(receive(
                c.reader,
                pair.clone(),
                local,
                tracks,
                plan,
                w,
                acc.clone(),
                stop.clone(),
            ));
            tokio::task::spawn_local(send(
                c.writer,
                pair.clone(),
                local,
                plan,
                w,
                acc.clone(),
                stop.clone(),
            ));
        }
    }
    let devices = p.devices;
    // Deliveries a receiver still misses: stream 0 from every device of
    // the other user, stream 1 from the device with its own index.
    let missing = |pair: &Pair, local: usize, tr: &[[Track; 2]]| -> u64 {
        let (side, d) = (local / devices, local % devices);
        let other = 1 - side;
        let mut lost = 0;
        for (i, tracks) in tr.iter().enumerate() {
            let s = &pair.seq[other * devices + i];
            lost += s[0].get().saturating_sub(tracks[0].unique);
            if i == d {
                lost += s[1].get().saturating_sub(tracks[1].unique);
            }
        }
        lost
    };
    let complete = || {
        receivers
            .iter()
            .all(|(pair, local, tr)| missing(pair, *local, &tr.borrow()) == 0)
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
    for (pair, local, tr) in &receivers {
        a.v.lost += missing(pair, *local, &tr.borrow());
    }
    Out {
        lat: std::mem::take(&mut a.lat),
        v: a.v,
        sent_measured: a.sent_measured,
    }
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut reader: Reader,
    pair: Rc<Pair>,
    local: usize,
    tracks: Rc<RefCell<Vec<[Track; 2]>>>,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let devices = plan.devices;
    let side = local / devices;
    let me = plan.conn(pair.index, side, local % devices) as u32;
    let my_user_ordinal = (pair.index * 2 + side) as u32;
    let res = reader
        .chatd_events(|ev| {
            let mut a = acc.borrow_mut();
            match ev {
                cw::Event::RtMsg {
                    chatid,
                    sender_userid,
                    sender_clientid,
                    data,
                    ..
                } => {
                    let now = now_ns();
                    a.v.delivered += 1;
                    let Some(st) = Stamp::read(data) else {
                        a.v.corrupt += 1;
                        return ControlFlow::Continue(());
                    };
                    let sender = st.sender as usize;
                    let (s_user, s_dev) = (sender / devices, sender % devices);
                    let stream = usize::from(st.tag & CLIENT_STREAM != 0);
                    let target = st.tag & !CLIENT_STREAM;
                    let addressed_to_me = if stream == 0 {
                        target == my_user_ordinal
                    } else {
                        target == me
                    };
                    // The sender must be a device of the other user of this pair.
                    if chatid != pair.chat
                        || s_user / 2 != pair.index
                        || s_user % 2 == side
                        || !addressed_to_me
                    {
                        a.v.misaddressed += 1;
                        return ControlFlow::Continue(());
                    }
                    let s_local = (1 - side) * devices + s_dev;
                    if sender_userid != pair.users[1 - side]
                        || sender_clientid != pair.client_ids[s_local]
                        || data.len() != plan.size
                    {
                        a.v.corrupt += 1;
                    }
                    let arrival = tracks.borrow_mut()[s_dev][stream].on(st.seq);
                    Track::count(arrival, &mut a.v);
                    if arrival != Arrival::Duplicate && w.measured(st.intended_ns) {
                        a.lat.record(now, st.intended_ns, st.sent_ns);
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

async fn send(
    mut wr: Writer,
    pair: Rc<Pair>,
    local: usize,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let devices = plan.devices;
    let (side, d) = (local / devices, local % devices);
    let other = 1 - side;
    let me = plan.conn(pair.index, side, d);
    let target_user_ordinal = (pair.index * 2 + other) as u32;
    let target_conn = plan.conn(pair.index, other, d) as u32;
    let target_client = pair.client_ids[other * devices + d];
    let mut payload = vec![0u8; plan.size];
    let phase = me as f64 / plan.total as f64 * plan.interval_ns;
    let at = |k: u64| w.start_ns + (phase + k as f64 * plan.interval_ns) as u64;
    let mut k = 0u64;
    let res = loop {
        let t0 = at(k);
        if t0 >= w.end_ns {
            break Ok(());
        }
        sleep_until_ns(t0).await;
        let now = now_ns();
        {
            let mut a = acc.borrow_mut();
            let mut n = 0;
            while n < MAX_BATCH {
                let t = at(k);
                if t > now || t >= w.end_ns {
                    break;
                }
                let stream = (k % 2) as usize;
                let cell = &pair.seq[local][stream];
                let seq = cell.get();
                cell.set(seq + 1);
                let (tag, ru, rc) = if stream == 0 {
                    (target_user_ordinal, pair.users[other], 0)
                } else {
                    (
                        CLIENT_STREAM | target_conn,
                        pair.users[other],
                        target_client,
                    )
                };
                Stamp {
                    sender: me as u32,
                    tag,
                    seq,
                    intended_ns: t,
                    sent_ns: now,
                }
                .write(&mut payload);
                cw::encode_request(
                    &cw::Request::RtMsg {
                        chatid: pair.chat,
                        receiver_userid: ru,
                        receiver_clientid: rc,
                        msgtype: 1,
                        data: &payload,
                    },
                    &mut wr.out,
                );
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
    };
    if res.is_err() && !stop.get() {
        acc.borrow_mut().v.closed += 1;
    }
    std::future::pending::<()>().await;
    drop(wr);
}
