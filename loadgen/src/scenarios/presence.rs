//! `presence`: U statusd users on a contact ring (user i with i +- 1..K/2)
//! plus shared rooms of users far apart on the ring, so every user has a
//! known set of watchers.
//!
//! Default mode: users log in with presence 0, then each changes presence
//! on a fixed schedule (total `--rate`), user-set or automatic (0x80),
//! always to a different value. Every watcher must get exactly one
//! `OP_PRES user value` per change, and the sender exactly one
//! `OP_PRES 0 value`; latency runs from the change's intended send time.
//!
//! `--login-storm`: all users log in at once with presence 3; reports
//! logins/s and login latency (load start to the end of the login dump),
//! and checks that every client ends up seeing every watched user at 3.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use chatd_proto::statusd as sw;

use super::{
    connect_many, drain, on_threads, progress_until_end, start_after, Env, ScenarioError, Shared,
};
use crate::cli::PresenceParams;
use crate::client::{login_statusd, Reader, Statusd, Writer};
use crate::measure::{now_ns, sleep_until_ns, Latency, Rng, Verify, Window};
use crate::pacer;
use crate::report::Report;

/// Presence every user logs in with in a login storm.
const STORM_PRESENCE: u8 = 3;
/// Keepalive period of statusd connections that are otherwise quiet.
const KEEPALIVE_EVERY_NS: u64 = 30_000_000_000;

/// What everyone knows about a user's latest change (shared by threads).
#[derive(Default)]
struct UserState {
    /// Intended send time of the latest change.
    intended: AtomicU64,
    /// Actual write time of the latest change.
    sent: AtomicU64,
    /// Presence after the latest change.
    value: AtomicU8,
    /// Changes so far.
    changes: AtomicU64,
}

/// The visibility graph.
struct Graph {
    users: usize,
    /// Watched (= watching: the relation is symmetric) users per user.
    visible: Vec<Vec<usize>>,
}

impl Graph {
    fn new(
        users: usize,
        contacts: usize,
        room_size: usize,
    ) -> (Graph, Vec<(usize, usize)>, Vec<Vec<usize>>) {
        let half = contacts.div_ceil(2);
        let mut pairs = BTreeSet::new();
        for i in 0..users {
            for j in 1..=half {
                let k = (i + j) % users;
                if k != i {
                    pairs.insert((i.min(k), i.max(k)));
                }
            }
        }
        let mut rooms = Vec::new();
        if room_size >= 2 && users >= room_size {
            let n = users / room_size;
            for b in 0..n {
                rooms.push((0..users).filter(|i| i % n == b).collect::<Vec<_>>());
            }
        }
        let mut vis: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); users];
        for &(a, b) in &pairs {
            vis[a].insert(b);
            vis[b].insert(a);
        }
        for room in &rooms {
            for &a in room {
                for &b in room {
                    if a != b {
                        vis[a].insert(b);
                    }
                }
            }
        }
        let visible = vis.into_iter().map(|s| s.into_iter().collect()).collect();
        (Graph { users, visible }, pairs.into_iter().collect(), rooms)
    }
}

/// One client's view of one watched user.
#[derive(Clone, Copy, Default)]
struct Seen {
    user: usize,
    count: u64,
    last: u8,
}

#[derive(Default)]
struct Acc {
    lat: Latency,
    v: Verify,
    sent_measured: u64,
    /// Login storm: when the last login of this thread completed.
    last_login_ns: u64,
    /// Login storm: a user's presence received again with the same value
    /// (during the login dump, and after it).
    redundant: [u64; 2],
}

#[derive(Default)]
struct Out {
    lat: Latency,
    v: Verify,
    sent_measured: u64,
    last_login_ns: u64,
    start_ns: u64,
    redundant: [u64; 2],
}

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &PresenceParams) -> Result<Report, ScenarioError> {
    if p.users < 2 || (!p.login_storm && p.rate <= 0.0) {
        return Err(ScenarioError::Params(
            "presence needs --users >= 2 and --rate > 0".into(),
        ));
    }
    let (graph, pairs, rooms) = Graph::new(p.users, p.contacts, p.room_size);
    let base = env.id_base;
    let mut admin = env.admin();
    for (a, b) in &pairs {
        admin.add_contact(base + *a as u64, base + *b as u64)?;
    }
    for (i, room) in rooms.iter().enumerate() {
        let members: Vec<u64> = room.iter().map(|u| base + *u as u64).collect();
        admin.set_room(base + i as u64, &members)?;
    }
    let mut tokens = HashMap::new();
    for u in 0..p.users {
        tokens.insert(u, admin.token(base + u as u64)?);
    }
    let state: Arc<Vec<UserState>> = Arc::new((0..p.users).map(|_| UserState::default()).collect());
    let run = env.run;
    let threads = env.threads();
    let name = if p.login_storm {
        "presence-login-storm"
    } else {
        "presence"
    };
    let (outs, shared) = on_threads(name, threads, run.quiet, |t, shared| {
        thread(env, p, &graph, &state, &tokens, t, shared)
    })?;
    let mut lat = Latency::default();
    let mut v = Verify::default();
    let mut sent = 0;
    let mut last_login = 0;
    let mut start = u64::MAX;
    let mut redundant = [0, 0];
    for o in &outs {
        redundant[0] += o.redundant[0];
        redundant[1] += o.redundant[1];
        lat.merge(&o.lat);
        v.merge(&o.v);
        sent += o.sent_measured;
        last_login = last_login.max(o.last_login_ns);
        start = start.min(o.start_ns);
    }
    let watchers: usize = graph.visible.iter().map(Vec::len).sum();
    let mut report = Report::new(
        name,
        if p.login_storm {
            "logins"
        } else {
            "presence changes"
        },
        serde_json::json!({
            "users": p.users, "contacts": p.contacts, "room_size": p.room_size,
            "rate": if p.login_storm { serde_json::Value::Null } else { p.rate.into() },
            "auto_share": p.auto_share, "login_storm": p.login_storm,
            "threads": threads, "duration": run.duration, "warmup": run.warmup,
        }),
    );
    report.extra.insert(
        "watchers_per_user_avg".into(),
        watchers as f64 / p.users as f64,
    );
    report.extra.insert(
        "relations_provisioned".into(),
        (pairs.len() + rooms.len()) as f64,
    );
    if p.login_storm {
        let secs = last_login.saturating_sub(start) as f64 / 1e9;
        report.set_measured(secs, sent, lat.intended.clone(), Some(&lat.sent));
        report.extra.insert(
            "logins_per_sec".into(),
            if secs > 0.0 { sent as f64 / secs } else { 0.0 },
        );
        report
            .extra
            .insert("redundant_updates_in_dump".into(), redundant[0] as f64);
        report
            .extra
            .insert("redundant_updates_after_dump".into(), redundant[1] as f64);
        shared.fill_resources(&mut report, threads);
        report.notes.push(
            "latency = from the storm's start (intended) / from this client's connect (write) to the end of its login dump"
                .into(),
        );
    } else {
        report.set_measured(run.duration, sent, lat.intended.clone(), Some(&lat.sent));
        report.set_send_lag(&lat.lag);
        shared.fill_resources(&mut report, threads);
    }
    report.verify = v;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn thread(
    env: &Env<'_>,
    p: &PresenceParams,
    graph: &Graph,
    state: &Arc<Vec<UserState>>,
    tokens: &HashMap<usize, String>,
    t: usize,
    shared: Arc<Shared>,
) -> Out {
    let shared = &*shared;
    let run = env.run;
    let threads = env.threads();
    let mine = env.owned(p.users, t);
    let acc = Rc::new(RefCell::new(Acc::default()));
    let views: Vec<Rc<RefCell<Vec<Seen>>>> = mine
        .iter()
        .map(|&u| {
            Rc::new(RefCell::new(
                graph.visible[u]
                    .iter()
                    .map(|&w| Seen {
                        user: w,
                        ..Seen::default()
                    })
                    .collect(),
            ))
        })
        .collect();
    let ctx = Rc::new(Ctx {
        base: env.id_base,
        users: graph.users,
        state: state.clone(),
    });
    let stop = Rc::new(Cell::new(false));
    let start;
    let w;
    let mut acks: Vec<Rc<Cell<u64>>> = Vec::new();
    if p.login_storm {
        start = shared.gate.wait(threads).await;
        w = Window::new(start, 0.0, 0.0);
        sleep_until_ns(start).await;
        if t == 0 {
            shared.snap(0, env.target.pid);
            shared.snap(1, env.target.pid);
        }
        let mut handles = Vec::new();
        for (k, &u) in mine.iter().enumerate() {
            let token = tokens.get(&u).cloned().unwrap_or_default();
            let view = views[k].clone();
            let acc2 = acc.clone();
            let ctx2 = ctx.clone();
            let ep = env.target.statusd.clone();
            let sips = run.source_ips;
            handles.push(tokio::task::spawn_local(async move {
                let t0 = now_ns();
                let res = login_statusd(&ep, u, sips, &token, STORM_PRESENCE, |user, pres| {
                    let mut a = acc2.borrow_mut();
                    a.v.delivered += 1;
                    ctx2.on_pres(u, user, pres, &view, &mut a, None, true);
                })
                .await;
                let now = now_ns();
                let mut a = acc2.borrow_mut();
                match res {
                    Ok(c) => {
                        a.lat.record(now, start, t0);
                        a.sent_measured += 1;
                        a.v.sent += 1;
                        a.last_login_ns = a.last_login_ns.max(now);
                        if c.own != STORM_PRESENCE {
                            a.v.corrupt += 1;
                        }
                        Some(c)
                    }
                    Err(e) => {
                        eprintln!("loadgen: login of user {u} failed: {e}");
                        a.v.closed += 1;
                        None
                    }
                }
            }));
        }
        let mut conns = Vec::new();
        for (k, h) in handles.into_iter().enumerate() {
            if let Ok(Some(c)) = h.await {
                shared.progress.conns.fetch_add(1, Ordering::Relaxed);
                conns.push((k, c));
            }
        }
        for (k, c) in conns {
            let ack = Rc::new(Cell::new(0));
            acks.push(ack.clone());
            spawn_client(
                c,
                mine[k],
                views[k].clone(),
                ack,
                &ctx,
                w,
                &acc,
                &stop,
                None,
            );
        }
    } else {
        let (ep, sips) = (env.target.statusd.clone(), run.source_ips);
        let logins = connect_many(
            run.connect_concurrency,
            mine.clone(),
            &shared.progress,
            |u| {
                let token = tokens.get(&u).cloned().unwrap_or_default();
                let ep = ep.clone();
                async move { login_statusd(&ep, u, sips, &token, 0, |_, _| {}).await }
            },
        );
        let Some((conns, s)) = start_after(shared, threads, "presence login", logins).await else {
            return Out::default();
        };
        start = s;
        w = Window::new(start, run.warmup, run.duration);
        let interval = p.users as f64 / p.rate * 1e9;
        for (k, c) in conns.into_iter().enumerate() {
            let u = mine[k];
            let ack = Rc::new(Cell::new(0));
            acks.push(ack.clone());
            let sched = Sched {
                first_ns: w.start_ns + (u as f64 / p.users as f64 * interval) as u64,
                interval_ns: interval,
                auto_share: p.auto_share,
                seed: run.seed ^ ((u as u64) << 20),
            };
            spawn_client(
                c,
                u,
                views[k].clone(),
                ack,
                &ctx,
                w,
                &acc,
                &stop,
                Some(sched),
            );
        }
    }
    let complete = || {
        let views_done = views.iter().all(|v| {
            v.borrow().iter().all(|s| {
                if p.login_storm {
                    s.last == STORM_PRESENCE
                } else {
                    s.count >= ctx.state(s.user).changes.load(Ordering::Acquire)
                }
            })
        });
        let acks_done = p.login_storm
            || acks
                .iter()
                .zip(&mine)
                .all(|(a, &u)| a.get() >= ctx.state(u).changes.load(Ordering::Acquire));
        views_done && acks_done
    };
    if t == 0 && !p.login_storm {
        shared.snap_window(w, env.target.pid);
    }
    progress_until_end(shared, w, || acc.borrow().v).await;
    // Other threads' changes may still be under way: settle, then drain.
    shared.end_gate.wait(threads).await;
    if t == 0 && p.login_storm {
        shared.snap(2, env.target.pid);
    }
    drain(now_ns() + run.drain_ms * 1_000_000, complete).await;
    stop.set(true);
    let mut a = acc.borrow_mut();
    for v in &views {
        for s in v.borrow().iter() {
            let st = ctx.state(s.user);
            if p.login_storm {
                if s.last != STORM_PRESENCE {
                    a.v.lost += 1;
                }
            } else {
                let changes = st.changes.load(Ordering::Acquire);
                a.v.lost += changes.saturating_sub(s.count);
                a.v.duplicated += s.count.saturating_sub(changes);
            }
        }
    }
    if !p.login_storm {
        for (ack, &u) in acks.iter().zip(&mine) {
            let changes = ctx.state(u).changes.load(Ordering::Acquire);
            a.v.lost += changes.saturating_sub(ack.get());
            a.v.duplicated += ack.get().saturating_sub(changes);
        }
    }
    Out {
        lat: std::mem::take(&mut a.lat),
        v: a.v,
        sent_measured: a.sent_measured,
        last_login_ns: a.last_login_ns,
        start_ns: start,
        redundant: a.redundant,
    }
}

/// Per-thread constants the tasks share.
struct Ctx {
    base: u64,
    users: usize,
    /// The user table all threads share.
    state: Arc<Vec<UserState>>,
}

impl Ctx {
    fn state(&self, u: usize) -> &UserState {
        &self.state[u]
    }

    /// Handles `OP_PRES user pres` received by user `me`'s client.
    #[allow(clippy::too_many_arguments)]
    fn on_pres(
        &self,
        me: usize,
        user: u64,
        pres: u8,
        view: &RefCell<Vec<Seen>>,
        a: &mut Acc,
        w: Option<Window>,
        in_dump: bool,
    ) {
        let now = now_ns();
        let Some(idx) = user
            .checked_sub(self.base)
            .map(|i| i as usize)
            .filter(|&i| i < self.users && i != me)
        else {
            a.v.misaddressed += 1;
            return;
        };
        let mut view = view.borrow_mut();
        let Some(seen) = view.iter_mut().find(|s| s.user == idx) else {
            a.v.misaddressed += 1;
            return;
        };
        if pres & sw::AUTO_FLAG != 0 {
            a.v.corrupt += 1;
        }
        if seen.count > 0 && seen.last == pres {
            // Nothing changed: a redundant OP_PRES. In a login storm the
            // contract does not rule out a dump entry racing with a live
            // update of a user logging in at the same moment: counted apart.
            match w {
                Some(_) => a.v.duplicated += 1,
                None => a.redundant[usize::from(!in_dump)] += 1,
            }
            return;
        }
        seen.count += 1;
        seen.last = pres;
        if let Some(w) = w {
            let st = self.state(idx);
            let intended = st.intended.load(Ordering::Acquire);
            if st.value.load(Ordering::Acquire) == pres && w.measured(intended) {
                a.lat.record(now, intended, st.sent.load(Ordering::Acquire));
            }
        }
    }
}

/// A user's change schedule.
#[derive(Clone, Copy)]
struct Sched {
    first_ns: u64,
    interval_ns: f64,
    auto_share: f64,
    seed: u64,
}

/// Starts the reader (and, with a schedule, the changer) of one client.
#[allow(clippy::too_many_arguments)]
fn spawn_client(
    c: Statusd,
    me: usize,
    view: Rc<RefCell<Vec<Seen>>>,
    ack: Rc<Cell<u64>>,
    ctx: &Rc<Ctx>,
    w: Window,
    acc: &Rc<RefCell<Acc>>,
    stop: &Rc<Cell<bool>>,
    sched: Option<Sched>,
) {
    let measured = sched.map(|_| w);
    tokio::task::spawn_local(receive(
        c.reader,
        me,
        view,
        ack,
        ctx.clone(),
        measured,
        acc.clone(),
        stop.clone(),
    ));
    tokio::task::spawn_local(change(
        c.writer,
        me,
        ctx.clone(),
        w,
        sched,
        acc.clone(),
        stop.clone(),
    ));
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut reader: Reader,
    me: usize,
    view: Rc<RefCell<Vec<Seen>>>,
    ack: Rc<Cell<u64>>,
    ctx: Rc<Ctx>,
    w: Option<Window>,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let res = reader
        .statusd_events(|ev| {
            let mut a = acc.borrow_mut();
            match ev {
                sw::Event::Pres {
                    userid: 0,
                    presence,
                } => {
                    ack.set(ack.get() + 1);
                    if w.is_some() && ctx.state(me).value.load(Ordering::Acquire) != presence {
                        // Our own changes are serialized: the answer must
                        // carry the value just set.
                        a.v.corrupt += 1;
                    }
                }
                sw::Event::Pres { userid, presence } => {
                    a.v.delivered += 1;
                    ctx.on_pres(me, userid, presence, &view, &mut a, w, false);
                }
                sw::Event::Keepalive => {}
                sw::Event::Error { .. } => a.v.errors += 1,
            }
            ControlFlow::Continue(())
        })
        .await;
    if res.is_err() && !stop.get() {
        acc.borrow_mut().v.closed += 1;
    }
}

/// Changes user `me`'s presence on its schedule (if any); keeps the
/// connection alive either way.
async fn change(
    mut wr: Writer,
    me: usize,
    ctx: Rc<Ctx>,
    w: Window,
    sched: Option<Sched>,
    acc: Rc<RefCell<Acc>>,
    stop: Rc<Cell<bool>>,
) {
    let mut last_write = now_ns();
    if let Some(s) = sched {
        let mut rng = Rng::new(s.seed);
        let mut cur = 0u8;
        let mut k = 0u64;
        loop {
            let t = s.first_ns + (k as f64 * s.interval_ns) as u64;
            if t >= w.end_ns {
                break;
            }
            pacer::sleep_until(t).await;
            let now = now_ns();
            cur = cur % 4 + 1;
            let auto = rng.unit() < s.auto_share;
            let st = ctx.state(me);
            st.intended.store(t, Ordering::Release);
            st.sent.store(now, Ordering::Release);
            st.value.store(cur, Ordering::Release);
            st.changes.fetch_add(1, Ordering::AcqRel);
            let raw = if auto { cur | sw::AUTO_FLAG } else { cur };
            sw::encode_request(&sw::Request::SetPres { presence: raw }, &mut wr.out);
            {
                let mut a = acc.borrow_mut();
                a.v.sent += 1;
                if w.measured(t) {
                    a.sent_measured += 1;
                    a.lat.record_lag(t, now);
                }
            }
            if wr.flush().await.is_err() {
                if !stop.get() {
                    acc.borrow_mut().v.closed += 1;
                }
                break;
            }
            last_write = now;
            k += 1;
        }
    }
    loop {
        sleep_until_ns(last_write + KEEPALIVE_EVERY_NS).await;
        sw::encode_request(&sw::Request::Keepalive, &mut wr.out);
        if wr.flush().await.is_err() {
            break;
        }
        last_write = now_ns();
    }
    std::future::pending::<()>().await;
}
