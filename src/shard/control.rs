//! The admin thread's handle on the shards ([`MeshControl`]) and the
//! shard side of its messages: start-up relations, relation changes in two
//! rounds, and live-state queries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::msg::ShardMsg;
use super::{chatd, flips, route, Shard, Shared};
use crate::admin::control::{BoxFuture, Pushes, RoomLive, ShardControl, UserLive};
use crate::core::relations::ShardDelta;
use crate::ids::{ChatId, Service, UserId};
use crate::store::{Loaded, NetChange};

/// [`ShardControl`] over the mesh.
pub struct MeshControl {
    shared: Arc<Shared>,
    /// Number of the last relation change sent (its epoch).
    epoch: AtomicU64,
}

impl MeshControl {
    /// A control handle for the running shards.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            epoch: AtomicU64::new(0),
        }
    }

    /// Start-up: hands each shard its part of the stored relations;
    /// resolves once all have them.
    pub fn install(&self, loaded: Loaded) -> BoxFuture<()> {
        let mut waits = Vec::new();
        for (to, (memberships, contacts)) in loaded
            .memberships
            .into_iter()
            .zip(loaded.contacts)
            .enumerate()
        {
            let (done, wait) = oneshot::channel();
            let msg = ShardMsg::Install {
                memberships,
                contacts,
                done,
            };
            self.shared.mesh.send(to, msg);
            waits.push(wait);
        }
        Box::pin(async move {
            for w in waits {
                // An error means the shard is gone (shutting down).
                let _ = w.await;
            }
        })
    }

    /// Each shard's part of `change`: memberships to the rooms' homes,
    /// each contact pair in both directions to each user's home.
    fn split(&self, change: &NetChange) -> Vec<ShardDelta> {
        let shards = self.shared.mesh.shards();
        let mut parts = vec![ShardDelta::default(); shards];
        for &(chat, user) in &change.members_added {
            parts[route::room_home(chat, shards)]
                .members_added
                .push((user, chat));
        }
        for &(chat, user) in &change.members_removed {
            parts[route::room_home(chat, shards)]
                .members_removed
                .push((user, chat));
        }
        for (pairs, added) in [
            (&change.contacts_added, true),
            (&change.contacts_removed, false),
        ] {
            for &(a, b) in pairs {
                for (u, c) in [(a, b), (b, a)] {
                    let part = &mut parts[route::user_home(u, shards)];
                    if added {
                        part.contacts_added.push((u, c));
                    } else {
                        part.contacts_removed.push((u, c));
                    }
                }
            }
        }
        for p in &mut parts {
            p.members_added.sort_unstable();
            p.members_removed.sort_unstable();
            p.contacts_added.sort_unstable();
            p.contacts_removed.sort_unstable();
        }
        parts
    }
}

impl ShardControl for MeshControl {
    fn apply(&self, change: Arc<NetChange>) -> BoxFuture<Pushes> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        // Round 1, to every shard (an empty part too: each shard's epoch
        // must follow every change, see `statusd`).
        let mut waits = Vec::new();
        for (to, delta) in self.split(&change).into_iter().enumerate() {
            let (done, wait) = oneshot::channel();
            self.shared
                .mesh
                .send(to, ShardMsg::Apply { epoch, delta, done });
            waits.push(wait);
        }
        let mesh = self.shared.mesh.clone();
        Box::pin(async move {
            // Applied everywhere, and whatever the shards sent meanwhile is
            // on its way: a client's command from now on sees the change.
            let mut touched = Vec::new();
            for w in waits {
                touched.extend(w.await.unwrap_or_default());
            }
            touched.sort_unstable();
            touched.dedup();
            let done = move |mesh: &crate::shard::mesh::Mesh| {
                for to in 0..mesh.shards() {
                    mesh.send(to, ShardMsg::RoundDone);
                }
            };
            if touched.is_empty() {
                // Nobody active was concerned: nothing to show or hide.
                done(&mesh);
                return Pushes(Box::pin(async {}));
            }
            // Round 2: what the change showed and hid, computed by each
            // touched user's home at this epoch, sent in chunks.
            let touched = Arc::new(touched);
            let mut waits = Vec::new();
            for to in 0..mesh.shards() {
                let (done, wait) = oneshot::channel();
                let touched = touched.clone();
                mesh.send(
                    to,
                    ShardMsg::Flips {
                        epoch,
                        touched,
                        done,
                    },
                );
                waits.push(wait);
            }
            Pushes(Box::pin(async move {
                for w in waits {
                    let _ = w.await;
                }
                // Every shard's updates of round 2 went out before its
                // answer, so they have all arrived before this.
                done(&mesh);
            }))
        })
    }

    fn room_live(&self, chat: ChatId) -> BoxFuture<RoomLive> {
        let (reply, wait) = oneshot::channel();
        let to = route::room_home(chat, self.shared.mesh.shards());
        self.shared
            .mesh
            .send(to, ShardMsg::QueryRoom { chat, reply });
        Box::pin(async move { wait.await.unwrap_or_default() })
    }

    fn user_live(&self, user: UserId) -> BoxFuture<UserLive> {
        let (reply, wait) = oneshot::channel();
        let to = route::user_home(user, self.shared.mesh.shards());
        self.shared
            .mesh
            .send(to, ShardMsg::QueryUser { user, reply });
        Box::pin(async move { wait.await.unwrap_or_default() })
    }

    fn user_rooms(&self, user: UserId) -> BoxFuture<Vec<ChatId>> {
        let mut waits = Vec::new();
        for to in 0..self.shared.mesh.shards() {
            let (reply, wait) = oneshot::channel();
            self.shared
                .mesh
                .send(to, ShardMsg::QueryRooms { user, reply });
            waits.push(wait);
        }
        Box::pin(async move {
            let mut rooms = Vec::new();
            for w in waits {
                rooms.extend(w.await.unwrap_or_default());
            }
            rooms.sort_unstable();
            rooms
        })
    }

    fn metrics_text(&self) -> String {
        let all: Vec<&crate::metrics::ShardMetrics> =
            self.shared.metrics.iter().map(|m| &**m).collect();
        crate::metrics::render_prometheus(&all)
    }
}

/// Publishes the size of this shard's relation indexes.
fn relation_gauges(shard: &Shard) {
    let st = shard.state.borrow();
    let m = &shard.metrics;
    let r = &st.relations;
    m.relation_members
        .store(r.membership_count() as u64, Ordering::Relaxed);
    m.relation_contacts
        .store(r.contact_count() as u64, Ordering::Relaxed);
    m.relation_bytes
        .store(r.heap_bytes() as u64, Ordering::Relaxed);
}

/// Handles a message from the admin thread.
pub fn handle_admin_msg(shard: &Shard, msg: ShardMsg) {
    match msg {
        ShardMsg::Install {
            memberships,
            contacts,
            done,
        } => {
            shard
                .state
                .borrow_mut()
                .relations
                .install(memberships, contacts);
            relation_gauges(shard);
            shard.ack_after_flush(done, Vec::new());
        }
        ShardMsg::Apply { epoch, delta, done } => {
            let mut out = Vec::new();
            flips::open_round(shard);
            let touched = {
                let mut st = shard.state.borrow_mut();
                let touched = st.relations.apply(epoch, &delta);
                // Connections of users who lost a room here leave it.
                for &(user, chat) in &delta.members_removed {
                    st.rooms.remove_member(chat, user, &mut out);
                }
                touched
            };
            chatd::apply_room_outputs(shard, out);
            relation_gauges(shard);
            // Applied: a command a client sends after the admin call
            // answered is handled after this.
            shard.ack_after_flush(done, touched);
        }
        ShardMsg::Flips {
            epoch,
            touched,
            done,
        } => flips::start_flips(shard, epoch, touched, done),
        ShardMsg::RoundDone => flips::close_round(shard),
        ShardMsg::QueryRooms { user, reply } => {
            let rooms = shard.state.borrow().relations.rooms_of(user).collect();
            let _ = reply.send(rooms);
        }
        ShardMsg::QueryRoom { chat, reply } => {
            let live = shard.state.borrow().rooms.live(chat);
            let _ = reply.send(RoomLive {
                joined_clients: live.joined_clients,
                in_call: live.in_call,
                call_users: live.call_users,
            });
        }
        ShardMsg::QueryUser { user, reply } => {
            let st = shard.state.borrow();
            let live = UserLive {
                presence: st.presence.presence(user),
                statusd_clients: st.presence.clients(user).count() as u64,
                chatd_clients: u64::from(shard.shared.user_conns.count(user, Service::Chatd)),
            };
            let _ = reply.send(live);
        }
        _ => {}
    }
}
