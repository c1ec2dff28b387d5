//! The chatd service on a shard: commands from this shard's chatd
//! connections, and the rooms this shard is home to.
//!
//! A command is decoded on the connection's shard and, when it concerns a
//! room, forwarded to the room's home shard. An OP_RTMSG is turned into
//! its delivery right there, in the read buffer (the two layouts differ
//! only in the sender fields), frozen into a `Bytes` and shared by
//! reference with every recipient: the payload is never copied.

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, BytesMut};

use super::conn::{self, Phase};
use super::msg::{ConnRef, Notice, ShardMsg};
use super::{route, Shard};
use crate::core::room::RoomOutput;
use crate::ids::Service;
use crate::limits;
use crate::net::outbuf::Flush;
use crate::protocol::chatd::{self as wire, Request};
use crate::protocol::ErrorCode;

/// Decodes and handles every complete command in `buf` from chatd
/// connection `c`, leaving a partial one in place.
pub fn on_bytes(shard: &Shard, c: ConnRef, buf: &mut BytesMut) {
    loop {
        let mut st = shard.state.borrow_mut();
        let st = &mut *st;
        let Some(cn) = conn::get(st, c) else {
            buf.clear();
            return;
        };
        let (phase, user, client) = (cn.phase, cn.user, cn.client);
        if phase == Phase::Closing {
            buf.clear();
            return;
        }
        let (req, used) = match wire::decode_request(buf, &shard.shared.limits) {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                let (code, opcode) = conn::login_error_for(phase, &e, wire::OP_HELLO);
                conn::send_error(shard, st, c, code, opcode, e.chatid());
                buf.clear();
                return;
            }
        };
        let opcode = req.opcode();
        shard.metrics.command_in(Service::Chatd, opcode);
        match (phase, req) {
            (Phase::Auth, Request::Auth { token }) => conn::on_auth(shard, st, c, token),
            (Phase::Hello, Request::Hello { version }) => {
                if version == 0 || version > limits::PROTOCOL_VERSION {
                    conn::send_error(shard, st, c, ErrorCode::BadVersion, opcode, 0);
                } else if conn::admit(shard, st, c, opcode) {
                    let id = shard.shared.client_ids.allocate();
                    if let Some(cn) = conn::get(st, c) {
                        cn.client = id;
                    }
                    let frame = st.arena.frame(5, |b| wire::encode_hello_reply(id, b));
                    shard.metrics.command_out(Service::Chatd, wire::OP_HELLO, 1);
                    conn::push_frame(shard, st, c, frame);
                }
            }
            (Phase::Auth | Phase::Hello, req) => {
                let id = req.chatid();
                conn::send_error(shard, st, c, ErrorCode::NotAuthenticated, opcode, id);
            }
            (_, Request::Keepalive) => conn::keepalive(shard, st, c),
            // A second login on a logged-in connection is a protocol error.
            (_, Request::Auth { .. } | Request::Hello { .. }) => {
                conn::send_error(shard, st, c, ErrorCode::BadCommand, opcode, 0);
            }
            (_, Request::Join { chatid }) => {
                let over_limit = conn::get(st, c).is_some_and(|cn| {
                    cn.joined.len() >= shard.shared.config.max_rooms_per_conn
                        && !cn.joined.contains(&chatid)
                });
                if chatid == 0 {
                    // 0 is never a room, so nobody is its member.
                    conn::send_error(shard, st, c, ErrorCode::NotMember, opcode, 0);
                } else if over_limit {
                    conn::send_error(shard, st, c, ErrorCode::TooManyRooms, opcode, chatid);
                } else {
                    let home = route::room_home(chatid, shard.shards());
                    shard.send(
                        home,
                        ShardMsg::Join {
                            chat: chatid,
                            conn: c,
                            user,
                            client,
                        },
                    );
                }
            }
            (_, Request::Leave { chatid }) => {
                let home = route::room_home(chatid, shard.shards());
                shard.send(
                    home,
                    ShardMsg::Leave {
                        chat: chatid,
                        conn: c,
                    },
                );
            }
            (_, Request::InCall { chatid, in_call }) => {
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
            (
                _,
                Request::RtMsg {
                    chatid,
                    receiver_userid,
                    receiver_clientid,
                    ..
                },
            ) => {
                let allowed = conn::get(st, c).is_some_and(|cn| {
                    let now = cn.last_rx_ms;
                    cn.bucket.allow(now)
                });
                if receiver_userid == 0 && receiver_clientid != 0 {
                    conn::send_error(shard, st, c, ErrorCode::BadAddress, opcode, chatid);
                } else if !allowed {
                    conn::send_error(shard, st, c, ErrorCode::RateLimited, opcode, chatid);
                } else {
                    // The delivery is the received frame with the sender
                    // written over the receiver: built once, in place.
                    let mut frame = buf.split_to(used);
                    wire::rewrite_rtmsg_for_delivery(&mut frame, user, client);
                    let home = route::room_home(chatid, shard.shards());
                    shard.send(
                        home,
                        ShardMsg::RtMsg {
                            chat: chatid,
                            sender: c,
                            to_user: receiver_userid,
                            to_client: receiver_clientid,
                            frame: frame.freeze(),
                        },
                    );
                    continue;
                }
            }
        }
        buf.advance(used);
    }
}

/// Handles a message for a room homed on this shard.
pub fn handle_room_msg(shard: &Shard, msg: ShardMsg) {
    let now = shard.shared.now_ms();
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
        } => match st.rooms.in_call(chat, conn, in_call, now, &mut out) {
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
                return notify(shard, conn, notice);
            }
        },
        ShardMsg::RtMsg {
            chat,
            sender,
            to_user,
            to_client,
            frame,
        } => {
            // A reused list: no allocation per message.
            let mut recipients = shard.take_conn_list();
            let res = st
                .rooms
                .recipients(chat, sender, to_user, to_client, &mut recipients);
            drop(st);
            if res.is_err() {
                let notice = Notice::Error {
                    code: ErrorCode::NotJoined,
                    opcode: wire::OP_RTMSG,
                    id: chat,
                };
                shard.give_conn_list(recipients);
                return notify(shard, sender, notice);
            }
            let m = &shard.metrics;
            m.rtmsg_received.fetch_add(1, Relaxed);
            m.fanout.observe(recipients.len() as u64);
            if recipients.is_empty() {
                m.rtmsg_dropped.fetch_add(1, Relaxed);
            } else {
                m.rtmsg_deliveries
                    .fetch_add(recipients.len() as u64, Relaxed);
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

/// Tells one connection something, wherever it lives: directly when it is
/// on this shard (in order with frames delivered directly), else on the
/// mesh (in order with frames delivered on the mesh).
pub fn notify(shard: &Shard, c: ConnRef, notice: Notice) {
    if c.shard as usize == shard.id {
        conn::apply_notice(shard, c, notice);
    } else {
        shard.send(c.shard as usize, ShardMsg::Notice { conn: c, notice });
    }
}

/// Sends what the room state machine decided.
pub fn apply_room_outputs(shard: &Shard, out: Vec<RoomOutput<ConnRef>>) {
    for o in out {
        match o {
            RoomOutput::Joined {
                conn,
                chat,
                in_call,
            } => notify(shard, conn, Notice::Joined { chat, in_call }),
            RoomOutput::NotMember { conn, chat } => {
                let notice = Notice::Error {
                    code: ErrorCode::NotMember,
                    opcode: wire::OP_JOIN,
                    id: chat,
                };
                notify(shard, conn, notice)
            }
            RoomOutput::Left { conn, chat } => notify(shard, conn, Notice::Left { chat }),
            RoomOutput::FlagChanged { chat, in_call } => {
                let delta = if in_call { 1 } else { -1 };
                shard.metrics.rooms_in_call.fetch_add(delta, Relaxed);
                let (frame, joined) = {
                    let mut st = shard.state.borrow_mut();
                    let frame = st
                        .arena
                        .frame(10, |b| wire::encode_in_call(chat, in_call, b));
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
