//! The admin thread's handle on the shards ([`MeshControl`]) and the
//! shard side of its messages: start-up relations, relation changes in two
//! rounds, and live-state queries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::mesh::Mesh;
use super::msg::ShardMsg;
use super::{chatd, flips, route, Shard};
use crate::admin::control::{BoxFuture, Pushes, RoomLive, ShardControl, ShardGone, UserLive};
use crate::core::relations::ShardDelta;
use crate::ids::{ChatId, Service, UserId};
use crate::metrics::ShardMetrics;
use crate::store::{Loaded, NetChange};

/// [`ShardControl`] over the mesh.
///
/// Every message to a shard carries the sender of its acknowledgement, so a
/// shard that is gone shows the same way whether the mesh refused the
/// message (it is dropped with its sender) or the shard dropped it: the
/// acknowledgement's channel closes, and the call answers [`ShardGone`].
pub struct MeshControl {
    mesh: Mesh,
    /// Each shard's metrics, by shard index.
    metrics: Vec<Arc<ShardMetrics>>,
    /// Number of the last relation change sent (its epoch).
    epoch: AtomicU64,
}

/// Awaits one acknowledgement per shard, in shard order; the first shard
/// whose channel closed is named in the error.
async fn all_acks<T>(waits: Vec<oneshot::Receiver<T>>) -> Result<Vec<T>, ShardGone> {
    let mut acks = Vec::with_capacity(waits.len());
    let mut gone = None;
    for (to, w) in waits.into_iter().enumerate() {
        match w.await {
            Ok(t) => acks.push(t),
            Err(_) => {
                gone.get_or_insert(ShardGone(to));
            }
        }
    }
    gone.map_or(Ok(acks), Err)
}

impl MeshControl {
    /// A control handle for the running shards.
    pub fn new(mesh: Mesh, metrics: Vec<Arc<ShardMetrics>>) -> Self {
        Self {
            mesh,
            metrics,
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
            self.mesh.send(to, msg);
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
        let shards = self.mesh.shards();
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
            p.sort();
        }
        parts
    }
}

impl ShardControl for MeshControl {
    fn apply(&self, change: Arc<NetChange>) -> BoxFuture<Result<Pushes, ShardGone>> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        // Round 1, to every shard (an empty part too: each shard's epoch
        // must follow every change, see `statusd`).
        let mut waits = Vec::new();
        for (to, delta) in self.split(&change).into_iter().enumerate() {
            let (done, wait) = oneshot::channel();
            // Refused: `done` is dropped with the message, and the wait
            // below sees the shard gone.
            self.mesh.send(to, ShardMsg::Apply { epoch, delta, done });
            waits.push(wait);
        }
        let mesh = self.mesh.clone();
        Box::pin(async move {
            let done = move |mesh: &Mesh| {
                for to in 0..mesh.shards() {
                    mesh.send(to, ShardMsg::RoundDone);
                }
            };
            // Applied everywhere, and whatever the shards sent meanwhile is
            // on its way: a client's command from now on sees the change.
            let touched = match all_acks(waits).await {
                Ok(touched) => touched,
                Err(gone) => {
                    // The change is durable but not live everywhere: no
                    // round 2 (its users' views are not at one epoch); the
                    // others close the round, and the caller answers 500.
                    done(&mesh);
                    return Err(gone);
                }
            };
            let mut touched: Vec<UserId> = touched.into_iter().flatten().collect();
            touched.sort_unstable();
            touched.dedup();
            if touched.is_empty() {
                // Nobody active was concerned: nothing to show or hide.
                done(&mesh);
                return Ok(Pushes(Box::pin(async {})));
            }
            // Round 2: what the change showed and hid, computed by each
            // touched user's home at this epoch, sent in chunks. The
            // request is answered after it (see `Pushes`).
            Ok(Pushes(Box::pin(async move {
                #[cfg(debug_assertions)]
                if let Some(delay) = crate::debug_hooks::round2_delay() {
                    tokio::time::sleep(delay).await;
                }
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
                // A shard gone here was logged by the mesh, and the
                // process is ending.
                if let Err(ShardGone(shard)) = all_acks(waits).await {
                    tracing::error!(shard, epoch, "shard {shard} did not finish round 2");
                }
                // Every shard's updates of round 2 went out before its
                // answer, so they have all arrived before this.
                done(&mesh);
            })))
        })
    }

    fn room_live(&self, chat: ChatId) -> BoxFuture<Result<RoomLive, ShardGone>> {
        let (reply, wait) = oneshot::channel();
        let to = route::room_home(chat, self.mesh.shards());
        self.mesh.send(to, ShardMsg::QueryRoom { chat, reply });
        Box::pin(async move { wait.await.map_err(|_| ShardGone(to)) })
    }

    fn user_live(&self, user: UserId) -> BoxFuture<Result<UserLive, ShardGone>> {
        let (reply, wait) = oneshot::channel();
        let to = route::user_home(user, self.mesh.shards());
        self.mesh.send(to, ShardMsg::QueryUser { user, reply });
        Box::pin(async move { wait.await.map_err(|_| ShardGone(to)) })
    }

    fn user_rooms(&self, user: UserId) -> BoxFuture<Result<Vec<ChatId>, ShardGone>> {
        let mut waits = Vec::new();
        for to in 0..self.mesh.shards() {
            let (reply, wait) = oneshot::channel();
            self.mesh.send(to, ShardMsg::QueryRooms { user, reply });
            waits.push(wait);
        }
        Box::pin(async move {
            let mut rooms: Vec<ChatId> = all_acks(waits).await?.into_iter().flatten().collect();
            rooms.sort_unstable();
            Ok(rooms)
        })
    }

    fn metrics_text(&self) -> String {
        let all: Vec<&ShardMetrics> = self.metrics.iter().map(|m| &**m).collect();
        let (queued_bytes, queued_bytes_peak) = self.mesh.budget().queued_bytes();
        let mesh = crate::metrics::MeshFigures {
            queued_bytes,
            queued_bytes_peak,
        };
        crate::metrics::render_prometheus(&all, mesh)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::mesh::{mesh, InboxRx};

    /// A control handle over two shards, with their inboxes.
    fn two_shards() -> (MeshControl, Vec<InboxRx>) {
        let (mesh, rxs) = mesh(2, 1 << 20);
        let metrics = (0..2).map(|_| Arc::default()).collect();
        (MeshControl::new(mesh, metrics), rxs)
    }

    fn one_member() -> Arc<NetChange> {
        Arc::new(NetChange {
            members_added: vec![(7, 1)],
            ..NetChange::default()
        })
    }

    /// Answers every message waiting in `rx` as a live shard with nobody
    /// active would; returns how many it answered.
    fn answer(rx: &InboxRx) -> usize {
        let mut n = 0;
        while let Some(msg) = rx.try_recv() {
            n += 1;
            match msg {
                ShardMsg::Apply { done, .. } | ShardMsg::Flips { done, .. } => {
                    let _ = done.send(Vec::new());
                }
                ShardMsg::QueryRooms { reply, .. } => {
                    let _ = reply.send(vec![7]);
                }
                ShardMsg::QueryRoom { reply, .. } => {
                    let _ = reply.send(RoomLive::default());
                }
                ShardMsg::QueryUser { reply, .. } => {
                    let _ = reply.send(UserLive::default());
                }
                _ => {}
            }
        }
        n
    }

    fn block_on<T>(f: BoxFuture<T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn every_shard_acknowledging_is_success() {
        let (control, rxs) = two_shards();
        let applying = control.apply(one_member());
        assert_eq!(rxs.iter().map(answer).sum::<usize>(), 2);
        assert!(block_on(applying).is_ok());
        let rooms = control.user_rooms(1);
        assert_eq!(rxs.iter().map(answer).sum::<usize>(), 2 + 2, "+ RoundDone");
        assert_eq!(block_on(rooms), Ok(vec![7, 7]));
    }

    #[test]
    fn a_shard_that_is_gone_fails_the_change_and_the_queries() {
        let (control, mut rxs) = two_shards();
        // Shard 1's thread ended: the mesh refuses messages to it.
        drop(rxs.pop());
        let applying = control.apply(one_member());
        assert_eq!(answer(&rxs[0]), 1);
        assert_eq!(block_on(applying).err(), Some(ShardGone(1)));
        // The live shard is told the round is over.
        assert_eq!(answer(&rxs[0]), 1, "RoundDone");

        // A user and a room homed on the shard that is gone.
        let user = (1..).find(|&u| route::user_home(u, 2) == 1).unwrap();
        let chat = (1..).find(|&c| route::room_home(c, 2) == 1).unwrap();
        let rooms = control.user_rooms(user);
        let (live, room) = (control.user_live(user), control.room_live(chat));
        answer(&rxs[0]);
        assert_eq!(block_on(rooms), Err(ShardGone(1)));
        assert_eq!(block_on(live), Err(ShardGone(1)));
        assert_eq!(block_on(room), Err(ShardGone(1)));
    }

    #[test]
    fn a_shard_that_drops_the_acknowledgement_fails_the_change() {
        let (control, rxs) = two_shards();
        let applying = control.apply(one_member());
        answer(&rxs[0]);
        // Shard 1 took the message and ended without answering.
        assert!(matches!(rxs[1].try_recv(), Some(ShardMsg::Apply { .. })));
        assert_eq!(block_on(applying).err(), Some(ShardGone(1)));
    }
}
