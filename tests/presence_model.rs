//! Randomized model-based test of statusd presence (protocol section 5)
//! against the real binary, on one shard, on three, and on a cluster of
//! three nodes (protocol 10: one server seen from outside; clients connect
//! to random nodes and relation writes go to random nodes).
//!
//! A seeded generator drives ~300 random steps over 8 users: statusd
//! clients connect and disconnect, send OP_SETPRES, and the admin API adds
//! and removes contacts and members of 3 rooms, one at a time. The
//! machinery, the reference model and what is checked are in
//! tests/common/presence_model.rs (shared with
//! tests/presence_model_bulk.rs).

mod common;

use common::cluster::Cluster;
use common::presence_model::{self, Model, Rng, Spec};
use common::Server;

const ROOMS: [u64; 3] = [101, 102, 103];

const SPEC: Spec = Spec {
    name: "presence model",
    users: 8,
    max_clients: 14,
    max_clients_per_user: 3,
    draw_node: true,
};

/// One contact or room member put or deleted, on any node.
fn relate(nodes: &[&Server], rng: &mut Rng, roll: u64, model: &mut Model) -> Option<String> {
    if roll < 80 {
        // Contacts.
        let (a, b) = (rng.user(), rng.user());
        if a == b {
            return None;
        }
        if rng.below(2) == 0 {
            rng.pick(nodes).add_contact(a, b);
            model.put_contact(a, b);
            Some(format!("PUT contact {a} {b}"))
        } else {
            rng.pick(nodes).remove_contact(a, b);
            model.delete_contact(a, b);
            Some(format!("DELETE contact {a} {b}"))
        }
    } else {
        // Room members.
        let room = *rng.pick(&ROOMS);
        let user = rng.user();
        if rng.below(2) == 0 {
            rng.pick(nodes).add_member(room, user);
            model.put_member(room, user);
            Some(format!("PUT member {room} {user}"))
        } else {
            rng.pick(nodes).remove_member(room, user);
            model.delete_member(room, user);
            Some(format!("DELETE member {room} {user}"))
        }
    }
}

fn run_model_on(nodes: &[&Server], shards: usize, default_seed: u64) {
    presence_model::run(&SPEC, nodes, shards, default_seed, |rng, roll, model| {
        relate(nodes, rng, roll, model)
    });
}

#[test]
fn presence_model_one_shard() {
    run_model_on(&[&Server::start(1, &[])], 1, 0x5EED_0001);
}

#[test]
fn presence_model_three_shards() {
    run_model_on(&[&Server::start(3, &[])], 3, 0x5EED_0003);
}

#[test]
fn presence_model_cluster_of_three_nodes() {
    let c = Cluster::start(3, 2);
    let nodes: Vec<&Server> = c.nodes.iter().collect();
    run_model_on(&nodes, 2, 0x5EED_C003);
}
