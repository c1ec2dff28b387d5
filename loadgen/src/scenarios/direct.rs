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

use chatd_proto::chatd as cw;

use super::{
    hold, load_window, login_and_start, merged, on_threads, provision_rooms, Env, ScenarioError,
    Shared, Tally,
};
use crate::cli::DirectParams;
use crate::client::{Reader, Writer};
use crate::measure::{now_ns, Arrival, Stamp, Track, Window, STAMP_LEN};
use crate::pacer::{paced, Schedule};
use crate::report::Report;

/// Tag bit of stream 1 (client-addressed); the low bits name the target.
const CLIENT_STREAM: u32 = 1 << 31;

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
    // Pair q: chat base + q, users base + 2q and base + 2q + 1.
    let tokens = provision_rooms(env, p.pairs, 2)?;
    let run = env.run;
    let threads = env.threads();
    let (outs, shared) = on_threads("direct", threads, run.quiet, |t, shared| {
        thread(env, p, plan, &tokens, t, shared)
    })?;
    let all = merged(&outs);
    let mut report = Report::new(
        "direct",
        "messages",
        serde_json::json!({
            "pairs": p.pairs, "devices": p.devices, "rate": p.rate, "size": p.size,
            "threads": threads, "duration": run.duration, "warmup": run.warmup,
        }),
    );
    report.extra.insert(
        "deliveries_per_message_avg".into(),
        (p.devices as f64 + 1.0) / 2.0,
    );
    all.fill_report(&mut report, run.duration, &shared, threads);
    Ok(report)
}

async fn thread(
    env: &Env<'_>,
    p: &DirectParams,
    plan: Plan,
    tokens: &HashMap<u64, String>,
    t: usize,
    shared: Arc<Shared>,
) -> Tally {
    let shared = &*shared;
    let run = env.run;
    let base = env.id_base;
    let my_pairs = env.owned(p.pairs, t);
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
    let Some((conns, start)) = login_and_start(env, shared, "direct login", specs).await else {
        return Tally::default();
    };
    let w = Window::new(start, run.warmup, run.duration);
    let acc = Rc::new(RefCell::new(Tally::default()));
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
    load_window(env, shared, t, w, &acc, &stop, complete).await;
    let mut a = acc.borrow_mut();
    for (pair, local, tr) in &receivers {
        a.v.lost += missing(pair, *local, &tr.borrow());
    }
    a.take()
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut reader: Reader,
    pair: Rc<Pair>,
    local: usize,
    tracks: Rc<RefCell<Vec<[Track; 2]>>>,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Tally>>,
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
    acc.borrow_mut().closed_unless(&res, &stop);
}

async fn send(
    wr: Writer,
    pair: Rc<Pair>,
    local: usize,
    plan: Plan,
    w: Window,
    acc: Rc<RefCell<Tally>>,
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
    let sched = Schedule::staggered(w, me, plan.total, plan.interval_ns);
    let (p, a) = (pair.clone(), acc.clone());
    let (wr, res) = paced(wr, sched, move |k, t, now, out| {
        let pair = &p;
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
            out,
        );
        a.borrow_mut().sent_paced(&w, t, now);
    })
    .await;
    acc.borrow_mut().closed_unless(&res, &stop);
    hold(wr).await;
}
