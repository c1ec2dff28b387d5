//! Randomized model-based testing of statusd presence (protocol section
//! 5) against the real binary: a seeded generator, a reference model, and
//! the driver that runs them against one server or every node of a
//! cluster. Used by tests/presence_model.rs (a few users, relation
//! changes one at a time, one node or three) and
//! tests/presence_model_bulk.rs (hundreds of users, batches).
//!
//! Each step is one of: a statusd client connects (random user-set or
//! automatic HELLO value) or disconnects, a client sends OP_SETPRES, or
//! the test's own relation change (through the admin API). The model
//! keeps every client's value (5.2), the relations and so who may see
//! whom (5.3).
//!
//! Checked along the way:
//! - the login dump ends with the model's presence of the user;
//! - each OP_SETPRES is answered with the model's resulting presence;
//! - no client ever gets OP_PRES with its own user id, or with an unknown
//!   user id;
//! - the number of `OP_PRES 0` each client gets is exactly the model's
//!   (one per OP_SETPRES it sent, one per change of its user's presence
//!   while it was connected, one closing its dump): never more, at the end
//!   exactly.
//!
//! Checked at the end (eventual consistency, 5.4): once the steps stop,
//! every client's view (last value received per user, 0 if none) equals the
//! model's presence of every user it may see and 0 for every other, and its
//! own presence (from userid 0) equals its user's.
//!
//! Not checked: that nothing was ever sent about a user the client could
//! not see *at the time it was sent*. Notices travel asynchronously through
//! two shards, so a notice sent while a user was visible may arrive after a
//! later step hid it; telling those apart from a real leak would need the
//! server's send times.
//!
//! Steps are sequential and each waits until the server has applied it at
//! the user's home shard (the sender's answer, the end of a login dump, the
//! admin API's answer, or the admin API's client count after a
//! disconnect), and, in a cluster, until every node's admin API shows the
//! user's presence as the model has it (so no step races another node's
//! earlier one: the model's presence is the cluster's at every step),
//! while notices to watchers stay in flight across steps. Seed:
//! `CHATD_MODEL_SEED` (default fixed per test), steps:
//! `CHATD_MODEL_STEPS` (default 300); the seed is printed with any failure.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SEv, Server, StatusdClient};

/// How long the views may take to converge once the steps stop.
const CONVERGE: Duration = Duration::from_secs(10);

/// What a model test runs over.
pub struct Spec {
    /// Names the run in its log lines.
    pub name: &'static str,
    /// The users are 1..=`users`.
    pub users: u64,
    /// At most this many clients connected at once.
    pub max_clients: usize,
    pub max_clients_per_user: usize,
    /// Whether each new client draws the node it connects to, even from
    /// one node (the draw shifts every later step of a seed); without,
    /// every client connects to the first node.
    pub draw_node: bool,
}

/// xorshift64*, and the draws the tests make with it.
pub struct Rng {
    state: u64,
    users: u64,
}

impl Rng {
    fn new(seed: u64, users: u64) -> Rng {
        Rng {
            state: seed.max(1),
            users,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of the users.
    pub fn user(&mut self) -> u64 {
        1 + self.below(self.users)
    }

    /// `n` distinct users (at most all of them).
    pub fn users(&mut self, n: u64) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        while (set.len() as u64) < n.min(self.users) {
            set.insert(self.user());
        }
        set
    }

    /// One of `xs`.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
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

/// The relations of the model.
#[derive(Default)]
pub struct Model {
    /// Unordered pairs (low, high).
    contacts: BTreeSet<(u64, u64)>,
    rooms: HashMap<u64, BTreeSet<u64>>,
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl Model {
    pub fn put_contact(&mut self, a: u64, b: u64) {
        self.contacts.insert(pair(a, b));
    }

    pub fn delete_contact(&mut self, a: u64, b: u64) {
        self.contacts.remove(&pair(a, b));
    }

    pub fn put_member(&mut self, room: u64, user: u64) {
        self.rooms.entry(room).or_default().insert(user);
    }

    pub fn delete_member(&mut self, room: u64, user: u64) {
        if let Some(m) = self.rooms.get_mut(&room) {
            m.remove(&user);
        }
    }

    /// Runs one batch operation (protocol 6.1), as JSON.
    pub fn run(&mut self, op: &Value) {
        let id = |k: &str| op[k].as_str().expect("id").parse::<u64>().expect("id");
        let list = |k: &str| -> Vec<u64> {
            op[k]
                .as_array()
                .expect("list")
                .iter()
                .map(|v| v.as_str().expect("id").parse().expect("id"))
                .collect()
        };
        match op["op"].as_str().expect("op") {
            "put_member" => self.put_member(id("chatid"), id("userid")),
            "delete_member" => self.delete_member(id("chatid"), id("userid")),
            "put_room" => {
                self.rooms
                    .insert(id("chatid"), list("members").into_iter().collect());
            }
            "delete_room" => {
                self.rooms.remove(&id("chatid"));
            }
            "put_contact" => self.put_contact(id("a"), id("b")),
            "delete_contact" => self.delete_contact(id("a"), id("b")),
            "put_contacts" => {
                let user = id("userid");
                self.contacts.retain(|&(a, b)| a != user && b != user);
                for c in list("contacts") {
                    self.put_contact(user, c);
                }
            }
            other => panic!("op {other}"),
        }
    }

    fn may_see(&self, a: u64, b: u64) -> bool {
        if a == b {
            return false;
        }
        self.contacts.contains(&pair(a, b))
            || self
                .rooms
                .values()
                .any(|m| m.contains(&a) && m.contains(&b))
    }
}

/// One connected client and what it has received.
struct Client {
    c: StatusdClient,
    user: u64,
    /// The node it is connected to.
    node: usize,
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
    fn absorb(&mut self, ev: SEv, spec: &Spec, seed: u64) {
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
                    (1..=spec.users).contains(&userid),
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

    fn drain(&mut self, spec: &Spec, seed: u64) {
        for ev in self.c.drain() {
            self.absorb(ev, spec, seed);
        }
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
fn mismatches(clients: &[Client], model: &Model, spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for c in clients {
        let want_own = presence(clients, c.user);
        if c.own != want_own || c.own_got != c.own_want {
            out.push(format!(
                "{}: own {} (got {} OP_PRES 0), model {} ({} expected)",
                c.name, c.own, c.own_got, want_own, c.own_want
            ));
        }
        for u in (1..=spec.users).filter(|&u| u != c.user) {
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

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Waits until every node's admin API shows `user`'s presence as `want`
/// (one node: its home shard applied the step already).
fn await_everywhere(nodes: &[&Server], user: u64, want: u8, seed: u64, step: u64) {
    if nodes.len() < 2 {
        return;
    }
    let deadline = Instant::now() + super::WAIT;
    for n in nodes {
        while n.user_presence(user).0 != u64::from(want) {
            assert!(
                Instant::now() < deadline,
                "seed {seed}, step {step}: user {user}'s presence never reached {want} on every node"
            );
            std::thread::yield_now();
        }
    }
}

/// Runs the model test over `nodes` (of `shards` shards each), seeded
/// with `CHATD_MODEL_SEED` or `default_seed`. Steps whose roll (0..100)
/// is 62 or more are the test's relation change: `relate(rng, roll,
/// model)` makes it through the admin API and in `model`, and returns
/// its log line, or `None` when it made none (the step is skipped).
pub fn run(
    spec: &Spec,
    nodes: &[&Server],
    shards: usize,
    default_seed: u64,
    mut relate: impl FnMut(&mut Rng, u64, &mut Model) -> Option<String>,
) {
    let seed = env_u64("CHATD_MODEL_SEED").unwrap_or(default_seed);
    let steps = env_u64("CHATD_MODEL_STEPS").unwrap_or(300);
    eprintln!(
        "{}: nodes {}, shards {shards}, seed {seed}, steps {steps}",
        spec.name,
        nodes.len()
    );
    let mut rng = Rng::new(seed, spec.users);
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
                if clients.len() >= spec.max_clients || n >= spec.max_clients_per_user {
                    continue;
                }
                serial += 1;
                let node = if spec.draw_node {
                    rng.below(nodes.len() as u64) as usize
                } else {
                    0
                };
                let name = format!("client #{serial} of user {user} on node {node}");
                log.push(format!("{step}: connect {name} HELLO {raw:#04x}"));
                let c = nodes[node].statusd(user, raw);
                let mut cl = Client {
                    user,
                    node,
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
                        spec,
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
                await_everywhere(nodes, user, want, seed, step);
            }
            // Disconnect, then wait until the home shard has it.
            20..=31 => {
                if clients.is_empty() {
                    continue;
                }
                let i = rng.below(clients.len() as u64) as usize;
                let gone = clients.swap_remove(i);
                let user = gone.user;
                let node = gone.node;
                log.push(format!("{step}: disconnect {}", gone.name));
                let before = presence(&clients, user).max(gone.value);
                drop(gone);
                if presence(&clients, user) != before {
                    for c in clients.iter_mut().filter(|c| c.user == user) {
                        c.own_want += 1;
                    }
                }
                // The admin API counts the clients on every node (in a
                // cluster, the answering node asks the others).
                let n = clients.iter().filter(|c| c.user == user).count() as u64;
                let deadline = Instant::now() + super::WAIT;
                while nodes[node].user_presence(user).1 != n {
                    assert!(
                        Instant::now() < deadline,
                        "seed {seed}, step {step}: user {user}'s disconnect never applied"
                    );
                    std::thread::yield_now();
                }
                await_everywhere(nodes, user, presence(&clients, user), seed, step);
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
                    cl.absorb(ev, spec, seed);
                }
                assert_eq!(
                    cl.own, want,
                    "seed {seed}, step {step}: answer to OP_SETPRES {raw:#04x}"
                );
                let user = cl.user;
                await_everywhere(nodes, user, want, seed, step);
            }
            // The test's relation change.
            _ => match relate(&mut rng, roll, &mut model) {
                Some(line) => log.push(format!("{step}: {line}")),
                None => continue,
            },
        }
        for c in &mut clients {
            c.drain(spec, seed);
        }
    }

    // Quiescence: wait for every view to match the model.
    let deadline = Instant::now() + CONVERGE;
    loop {
        for c in &mut clients {
            c.drain(spec, seed);
        }
        let bad = mismatches(&clients, &model, spec);
        if bad.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let tail = log[log.len().saturating_sub(40)..].join("\n");
            panic!(
                "seed {seed}, nodes {}, shards {shards}: views did not converge within {CONVERGE:?}:\n{}\nlast steps:\n{tail}",
                nodes.len(),
                bad.join("\n")
            );
        }
        wait_readable(&clients, Duration::from_millis(50));
    }
    eprintln!(
        "{}: converged with {} clients, {} contacts, rooms of {:?}",
        spec.name,
        clients.len(),
        model.contacts.len(),
        model.rooms.values().map(BTreeSet::len).collect::<Vec<_>>()
    );
}
