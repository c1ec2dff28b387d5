//! Randomized model-based test of statusd presence (protocol section 5)
//! with large rooms and bulk relation changes (6.1), against the real
//! binary, on one shard and on three.
//!
//! As tests/presence_model.rs (the machinery, the reference model and the
//! checks are tests/common/presence_model.rs), but over 240 users and 6
//! rooms that grow to hundreds of members, and with relation changes
//! mostly sent as `POST /v1/batch` of several operations (whole rooms put
//! and deleted, members, contacts, whole contact lists), whose net effect
//! is what the server must show.

mod common;

use common::presence_model::{self, Rng, Spec};
use common::Server;
use serde_json::{json, Value};

const USERS: u64 = 240;
const ROOMS: [u64; 6] = [101, 102, 103, 104, 105, 106];

const SPEC: Spec = Spec {
    name: "bulk presence model",
    users: USERS,
    max_clients: 14,
    max_clients_per_user: 2,
    draw_node: false,
};

/// `n` distinct users at random, as decimal strings.
fn users(rng: &mut Rng, n: u64) -> Vec<String> {
    rng.users(n).into_iter().map(|u| u.to_string()).collect()
}

/// One random batch operation, as JSON; rooms grow large (whole rooms of
/// 50 to 240 members), contact lists stay small.
fn op(rng: &mut Rng) -> Value {
    let (room, u, v) = (rng.pick(&ROOMS).to_string(), rng.user(), rng.user());
    match rng.below(100) {
        0..=9 => {
            let n = 50 + rng.below(USERS - 49);
            json!({"op": "put_room", "chatid": room, "members": users(rng, n)})
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
            let n = rng.below(12);
            let mut contacts = users(rng, n);
            contacts.retain(|c| *c != u.to_string());
            json!({"op": "put_contacts", "userid": u.to_string(), "contacts": contacts})
        }
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

fn run_model(shards: usize, default_seed: u64) {
    let s = Server::start(shards, &[]);
    // One relation change, alone or (mostly) in a batch.
    presence_model::run(&SPEC, &[&s], shards, default_seed, |rng, roll, model| {
        let n = if roll < 70 { 1 } else { 2 + rng.below(7) };
        let ops: Vec<Value> = (0..n).map(|_| op(rng)).collect();
        let body = json!({ "ops": ops }).to_string();
        s.admin_ok("POST", "/v1/batch", Some(&body), 200);
        for op in &ops {
            model.run(op);
        }
        Some(format!("batch {}", short(&body)))
    });
}

#[test]
fn bulk_presence_model_one_shard() {
    run_model(1, 0xB01C_0001);
}

#[test]
fn bulk_presence_model_three_shards() {
    run_model(3, 0xB01C_0003);
}
