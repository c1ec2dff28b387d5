//! The admin thread's handle on the shards ([`MeshControl`]) and the
//! shard side of its messages: relation effects and live-state queries.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::msg::ShardMsg;
use super::{chatd, route, statusd, Shard, Shared};
use crate::admin::control::{BoxFuture, RoomLive, ShardControl, UserLive};
use crate::ids::{ChatId, Service, UserId};
use crate::store::effect::{RelationEffect, RouteKey};

/// [`ShardControl`] over the mesh.
pub struct MeshControl {
    shared: Arc<Shared>,
}

impl MeshControl {
    /// A control handle for the running shards.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl ShardControl for MeshControl {
    fn apply(&self, effects: Vec<RelationEffect>) -> BoxFuture<()> {
        let shards = self.shared.mesh.shards();
        let mut by_shard: Vec<Vec<RelationEffect>> = vec![Vec::new(); shards];
        for e in effects {
            let to = match e.route_key() {
                RouteKey::Room(chat) => route::room_home(chat, shards),
                RouteKey::User(user) => route::user_home(user, shards),
            };
            by_shard[to].push(e);
        }
        let mut waits = Vec::new();
        for (to, effects) in by_shard.into_iter().enumerate() {
            if effects.is_empty() {
                continue;
            }
            let (done, wait) = oneshot::channel();
            self.shared
                .mesh
                .send(to, ShardMsg::Effects { effects, done });
            waits.push(wait);
        }
        let mesh = self.shared.mesh.clone();
        Box::pin(async move {
            // Round 1: every shard applies its effects and reports the
            // pairs (user, watcher) that became visible there.
            let mut pulls: Vec<Vec<(UserId, UserId)>> = vec![Vec::new(); shards];
            for w in waits {
                // An error means the shard is gone (shutting down).
                for (user, watcher) in w.await.unwrap_or_default() {
                    // `user`'s clients now need `watcher`'s presence,
                    // which `watcher`'s home shard holds.
                    pulls[route::user_home(watcher, shards)].push((user, watcher));
                }
            }
            // Round 2, once both directions of every pair are applied: the
            // presence of each newly visible user is pulled to its new
            // watchers' clients. Doing it after round 1 is what makes a
            // login racing the change converge (protocol 5.4).
            for (to, pairs) in pulls.into_iter().enumerate() {
                if !pairs.is_empty() {
                    mesh.send(to, ShardMsg::PresPull { pairs });
                }
            }
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

    fn metrics_text(&self) -> String {
        let all: Vec<&crate::metrics::ShardMetrics> =
            self.shared.metrics.iter().map(|m| &**m).collect();
        crate::metrics::render_prometheus(&all)
    }
}

/// Handles a message from the admin thread.
pub fn handle_admin_msg(shard: &Shard, msg: ShardMsg) {
    match msg {
        ShardMsg::Effects { effects, done } => {
            let mut visible = Vec::new();
            for e in effects {
                match e {
                    RelationEffect::MemberAdded { chat, user } => {
                        shard.state.borrow_mut().rooms.add_member(chat, user)
                    }
                    RelationEffect::MemberRemoved { chat, user } => {
                        let mut out = Vec::new();
                        shard
                            .state
                            .borrow_mut()
                            .rooms
                            .remove_member(chat, user, &mut out);
                        chatd::apply_room_outputs(shard, out);
                    }
                    RelationEffect::Visibility {
                        user,
                        watcher,
                        delta,
                    } => {
                        if statusd::visibility(shard, user, watcher, delta) {
                            visible.push((user, watcher));
                        }
                    }
                }
            }
            // Applied: a command a client sends after the admin call
            // answered is handled after this. Notices to other shards are
            // on their way (after the current handler).
            let _ = done.send(visible);
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
