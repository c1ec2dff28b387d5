//! The chatd service on a shard: commands from this shard's chatd
//! connections, and the rooms this shard is home to.
//!
//! A command is decoded on the connection's shard and, when it concerns a
//! room, forwarded to the room's home shard. An OP_RTMSG is turned into
//! its delivery right there, in the read buffer (the two layouts differ
//! only in the sender fields), frozen into a `Bytes` and shared by
//! reference with every recipient: the payload is never copied.

use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use chatd_proto::chatd::{self as wire, Request};
use chatd_proto::{DecodeError, ErrorCode, Limits};

use super::conn;
use super::input::{Consumed, Input, Sender, ServiceInput};
use super::msg::{ClusterIn, ConnRef, Notice, ShardMsg};
use super::{route, Shard, State};
use crate::cluster::link::NodeMsg;
use crate::core::room::{ClusterEvent, NodeSlot, RoomOutput};
use crate::ids::{ChatId, ClientId, Service, UserId};
use crate::metrics;
use crate::net::outbuf::Flush;

/// chatd's side of the input path ([`super::input`]): its own commands
/// are decoded on the connection's shard and, as each concerns a room,
/// forwarded to the room's home shard.
pub struct ChatdInput;

/// chatd's own commands, as the input path hands them over (the payload of
/// an `OP_RTMSG` stays in the read buffer, which becomes its delivery).
#[derive(Clone, Copy, Debug)]
pub enum Command {
    /// `OP_JOIN`.
    Join {
        /// The room.
        chatid: ChatId,
    },
    /// `OP_LEAVE`.
    Leave {
        /// The room.
        chatid: ChatId,
    },
    /// `OP_IN_CALL`.
    InCall {
        /// The room.
        chatid: ChatId,
        /// Heartbeat (true) or "left the call" (false).
        in_call: bool,
    },
    /// `OP_RTMSG`.
    RtMsg {
        /// The room.
        chatid: ChatId,
        /// 0 = every user in the room.
        to_user: UserId,
        /// 0 = every connection of the receiver(s).
        to_client: ClientId,
    },
}

impl ServiceInput for ChatdInput {
    const SERVICE: Service = Service::Chatd;
    const OP_HELLO: u8 = wire::OP_HELLO;
    type Request<'a> = Request<'a>;
    type Hello = ();
    type Command = Command;

    fn decode<'a>(
        buf: &'a [u8],
        limits: &Limits,
    ) -> Result<Option<(Request<'a>, usize)>, DecodeError> {
        wire::decode_request(buf, limits)
    }

    fn opcode(req: &Request<'_>) -> u8 {
        req.opcode()
    }

    fn chatid(req: &Request<'_>) -> u64 {
        req.chatid()
    }

    fn input<'a>(req: Self::Request<'a>) -> Input<'a, (), Command> {
        match req {
            Request::Keepalive => Input::Keepalive,
            Request::Auth { token } => Input::Auth { token },
            Request::Hello { version } => Input::Hello { version, hello: () },
            Request::Join { chatid } => Input::Command(Command::Join { chatid }),
            Request::Leave { chatid } => Input::Command(Command::Leave { chatid }),
            Request::InCall { chatid, in_call } => {
                Input::Command(Command::InCall { chatid, in_call })
            }
            Request::RtMsg {
                chatid,
                receiver_userid,
                receiver_clientid,
                ..
            } => Input::Command(Command::RtMsg {
                chatid,
                to_user: receiver_userid,
                to_client: receiver_clientid,
            }),
        }
    }

    fn rated(cmd: &Command) -> bool {
        matches!(cmd, Command::RtMsg { .. })
    }

    /// An OP_RTMSG waits while its room's home shard (or, past the hard
    /// limit, any shard) has its queue full (see [`super::budget`]).
    fn waits_for(shard: &Shard, cmd: &Command) -> Option<usize> {
        match *cmd {
            Command::RtMsg { chatid, .. } => {
                let home = route::room_home(chatid, shard.shards());
                shard.shared.mesh.budget().full_for(home, shard.id)
            }
            _ => None,
        }
    }

    /// Every chatd command concerns one room, answered by its home.
    fn home(shard: &Shard, _from: Sender, cmd: &Command) -> usize {
        let (Command::Join { chatid }
        | Command::Leave { chatid }
        | Command::InCall { chatid, .. }
        | Command::RtMsg { chatid, .. }) = *cmd;
        route::room_home(chatid, shard.shards())
    }

    fn refuse(cmd: &Command) -> Option<ErrorCode> {
        match *cmd {
            Command::RtMsg {
                to_user: 0,
                to_client,
                ..
            } if to_client != 0 => Some(ErrorCode::BadAddress),
            _ => None,
        }
    }

    /// Gives the connection its client id and answers `OP_HELLO` with it.
    fn hello(shard: &Shard, st: &mut State, c: ConnRef, _from: Sender, _hello: ()) {
        let id = shard.shared.client_ids.allocate();
        if let Some(cn) = st.conn(c) {
            cn.client = id;
        }
        let frame = st
            .arena
            .frame(wire::HELLO_REPLY_LEN, |b| wire::encode_hello_reply(id, b));
        shard.metrics.command_out(Service::Chatd, wire::OP_HELLO, 1);
        conn::push_frame(shard, st, c, frame);
    }

    fn command(
        shard: &Shard,
        st: &mut State,
        c: ConnRef,
        from: Sender,
        cmd: Command,
        buf: &mut BytesMut,
        used: usize,
    ) -> Consumed {
        match cmd {
            Command::Join { chatid } => {
                let over_limit = st.conn(c).is_some_and(|cn| {
                    cn.joined.len() >= shard.shared.config.max_rooms_per_conn
                        && !cn.joined.contains(&chatid)
                });
                // 0 is never a room, so nobody is its member.
                let refused = if chatid == 0 {
                    Some(ErrorCode::NotMember)
                } else if over_limit {
                    Some(ErrorCode::TooManyRooms)
                } else {
                    None
                };
                if let Some(code) = refused {
                    // Through the room's home, behind its answers to the
                    // commands before (see `ShardMsg::Refused`).
                    let notice = Notice::Error {
                        code,
                        opcode: wire::OP_JOIN,
                        id: chatid,
                    };
                    let home = Self::home(shard, from, &cmd);
                    shard.send(home, ShardMsg::Refused { conn: c, notice });
                } else {
                    // Counted now, not when the home shard confirms: joins
                    // pipelined in one read would all pass the check above
                    // before the first confirmation came back.
                    if let Some(cn) = st.conn(c) {
                        if !cn.joined.contains(&chatid) {
                            cn.joined.push(chatid);
                        }
                    }
                    let home = route::room_home(chatid, shard.shards());
                    shard.send(
                        home,
                        ShardMsg::Join {
                            chat: chatid,
                            conn: c,
                            user: from.user,
                            client: from.client,
                        },
                    );
                }
            }
            Command::Leave { chatid } => {
                let home = route::room_home(chatid, shard.shards());
                shard.send(
                    home,
                    ShardMsg::Leave {
                        chat: chatid,
                        conn: c,
                    },
                );
            }
            Command::InCall { chatid, in_call } => {
                let home = route::room_home(chatid, shard.shards());
                shard.send(
                    home,
                    ShardMsg::InCall {
                        chat: chatid,
                        conn: c,
                        in_call,
                    },
                );
            }
            Command::RtMsg {
                chatid,
                to_user,
                to_client,
            } => {
                // The delivery is the received frame with the sender
                // written over the receiver: built once, in place.
                let mut frame = buf.split_to(used);
                wire::rewrite_rtmsg_for_delivery(&mut frame, from.user, from.client);
                let home = route::room_home(chatid, shard.shards());
                shard.send(
                    home,
                    ShardMsg::RtMsg {
                        chat: chatid,
                        sender: c,
                        to_user,
                        to_client,
                        frame: frame.freeze(),
                    },
                );
                return Consumed::Taken;
            }
        }
        Consumed::Left
    }
}

/// Handles a message for a room homed on this shard.
pub fn handle_room_msg(shard: &Shard, msg: ShardMsg) {
    let mut out = Vec::new();
    let mut st = shard.state.borrow_mut();
    match msg {
        ShardMsg::Join {
            chat,
            conn,
            user,
            client,
        } => {
            let member = st.relations.is_member(chat, user);
            st.rooms.join(chat, conn, user, client, member, &mut out)
        }
        ShardMsg::Leave { chat, conn } => st.rooms.leave(chat, conn, &mut out),
        ShardMsg::InCall {
            chat,
            conn,
            in_call,
        } => match st
            .rooms
            .in_call(chat, conn, in_call, shard.shared.now_ms(), &mut out)
        {
            Ok(()) => {
                if in_call {
                    shard.metrics.call_heartbeats.fetch_add(1, Relaxed);
                }
            }
            Err(_) => {
                drop(st);
                let notice = Notice::Error {
                    code: ErrorCode::NotJoined,
                    opcode: wire::OP_IN_CALL,
                    id: chat,
                };
                return conn::notify(shard, conn, notice);
            }
        },
        ShardMsg::RtMsg {
            chat,
            sender,
            to_user,
            to_client,
            frame,
        } => {
            #[cfg(debug_assertions)]
            if let Some((room, micros)) = crate::debug_hooks::slow_room() {
                if room == chat {
                    std::thread::sleep(std::time::Duration::from_micros(micros));
                }
            }
            // A reused list: no allocation per message.
            let mut recipients = shard.take_conn_list();
            let res = st
                .rooms
                .recipients(chat, sender, to_user, to_client, &mut recipients);
            let nodes = st.rooms.remote_nodes(chat);
            // Only a room some other node is in pays for the list.
            let nodes = (!nodes.is_empty()).then(|| nodes.to_vec());
            drop(st);
            if res.is_err() {
                let notice = Notice::Error {
                    code: ErrorCode::NotJoined,
                    opcode: wire::OP_RTMSG,
                    id: chat,
                };
                shard.give_conn_list(recipients);
                return conn::notify(shard, sender, notice);
            }
            if let Some(nodes) = nodes {
                // Other nodes have joined connections: the bridge
                // publishes to each of them (docs/cluster.md).
                if let Some(link) = &shard.shared.cluster {
                    shard.metrics.rtmsg_to_cluster.fetch_add(1, Relaxed);
                    let msg = NodeMsg::RtMsg {
                        chat,
                        to_user,
                        to_client,
                        frame: frame.clone(),
                    };
                    link.send_to(nodes, msg);
                }
            }
            let m = &shard.metrics;
            metrics::add(&m.rtmsg_received, 1);
            m.fanout.observe(recipients.len() as u64);
            if recipients.is_empty() {
                metrics::add(&m.rtmsg_dropped, 1);
            } else {
                metrics::add(&m.rtmsg_deliveries, recipients.len() as u64);
                m.command_out(Service::Chatd, wire::OP_RTMSG, recipients.len() as u64);
                shard.deliver(&frame, &recipients, Flush::Now);
            }
            shard.give_conn_list(recipients);
            return;
        }
        ShardMsg::ConnGone { conn, chats } => st.rooms.disconnect(conn, &chats, &mut out),
        _ => {}
    }
    drop(st);
    apply_room_outputs(shard, out);
}

/// Drops call participants whose heartbeats stopped.
pub fn poll_call_timeouts(shard: &Shard, now: u64) {
    let mut out = Vec::new();
    shard.state.borrow_mut().rooms.poll_timeouts(now, &mut out);
    apply_room_outputs(shard, out);
}

/// Cluster mode: what the other nodes must hear about rooms homed here
/// (this node's interest and call users), to the bridge.
fn tell_cluster(shard: &Shard) {
    let Some(link) = &shard.shared.cluster else {
        return;
    };
    let events = shard.state.borrow_mut().rooms.take_cluster_events();
    for e in events {
        match e {
            ClusterEvent::Interest { chat, on } => link.send(NodeMsg::Interest { chat, on }),
            ClusterEvent::CallUsers { chat } => {
                let st = shard.state.borrow();
                // Only interested nodes keep them; a node that becomes
                // interested later is sent them then.
                if !st.rooms.remote_nodes(chat).is_empty() {
                    let users = st.rooms.local_call_users(chat);
                    link.send(NodeMsg::Calls { chat, users });
                }
            }
        }
    }
}

/// Handles what the cluster bridge says about a room homed here.
pub fn handle_cluster_room(shard: &Shard, msg: ClusterIn) {
    let mut out = Vec::new();
    match msg {
        ClusterIn::RtMsg {
            chat,
            to_user,
            to_client,
            frame,
        } => {
            shard.metrics.rtmsg_from_cluster.fetch_add(1, Relaxed);
            let mut recipients = shard.take_conn_list();
            shard
                .state
                .borrow()
                .rooms
                .remote_recipients(chat, to_user, to_client, &mut recipients);
            if !recipients.is_empty() {
                let m = &shard.metrics;
                m.rtmsg_deliveries
                    .fetch_add(recipients.len() as u64, Relaxed);
                m.command_out(Service::Chatd, wire::OP_RTMSG, recipients.len() as u64);
                shard.deliver(&frame, &recipients, Flush::Now);
            }
            shard.give_conn_list(recipients);
            return;
        }
        ClusterIn::Interest { chat, node, on } => {
            let (news, users) = {
                let mut st = shard.state.borrow_mut();
                let news = st.rooms.set_remote_interest(chat, node, on, &mut out);
                (news, st.rooms.local_call_users(chat))
            };
            // A newly interested node learns this node's call users.
            if news && !users.is_empty() {
                if let Some(link) = &shard.shared.cluster {
                    link.send(NodeMsg::Calls { chat, users });
                }
            }
        }
        ClusterIn::Calls { chat, node, users } => {
            shard
                .state
                .borrow_mut()
                .rooms
                .set_remote_calls(chat, node, users, &mut out);
        }
        _ => return,
    }
    apply_room_outputs(shard, out);
}

/// Cluster mode: node `node` is gone; its interest and call users in the
/// rooms homed here are dropped (flags recomputed and pushed).
pub fn drop_node_rooms(shard: &Shard, node: NodeSlot) {
    let mut out = Vec::new();
    shard.state.borrow_mut().rooms.drop_node(node, &mut out);
    apply_room_outputs(shard, out);
}

/// Cluster mode: tells the bridge this node's interest and call users in
/// every room homed here (for a node that joined or reconnected).
pub fn snapshot_rooms(shard: &Shard) {
    let Some(link) = &shard.shared.cluster else {
        return;
    };
    let st = shard.state.borrow();
    for chat in st.rooms.local_rooms() {
        link.send(NodeMsg::Interest { chat, on: true });
        let users = st.rooms.local_call_users(chat);
        if !users.is_empty() {
            link.send(NodeMsg::Calls { chat, users });
        }
    }
}

/// Sends what the room state machine decided.
pub fn apply_room_outputs(shard: &Shard, out: Vec<RoomOutput<ConnRef>>) {
    tell_cluster(shard);
    for o in out {
        match o {
            RoomOutput::Joined {
                conn,
                chat,
                in_call,
            } => conn::notify(shard, conn, Notice::Joined { chat, in_call }),
            RoomOutput::NotMember { conn, chat } => {
                let notice = Notice::Error {
                    code: ErrorCode::NotMember,
                    opcode: wire::OP_JOIN,
                    id: chat,
                };
                conn::notify(shard, conn, notice)
            }
            RoomOutput::Left { conn, chat } => conn::notify(shard, conn, Notice::Left { chat }),
            RoomOutput::FlagChanged { chat, in_call } => {
                let delta = if in_call { 1 } else { -1 };
                shard.metrics.rooms_in_call.fetch_add(delta, Relaxed);
                let (frame, joined) = {
                    let mut st = shard.state.borrow_mut();
                    let frame = st.arena.frame(wire::IN_CALL_LEN, |b| {
                        wire::encode_in_call(chat, in_call, b)
                    });
                    let mut joined = shard.take_conn_list();
                    joined.extend(st.rooms.joined(chat));
                    (frame, joined)
                };
                shard
                    .metrics
                    .command_out(Service::Chatd, wire::OP_IN_CALL, joined.len() as u64);
                shard.deliver(&frame, &joined, Flush::Now);
                shard.give_conn_list(joined);
            }
        }
    }
}
