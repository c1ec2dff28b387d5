//! `bigroom`: one room of N members with K of them online on statusd, and
//! bulk relation imports (protocol 6.1, 6.2). Each phase is timed, with
//! the server's RSS before and after (`extra` in the report):
//!
//! Per phase: `<phase>_secs`, `<phase>_rss_growth_mb`, and per relation
//! added the RSS growth and the growth of the server's relation indexes
//! (`chatd_relation_index_bytes`); RSS also holds redb's page cache (at
//! most 16 MiB) and what the request's parsing left in the allocator.
//!
//! 1. `PUT /v1/rooms/{id}` of `--members` N in one request (`put_*`).
//! 2. `--batch-members` M: a second room grown to M members through
//!    `POST /v1/batch` requests of `--batch-size` `put_member` operations
//!    (`batch_room_*`).
//! 3. `--contact-pairs` P: P contact pairs (users on a ring, each with its
//!    20 nearest) through batches of `put_contact` operations
//!    (`contacts_*`).
//! 4. `--online` K: members 1..=K of the big room log in to statusd at
//!    once with presence 3 (`login_*`): every client must end up seeing
//!    the K-1 others at 3, from its login dump or as updates.
//! 5. `--changes` C: member 1 changes its presence C times (4, 5, 4, ...),
//!    `--pipeline` at a time (default 1), each time waiting until every
//!    other online member got them all. The latency is to the last
//!    watcher; `change_server_cpu_ms` is the server's CPU time per change
//!    (all its threads; `_user_` and `_sys_` apart), which includes one
//!    socket write per watcher (per round: pipelined changes reach a
//!    watcher in one frame).
//! 6. `--membership-ops` X, during 5: X online members (the last ones) are
//!    removed from the room and added back, one after the other, through
//!    the admin API (`membership_op_ms_*`). They are left out of 5's
//!    per-change check; at the end every online member must see member 1's
//!    last value.
//!
//! Ids: the big room is the run's base id; its members are base+1..=N,
//! the batch room's members the next M ids, the contacts' users the next
//! P/10. A member the phases 4-6 count as received is always "member 1"
//! (base + 1); updates about other users are only counted by the login
//! check.

use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Instant;

use chatd_proto::statusd as sw;

use super::{connect_many, drain, on_threads, Env, ScenarioError, Snap};
use crate::cli::BigroomParams;
use crate::client::login_statusd;
use crate::measure::{new_histogram, now_ns, proc_cpu_split, Verify};
use crate::provision::{Admin, BatchOp, ProvisionError};
use crate::report::Report;

/// Presence every online member logs in with.
const LOGIN_PRESENCE: u8 = 3;
/// Contacts per user in the contacts import (a ring of the 20 nearest).
const CONTACTS_PER_USER: u64 = 20;

/// Runs the scenario.
pub fn run(env: &Env<'_>, p: &BigroomParams) -> Result<Report, ScenarioError> {
    if p.online > p.members || p.membership_ops + 1 >= p.online.max(1) && p.membership_ops > 0 {
        return Err(ScenarioError::Params(
            "bigroom needs --online <= --members and --membership-ops < --online - 1".into(),
        ));
    }
    if p.batch_size == 0 {
        return Err(ScenarioError::Params("--batch-size must be above 0".into()));
    }
    let base = env.id_base;
    let mut admin = env.admin();
    let mut report = Report::new(
        "bigroom",
        "presence changes",
        serde_json::json!({
            "members": p.members, "online": p.online, "changes": p.changes,
            "pipeline": p.pipeline,
            "batch_members": p.batch_members, "batch_size": p.batch_size,
            "contact_pairs": p.contact_pairs, "membership_ops": p.membership_ops,
        }),
    );
    // 1. One PUT of the whole room.
    let members: Vec<u64> = (1..=p.members as u64).map(|i| base + i).collect();
    phase(env, &mut report, "put", p.members as u64, || {
        admin.set_room(base, &members).map_err(ScenarioError::from)
    })?;
    drop(members);

    // 2. A second room, grown by batches.
    let first = base + p.members as u64 + 1;
    phase(
        env,
        &mut report,
        "batch_room",
        p.batch_members as u64,
        || {
            let ids: Vec<u64> = (0..p.batch_members as u64).map(|i| first + i).collect();
            for chunk in ids.chunks(p.batch_size) {
                let ops: Vec<BatchOp> = chunk
                    .iter()
                    .map(|&user| BatchOp::PutMember {
                        chat: base + 1,
                        user,
                    })
                    .collect();
                admin.batch(&ops)?;
            }
            Ok(())
        },
    )?;

    // 3. Contacts, by batches.
    let first = first + p.batch_members as u64;
    let users = (p.contact_pairs as u64).div_ceil(CONTACTS_PER_USER).max(2);
    phase(env, &mut report, "contacts", p.contact_pairs as u64, || {
        let mut ops = Vec::with_capacity(p.batch_size);
        let mut n = 0;
        'pairs: for i in 0..users {
            for d in 1..=CONTACTS_PER_USER {
                if n == p.contact_pairs {
                    break 'pairs;
                }
                let (a, b) = (first + i, first + (i + d) % users);
                if a == b {
                    continue;
                }
                ops.push(BatchOp::PutContact { a, b });
                n += 1;
                if ops.len() == p.batch_size {
                    admin.batch(&ops)?;
                    ops.clear();
                }
            }
        }
        if !ops.is_empty() {
            admin.batch(&ops)?;
        }
        Ok(())
    })?;

    if p.online >= 2 {
        online(env, p, &mut admin, &mut report)?;
    }
    Ok(report)
}

/// Runs one import phase: its time, and the server's RSS growth (in all
/// and per relation it added) into the report as `<name>_*`.
fn phase(
    env: &Env<'_>,
    report: &mut Report,
    name: &str,
    relations: u64,
    f: impl FnOnce() -> Result<(), ScenarioError>,
) -> Result<(), ScenarioError> {
    let pid = env.target.pid;
    let index_before = index_bytes(env)?;
    let before = Snap::take(pid);
    let t = Instant::now();
    f()?;
    let secs = t.elapsed().as_secs_f64();
    let after = Snap::take(pid);
    report.extra.insert(format!("{name}_secs"), secs);
    if let (Some(a), Some(b)) = (index_before, index_bytes(env)?) {
        if relations > 0 {
            report.extra.insert(
                format!("{name}_index_bytes_per_relation"),
                (b - a) / relations as f64,
            );
        }
    }
    if let (Some(a), Some(b)) = (before.srv_rss, after.srv_rss) {
        let grown = b as f64 - a as f64;
        report
            .extra
            .insert(format!("{name}_rss_growth_mb"), grown / 1024.0);
        if relations > 0 {
            report.extra.insert(
                format!("{name}_rss_bytes_per_relation"),
                grown * 1024.0 / relations as f64,
            );
        }
    }
    if !env.run.quiet {
        eprintln!("loadgen bigroom: {name}: {secs:.2} s");
    }
    Ok(())
}

/// The server's `chatd_relation_index_bytes` (the heap its relation
/// indexes hold), if it reports it.
fn index_bytes(env: &Env<'_>) -> Result<Option<f64>, ScenarioError> {
    let text = env.admin().metrics()?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("chatd_relation_index_bytes "))
        .and_then(|v| v.trim().parse().ok()))
}

/// What one online member's client has received.
#[derive(Default)]
struct Client {
    /// Other online members seen at [`LOGIN_PRESENCE`] (a bit each).
    seen: Vec<u64>,
    /// How many of them.
    seen_count: usize,
    /// Member 1's values received after the login dump.
    changes: u64,
    /// Member 1's last value.
    last: u8,
}

/// State the online phases' tasks share (one thread).
struct Online {
    base: u64,
    k: usize,
    clients: Vec<RefCell<Client>>,
    /// Clients excluded from the per-change check (their membership is
    /// toggled).
    toggled: Vec<bool>,
    /// Member 1's changes received by the checked watchers, and how many
    /// the change loop waits for.
    got: Cell<u64>,
    target: Cell<u64>,
    v: RefCell<Verify>,
    wake: tokio::sync::Notify,
}

impl Online {
    /// `OP_PRES user pres` arrived at client `i` (outside its dump).
    fn on_pres(&self, i: usize, user: u64, pres: u8, in_dump: bool) {
        let Some(j) = user
            .checked_sub(self.base + 1)
            .map(|j| j as usize)
            .filter(|&j| j < self.k && j != i)
        else {
            return;
        };
        let mut c = self.clients[i].borrow_mut();
        if pres == LOGIN_PRESENCE && c.seen[j / 64] & (1 << (j % 64)) == 0 {
            c.seen[j / 64] |= 1 << (j % 64);
            c.seen_count += 1;
        }
        if j == 0 && !in_dump && pres != LOGIN_PRESENCE {
            c.changes += 1;
            c.last = pres;
            if !self.toggled[i] {
                self.got.set(self.got.get() + 1);
                if self.got.get() >= self.target.get() {
                    self.wake.notify_one();
                }
            }
        } else if j == 0 {
            c.last = pres;
        }
    }

    /// Watchers the per-change check waits for.
    fn checked(&self) -> usize {
        self.toggled.iter().skip(1).filter(|&&t| !t).count()
    }
}

/// Phases 4-6.
fn online(
    env: &Env<'_>,
    p: &BigroomParams,
    admin: &mut Admin,
    report: &mut Report,
) -> Result<(), ScenarioError> {
    let base = env.id_base;
    let k = p.online;
    let mut tokens = Vec::with_capacity(k);
    for i in 0..k {
        tokens.push(admin.token(base + 1 + i as u64)?);
    }
    let run = env.run;
    let pid = env.target.pid;
    let target = env.target.clone();
    let (admin_addr, admin_token) = (target.admin, target.admin_token.clone());
    let admin_tls = target.chatd.tls.clone();
    let (outs, shared) = on_threads("bigroom", 1, run.quiet, |_, shared| {
        let tokens = tokens.clone();
        let target = target.clone();
        let admin_token = admin_token.clone();
        let admin_tls = admin_tls.clone();
        async move {
            let o = Rc::new(Online {
                base,
                k,
                clients: (0..k)
                    .map(|_| {
                        RefCell::new(Client {
                            seen: vec![0; k.div_ceil(64)],
                            ..Client::default()
                        })
                    })
                    .collect(),
                toggled: (0..k).map(|i| i >= k - p.membership_ops).collect(),
                got: Cell::new(0),
                target: Cell::new(0),
                v: RefCell::new(Verify::default()),
                wake: tokio::sync::Notify::new(),
            });
            let mut extra = Vec::new();
            // 4. Everyone logs in at once.
            let cpu0 = Snap::take(pid);
            let t0 = now_ns();
            let dump = Rc::new(Cell::new(0u64));
            let logins = connect_many(
                run.connect_concurrency,
                (0..k).collect(),
                &shared.progress,
                |i| {
                    let (o, dump) = (o.clone(), dump.clone());
                    let token = tokens[i].clone();
                    let addr = target.statusd.clone();
                    let sips = run.source_ips;
                    async move {
                        login_statusd(&addr, i, sips, &token, LOGIN_PRESENCE, |u, pr| {
                            dump.set(dump.get() + 1);
                            o.on_pres(i, u, pr, true);
                        })
                        .await
                    }
                },
            )
            .await;
            let conns = match logins {
                Ok(c) => c,
                Err(e) => {
                    shared.fail(format!("statusd login: {e}"));
                    return (extra, Verify::default(), new_histogram());
                }
            };
            let logged_ns = now_ns();
            let mut writers = Vec::new();
            for (i, c) in conns.into_iter().enumerate() {
                writers.push(c.writer);
                let o = o.clone();
                let mut reader = c.reader;
                tokio::task::spawn_local(async move {
                    let _ = reader
                        .statusd_events(|ev| {
                            if let sw::Event::Pres { userid, presence } = ev {
                                if userid != 0 {
                                    o.on_pres(i, userid, presence, false);
                                }
                            }
                            ControlFlow::Continue(())
                        })
                        .await;
                });
            }
            let settled = drain(now_ns() + 60_000_000_000, || {
                o.clients.iter().all(|c| c.borrow().seen_count == k - 1)
            });
            settled.await;
            let done_ns = now_ns();
            let cpu1 = Snap::take(pid);
            let missing: usize = o
                .clients
                .iter()
                .map(|c| k - 1 - c.borrow().seen_count)
                .sum();
            o.v.borrow_mut().lost += missing as u64;
            extra.push(("login_secs", (logged_ns - t0) as f64 / 1e9));
            extra.push(("login_settled_secs", (done_ns - t0) as f64 / 1e9));
            extra.push(("logins_per_sec", k as f64 / ((logged_ns - t0) as f64 / 1e9)));
            extra.push(("login_dump_entries", dump.get() as f64));
            if let (Some(a), Some(b)) = (cpu0.srv_cpu, cpu1.srv_cpu) {
                extra.push(("login_server_cpu_secs", b - a));
            }

            // 5 and 6. Member 1 changes presence; members are toggled
            // meanwhile.
            let toggles = p.membership_ops;
            let toggler = (toggles > 0).then(|| {
                let token = admin_token.clone();
                let tls = admin_tls.clone();
                std::thread::spawn(move || -> Result<Vec<f64>, ProvisionError> {
                    let mut admin = Admin::new(admin_addr, &token, tls);
                    let mut ms = Vec::with_capacity(2 * toggles);
                    for t in 0..toggles {
                        let user = base + (k - t) as u64;
                        for add in [false, true] {
                            let t = Instant::now();
                            if add {
                                admin.add_member(base, user)?;
                            } else {
                                admin.remove_member(base, user)?;
                            }
                            ms.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    Ok(ms)
                })
            });
            let mut lat = new_histogram();
            // The report's CPU figures and trust verdict cover this phase
            // (closed-loop rounds: no schedule, so no send lag).
            shared.snap(0, pid);
            shared.snap(1, pid);
            let cpu0 = Snap::take(pid);
            let split0 = proc_cpu_split(pid);
            let t0 = now_ns();
            let changer = &mut writers[0];
            let mut value = LOGIN_PRESENCE;
            let checked = o.checked() as u64;
            let mut sent = 0;
            while sent < p.changes {
                // A round: up to --pipeline changes written back to back,
                // then every checked watcher must have all of them.
                let n = p.pipeline.max(1).min(p.changes - sent);
                for _ in 0..n {
                    value = if value == 4 { 5 } else { 4 };
                    sw::encode_request(&sw::Request::SetPres { presence: value }, &mut changer.out);
                }
                let at = now_ns();
                if changer.flush().await.is_err() {
                    o.v.borrow_mut().closed += 1;
                    break;
                }
                sent += n;
                o.v.borrow_mut().sent += n as u64;
                o.target.set(checked * sent as u64);
                let waited = tokio::time::timeout(
                    std::time::Duration::from_millis(run.drain_ms.max(1000)),
                    async {
                        while o.got.get() < o.target.get() {
                            o.wake.notified().await;
                        }
                    },
                )
                .await;
                if waited.is_err() {
                    break;
                }
                lat.saturating_record(((now_ns() - at) / 1000).max(1));
            }
            let secs = (now_ns() - t0) as f64 / 1e9;
            shared.snap(2, pid);
            let cpu1 = Snap::take(pid);
            if let (Some(a), Some(b)) = (cpu0.srv_cpu, cpu1.srv_cpu) {
                if p.changes > 0 {
                    extra.push(("change_server_cpu_ms", (b - a) * 1e3 / p.changes as f64));
                }
            }
            if let (Some((u0, s0)), Some((u1, s1))) = (split0, proc_cpu_split(pid)) {
                if p.changes > 0 {
                    let per = |d: f64| d * 1e3 / p.changes as f64;
                    extra.push(("change_server_user_cpu_ms", per(u1 - u0)));
                    extra.push(("change_server_sys_cpu_ms", per(s1 - s0)));
                }
            }
            extra.push(("changes_secs", secs));
            extra.push(("change_watchers", o.checked() as f64));
            extra.push((
                "change_deliveries_per_sec",
                o.got.get() as f64 / secs.max(1e-9),
            ));
            if let Some(h) = toggler {
                match h.join() {
                    Ok(Ok(mut ms)) => {
                        ms.sort_by(f64::total_cmp);
                        let at = |q: f64| ms[((ms.len() - 1) as f64 * q) as usize];
                        extra.push(("membership_op_ms_p50", at(0.5)));
                        extra.push(("membership_op_ms_p99", at(0.99)));
                        extra.push(("membership_op_ms_max", at(1.0)));
                    }
                    Ok(Err(e)) => shared.fail(format!("membership toggles: {e}")),
                    Err(_) => shared.fail("membership toggles panicked".into()),
                }
            }
            // Everyone ends with member 1's last value; the checked
            // watchers got every change exactly once.
            let want = if p.changes > 0 { value } else { LOGIN_PRESENCE };
            drain(now_ns() + run.drain_ms * 1_000_000, || {
                o.clients.iter().skip(1).all(|c| c.borrow().last == want)
            })
            .await;
            let mut v = *o.v.borrow();
            for (i, c) in o.clients.iter().enumerate().skip(1) {
                let c = c.borrow();
                v.delivered += c.changes;
                if c.last != want {
                    v.lost += 1;
                }
                if !o.toggled[i] {
                    let n = p.changes as u64;
                    v.lost += n.saturating_sub(c.changes);
                    v.duplicated += c.changes.saturating_sub(n);
                }
            }
            (extra, v, lat)
        }
    })?;
    for (extra, v, lat) in outs {
        for (name, value) in extra {
            report.extra.insert(name.into(), value);
        }
        let secs = report.extra.get("changes_secs").copied().unwrap_or(0.0);
        report.set_measured(secs, p.changes as u64, lat, None);
        report.verify = v;
    }
    shared.fill_resources(report, 1);
    report.notes.push(
        "latency = one round of presence changes (--pipeline), from its write to the last online member receiving it"
            .into(),
    );
    Ok(())
}
