//! Randomized model-based test of statusd presence (protocol section 5)
//! with large rooms and bulk relation changes (6.1), against the real
//! binary, on one shard and on three.
//!
//! As tests/presence_model.rs (its machinery and checks are the same),
//! but over 240 users and 6 rooms that grow to hundreds of members, and
//! with relation changes mostly sent as `POST /v1/batch` of several
//! operations (whole rooms put and deleted, members, contacts, whole
//! contact lists), whose net effect is what the server must show.
//!
//! Checked along the way: the login dump ends with the model's presence
//! of the user; each OP_SETPRES is answered with the model's resulting
//! presence; no client gets OP_PRES with its own user id or about an
//! unknown user; the number of `OP_PRES 0` each client gets is exactly
//! the model's. Checked at the end (eventual consistency, 5.4): every
//! client's view equals the model's presence of every user it may see and
//! 0 for every other.
//!
//! Seed: `CHATD_MODEL_SEED` (default fixed per shard count), steps:
//! `CHATD_MODEL_STEPS` (default 300); the seed is printed with any failure.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{SEv, Server, StatusdClient};
use serde_json::{json, Value};

const USERS: u64 = 240;
const ROOMS: [u64; 6] = [101, 102, 103, 104, 105, 106];
const MAX_CLIENTS: usize = 14;
const MAX_CLIENTS_PER_USER: usize = 2;
/// How long the views may take to converge once the steps stop.
const CONVERGE: Duration = Duration::from_secs(10);

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn user(&mut self) -> u64 {
        1 + self.below(USERS)
    }

    fn room(&mut self) -> u64 {
        ROOMS[self.below(ROOMS.len() as u64) as usize]
    }

    /// `n` distinct users at random, as decimal strings.
    fn users(&mut self, n: u64) -> Vec<String> {
        let mut set = BTreeSet::new();
        while (set.len() as u64) < n.min(USERS) {
            set.insert(self.user());
        }
        set.into_iter().map(|u| u.to_string()).collect()
    }

    /// One random batch operation, as JSON; rooms grow large (whole
    /// rooms of 50 to 240 members), contact lists stay small.
    fn op(&mut self) -> Value {
        let (room, u, v) = (self.room().to_string(), self.user(), self.user());
        match self.below(100) {
            0..=9 => {
                let n = 50 + self.below(USERS - 49);
                json!({"op": "put_room", "chatid": room, "members": self.users(n)})
            }
            10..=14 => json!({"op": "delete_room", "chatid": room}),
            15..=39 => json!({"op": "put_member", "chatid": room, "userid": u.to_string()}),
            40..=59 => json!({"op": "delete_member", "chatid": room, "userid": u.to_string()}),
            60..=74 if u != v => {
                json!({"op": "put_contact", "a": u.to_string(), "b": v.to_string()})
            }
            75..=89 if u != v => {
                json!({"op": "delete_contact", "a": u.to_string(), "b": v.to_string()})
            }
            _ => {
                let n = self.below(12);
                let mut contacts = self.users(n);
                contacts.retain(|c| *c != u.to_string());
                json!({"op": "put_contacts", "userid": u.to_string(), "contacts": contacts})
            }
        }
    }

    /// A raw presence byte: user-set or automatic, value 0..=5 (0 less
    /// often).
    fn raw(&mut self) -> u8 {
        let v = if self.below(6) == 0 {
            0
        } else {
            1 + self.below(5) as u8
        };
        if self.below(2) == 0 {
            v | 0x80
        } else {
            v
        }
    }
}

/// One connected client and what it has received.
struct Client {
    c: StatusdClient,
    user: u64,
    /// Its value in the model (5.2).
    value: u8,
    /// Last value received per user id.
    view: HashMap<u64, u8>,
    /// Last `OP_PRES 0` value.
    own: u8,
    /// `OP_PRES 0` received and expected so far.
    own_got: u64,
    own_want: u64,
    name: String,
}

impl Client {
    fn absorb(&mut self, ev: SEv, seed: u64) {
        match ev {
            SEv::Pres {
                userid: 0,
                presence,
            } => {
                self.own = presence;
                self.own_got += 1;
                assert!(
                    self.own_got <= self.own_want,
                    "seed {seed}: {} got an OP_PRES 0 {presence} too many",
                    self.name
                );
            }
            SEv::Pres { userid, presence } => {
                assert_ne!(
                    userid, self.user,
                    "seed {seed}: {} got OP_PRES with its own user id",
                    self.name
                );
                assert!(
                    (1..=USERS).contains(&userid),
                    "seed {seed}: {} got OP_PRES about unknown user {userid}",
                    self.name
                );
                assert!(
                    presence < 0x80,
                    "seed {seed}: MSB set in OP_PRES {userid} {presence:#x}"
                );
                self.view.insert(userid, presence);
            }
            other => panic!("seed {seed}: {} got {other:?}", self.name),
        }
    }

    fn drain(&mut self, seed: u64) {
        for ev in self.c.drain() {
            self.absorb(ev, seed);
        }
    }
}

#[derive(Default)]
struct Model {
    /// Unordered pairs (low, high).
    contacts: BTreeSet<(u64, u64)>,
    rooms: HashMap<u64, BTreeSet<u64>>,
}

impl Model {
    /// Runs one batch operation (protocol 6.1) on the model.
    fn run(&mut self, op: &Value) {
        let id = |k: &str| op[k].as_str().expect("id").parse::<u64>().expect("id");
        let list = |k: &str| -> Vec<u64> {
            op[k]
                .as_array()
                .expect("list")
                .iter()
                .map(|v| v.as_str().expect("id").parse().expect("id"))
                .collect()
        };
        let pair = |a: u64, b: u64| (a.min(b), a.max(b));
        match op["op"].as_str().expect("op") {
            "put_member" => {
                self.rooms
                    .entry(id("chatid"))
                    .or_default()
                    .insert(id("userid"));
            }
            "delete_member" => {
                self.rooms
                    .entry(id("chatid"))
                    .or_default()
                    .remove(&id("userid"));
            }
            "put_room" => {
                self.rooms
                    .insert(id("chatid"), list("members").into_iter().collect());
            }
            "delete_room" => {
                self.rooms.remove(&id("chatid"));
            }
            "put_contact" => {
                self.contacts.insert(pair(id("a"), id("b")));
            }
            "delete_contact" => {
                self.contacts.remove(&pair(id("a"), id("b")));
            }
            "put_contacts" => {
                let user = id("userid");
                self.contacts.retain(|&(a, b)| a != user && b != user);
                for c in list("contacts") {
                    self.contacts.insert(pair(user, c));
                }
            }
            other => panic!("op {other}"),
        }
    }

    fn may_see(&self, a: u64, b: u64) -> bool {
        if a == b {
            return false;
        }
        self.contacts.contains(&(a.min(b), a.max(b)))
            || self
                .rooms
                .values()
                .any(|m| m.contains(&a) && m.contains(&b))
    }
}

fn presence(clients: &[Client], user: u64) -> u8 {
    clients
        .iter()
        .filter(|c| c.user == user)
        .map(|c| c.value)
        .max()
        .unwrap_or(0)
}

/// Applies a raw value from client `i` of `user` (5.2); `i` must already
/// be in `clients`. Returns whether the user's presence changed, and
/// counts the `OP_PRES 0` the user's clients other than `i` will get.
fn apply(clients: &mut [Client], i: usize, raw: u8) -> bool {
    let user = clients[i].user;
    let before = presence(clients, user);
    if raw & 0x80 == 0 {
        for c in clients.iter_mut().filter(|c| c.user == user) {
            c.value = raw;
        }
    } else {
        clients[i].value = raw & 0x7F;
    }
    let changed = presence(clients, user) != before;
    if changed {
        for (j, c) in clients.iter_mut().enumerate() {
            if c.user == user && j != i {
                c.own_want += 1;
            }
        }
    }
    changed
}

/// Mismatches between every client's view and the model.
fn mismatches(clients: &[Client], model: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for c in clients {
        let want_own = presence(clients, c.user);
        if c.own != want_own || c.own_got != c.own_want {
            out.push(format!(
                "{}: own {} (got {} OP_PRES 0), model {} ({} expected)",
                c.name, c.own, c.own_got, want_own, c.own_want
            ));
        }
        for u in (1..=USERS).filter(|&u| u != c.user) {
            let want = if model.may_see(c.user, u) {
                presence(clients, u)
            } else {
                0
            };
            let got = c.view.get(&u).copied().unwrap_or(0);
            if got != want {
                out.push(format!(
                    "{}: user {u} is {got}, model {want} (may see: {})",
                    c.name,
                    model.may_see(c.user, u)
                ));
            }
        }
    }
    out
}

/// Waits until one of `clients` has input or `d` passed.
fn wait_readable(clients: &[Client], d: Duration) {
    let mut fds: Vec<libc::pollfd> = clients
        .iter()
        .map(|c| libc::pollfd {
            fd: c.c.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that
    // outlives the call.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            d.as_millis() as libc::c_int,
        );
    }
}

/// A log line's worth of a request body.
fn short(body: &str) -> String {
    if body.len() > 300 {
        format!("{}... ({} bytes)", &body[..300], body.len())
    } else {
        body.to_string()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn run_model(shards: usize, default_seed: u64) {
    let seed = env_u64("CHATD_MODEL_SEED").unwrap_or(default_seed);
    let steps = env_u64("CHATD_MODEL_STEPS").unwrap_or(300);
    eprintln!("bulk presence model: shards {shards}, seed {seed}, steps {steps}");
    let mut rng = Rng(seed.max(1));
    let s = Server::start(shards, &[]);
    let mut model = Model::default();
    let mut clients: Vec<Client> = Vec::new();
    let mut serial = 0;
    let mut log: Vec<String> = Vec::new();

    for step in 0..steps {
        let roll = rng.below(100);
        match roll {
            // Connect.
            0..=19 => {
                let user = rng.user();
                let raw = rng.raw();
                let n = clients.iter().filter(|c| c.user == user).count();
                if clients.len() >= MAX_CLIENTS || n >= MAX_CLIENTS_PER_USER {
                    continue;
                }
                serial += 1;
                let name = format!("client #{serial} of user {user}");
                log.push(format!("{step}: connect {name} HELLO {raw:#04x}"));
                let c = s.statusd(user, raw);
                let mut cl = Client {
                    user,
                    value: 0,
                    view: HashMap::new(),
                    own: c.own,
                    own_got: 1,
                    own_want: 1,
                    name,
                    c,
                };
                for (u, p) in std::mem::take(&mut cl.c.dump) {
                    cl.absorb(
                        SEv::Pres {
                            userid: u,
                            presence: p,
                        },
                        seed,
                    );
                }
                clients.push(cl);
                let i = clients.len() - 1;
                apply(&mut clients, i, raw);
                let want = presence(&clients, user);
                assert_eq!(
                    clients[i].own, want,
                    "seed {seed}, step {step}: own presence at the end of the dump"
                );
            }
            // Disconnect, then wait until the home shard has it.
            20..=31 => {
                if clients.is_empty() {
                    continue;
                }
                let i = rng.below(clients.len() as u64) as usize;
                let gone = clients.swap_remove(i);
                let user = gone.user;
                log.push(format!("{step}: disconnect {}", gone.name));
                let before = presence(&clients, user).max(gone.value);
                drop(gone);
                if presence(&clients, user) != before {
                    for c in clients.iter_mut().filter(|c| c.user == user) {
                        c.own_want += 1;
                    }
                }
                let n = clients.iter().filter(|c| c.user == user).count() as u64;
                let deadline = Instant::now() + common::WAIT;
                while s.user_presence(user).1 != n {
                    assert!(
                        Instant::now() < deadline,
                        "seed {seed}, step {step}: user {user}'s disconnect never applied"
                    );
                    std::thread::yield_now();
                }
            }
            // OP_SETPRES, waiting for its answer.
            32..=61 => {
                if clients.is_empty() {
                    continue;
                }
                let i = rng.below(clients.len() as u64) as usize;
                let raw = rng.raw();
                log.push(format!("{step}: {} SETPRES {raw:#04x}", clients[i].name));
                apply(&mut clients, i, raw);
                let want = presence(&clients, clients[i].user);
                let cl = &mut clients[i];
                cl.own_want += 1;
                cl.c.setpres(raw);
                while cl.own_got < cl.own_want {
                    let ev = cl.c.recv();
                    cl.absorb(ev, seed);
                }
                assert_eq!(
                    cl.own, want,
                    "seed {seed}, step {step}: answer to OP_SETPRES {raw:#04x}"
                );
            }
            // One relation change, alone or (mostly) in a batch.
            _ => {
                let n = if roll < 70 { 1 } else { 2 + rng.below(7) };
                let ops: Vec<Value> = (0..n).map(|_| rng.op()).collect();
                let body = json!({ "ops": ops }).to_string();
                log.push(format!("{step}: batch {}", short(&body)));
                s.admin_ok("POST", "/v1/batch", Some(&body), 200);
                for op in &ops {
                    model.run(op);
                }
            }
        }
        for c in &mut clients {
            c.drain(seed);
        }
    }

    // Quiescence: wait for every view to match the model.
    let deadline = Instant::now() + CONVERGE;
    loop {
        for c in &mut clients {
            c.drain(seed);
        }
        let bad = mismatches(&clients, &model);
        if bad.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let tail = log[log.len().saturating_sub(40)..].join("\n");
            panic!(
                "seed {seed}, shards {shards}: views did not converge within {CONVERGE:?}:\n{}\nlast steps:\n{tail}",
                bad.join("\n")
            );
        }
        wait_readable(&clients, Duration::from_millis(50));
    }
    eprintln!(
        "bulk presence model: converged with {} clients, {} contacts, rooms of {:?}",
        clients.len(),
        model.contacts.len(),
        model.rooms.values().map(BTreeSet::len).collect::<Vec<_>>()
    );
}

#[test]
fn bulk_presence_model_one_shard() {
    run_model(1, 0xB01C_0001);
}

#[test]
fn bulk_presence_model_three_shards() {
    run_model(3, 0xB01C_0003);
}
