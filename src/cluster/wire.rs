//! What nodes send each other over NATS, and the relation changes in
//! JetStream: sans-IO encoders and decoders (docs/cluster.md, "Wire").
//!
//! Every node message starts with its kind, the sender's slot and the
//! sender's incarnation (a random number per process start), so a
//! receiver can tell a restarted node from the one it replaced. Integers
//! are big-endian, as on the client wire.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::core::room::NodeSlot;
use crate::ids::{ChatId, ClientId, UserId};
use crate::store::Op;

/// A node message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its layout.
    #[error("truncated")]
    Truncated,
    /// An unknown kind or operation tag.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// A relation change's part numbers make no sense.
    #[error("bad part {0} of {1}")]
    BadPart(u32, u32),
}

/// Who sent a node message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct From {
    pub slot: NodeSlot,
    pub incarnation: u64,
}

/// A message between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMsg {
    /// I am alive (every `--node-timeout-ms` / 4).
    Heartbeat,
    /// I (re)connected: forget what I told you before; everyone, send me
    /// what you hold. My own state follows this message.
    Hello,
    /// I am draining: drop my clients now.
    Bye,
    /// Everyone, send what you hold (I met a node I had dropped).
    Sync,
    /// I have joined connections to `chat` now (`on`) or no more.
    Interest { chat: ChatId, on: bool },
    /// A client of mine sent this `OP_RTMSG` delivery frame to `chat`.
    RtMsg {
        chat: ChatId,
        to_user: UserId,
        to_client: ClientId,
        frame: Bytes,
    },
    /// My users in `chat`'s call are now `users`.
    Calls { chat: ChatId, users: Vec<UserId> },
    /// My value for `user` (the maximum of my clients', 0 with none) is
    /// `value`; `user_set`: a client of mine set it with MSB 0, so every
    /// client of the user on every node takes it (5.2).
    Pres {
        user: UserId,
        value: u8,
        user_set: bool,
    },
}

const HEARTBEAT: u8 = 1;
const HELLO: u8 = 2;
const BYE: u8 = 3;
const SYNC: u8 = 4;
const INTEREST: u8 = 5;
const RTMSG: u8 = 6;
const CALLS: u8 = 7;
const PRES: u8 = 8;

/// Encodes `msg` from `from`.
pub fn encode(from: From, msg: &NodeMsg) -> Bytes {
    let mut b = BytesMut::with_capacity(32);
    let kind = match msg {
        NodeMsg::Heartbeat => HEARTBEAT,
        NodeMsg::Hello => HELLO,
        NodeMsg::Bye => BYE,
        NodeMsg::Sync => SYNC,
        NodeMsg::Interest { .. } => INTEREST,
        NodeMsg::RtMsg { .. } => RTMSG,
        NodeMsg::Calls { .. } => CALLS,
        NodeMsg::Pres { .. } => PRES,
    };
    b.put_u8(kind);
    b.put_u16(from.slot);
    b.put_u64(from.incarnation);
    match msg {
        NodeMsg::Heartbeat | NodeMsg::Hello | NodeMsg::Bye | NodeMsg::Sync => {}
        NodeMsg::Interest { chat, on } => {
            b.put_u64(*chat);
            b.put_u8(u8::from(*on));
        }
        NodeMsg::RtMsg {
            chat,
            to_user,
            to_client,
            frame,
        } => {
            b.reserve(20 + frame.len());
            b.put_u64(*chat);
            b.put_u64(*to_user);
            b.put_u32(*to_client);
            b.put_slice(frame);
        }
        NodeMsg::Calls { chat, users } => {
            b.put_u64(*chat);
            put_ids(&mut b, users);
        }
        NodeMsg::Pres {
            user,
            value,
            user_set,
        } => {
            b.put_u64(*user);
            b.put_u8(*value);
            b.put_u8(u8::from(*user_set));
        }
    }
    b.freeze()
}

/// Decodes a node message (an `RtMsg`'s frame is a slice of `data`, not a
/// copy).
pub fn decode(data: &Bytes) -> Result<(From, NodeMsg), WireError> {
    let mut r = data.clone();
    need(&r, 11)?;
    let kind = r.get_u8();
    let from = From {
        slot: r.get_u16(),
        incarnation: r.get_u64(),
    };
    let msg = match kind {
        HEARTBEAT => NodeMsg::Heartbeat,
        HELLO => NodeMsg::Hello,
        BYE => NodeMsg::Bye,
        SYNC => NodeMsg::Sync,
        INTEREST => {
            need(&r, 9)?;
            NodeMsg::Interest {
                chat: r.get_u64(),
                on: r.get_u8() != 0,
            }
        }
        RTMSG => {
            need(&r, 20)?;
            NodeMsg::RtMsg {
                chat: r.get_u64(),
                to_user: r.get_u64(),
                to_client: r.get_u32(),
                frame: r,
            }
        }
        CALLS => {
            need(&r, 8)?;
            let chat = r.get_u64();
            NodeMsg::Calls {
                chat,
                users: get_ids(&mut r)?,
            }
        }
        PRES => {
            need(&r, 10)?;
            NodeMsg::Pres {
                user: r.get_u64(),
                value: r.get_u8(),
                user_set: r.get_u8() != 0,
            }
        }
        other => return Err(WireError::UnknownTag(other)),
    };
    Ok((from, msg))
}

fn need(r: &impl Buf, n: usize) -> Result<(), WireError> {
    if r.remaining() < n {
        Err(WireError::Truncated)
    } else {
        Ok(())
    }
}

fn put_ids(b: &mut BytesMut, ids: &[u64]) {
    b.reserve(4 + 8 * ids.len());
    b.put_u32(ids.len() as u32);
    for &id in ids {
        b.put_u64(id);
    }
}

fn get_ids(r: &mut impl Buf) -> Result<Vec<u64>, WireError> {
    need(r, 4)?;
    let n = r.get_u32() as usize;
    need(r, n.saturating_mul(8))?;
    Ok((0..n).map(|_| r.get_u64()).collect())
}

// ---- live-state queries (the admin API's GETs) ---------------------------

/// A question every node answers about its own clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Room(ChatId),
    User(UserId),
}

/// One node's answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its joined connections and its users in the call.
    Room {
        joined: u64,
        call_users: Vec<UserId>,
    },
    /// Its statusd and chatd clients of the user.
    User { statusd: u64, chatd: u64 },
}

/// Encodes a query.
pub fn encode_query(q: Query) -> Bytes {
    let mut b = BytesMut::with_capacity(9);
    match q {
        Query::Room(chat) => {
            b.put_u8(1);
            b.put_u64(chat);
        }
        Query::User(user) => {
            b.put_u8(2);
            b.put_u64(user);
        }
    }
    b.freeze()
}

/// Decodes a query.
pub fn decode_query(data: &[u8]) -> Result<Query, WireError> {
    let mut r = data;
    need(&r, 9)?;
    match r.get_u8() {
        1 => Ok(Query::Room(r.get_u64())),
        2 => Ok(Query::User(r.get_u64())),
        other => Err(WireError::UnknownTag(other)),
    }
}

/// Encodes an answer.
pub fn encode_answer(a: &Answer) -> Bytes {
    let mut b = BytesMut::with_capacity(32);
    match a {
        Answer::Room { joined, call_users } => {
            b.put_u8(1);
            b.put_u64(*joined);
            put_ids(&mut b, call_users);
        }
        Answer::User { statusd, chatd } => {
            b.put_u8(2);
            b.put_u64(*statusd);
            b.put_u64(*chatd);
        }
    }
    b.freeze()
}

/// Decodes an answer.
pub fn decode_answer(data: &[u8]) -> Result<Answer, WireError> {
    let mut r = data;
    need(&r, 9)?;
    match r.get_u8() {
        1 => {
            let joined = r.get_u64();
            Ok(Answer::Room {
                joined,
                call_users: get_ids(&mut r)?,
            })
        }
        2 => {
            let statusd = r.get_u64();
            need(&r, 8)?;
            Ok(Answer::User {
                statusd,
                chatd: r.get_u64(),
            })
        }
        other => Err(WireError::UnknownTag(other)),
    }
}

// ---- relation changes ---------------------------------------------------

const PUT_MEMBER: u8 = 1;
const DELETE_MEMBER: u8 = 2;
const PUT_ROOM: u8 = 3;
const DELETE_ROOM: u8 = 4;
const PUT_CONTACT: u8 = 5;
const DELETE_CONTACT: u8 = 6;
const PUT_CONTACTS: u8 = 7;

/// One admin write's operations, encoded.
pub fn encode_ops(ops: &[Op]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 17 * ops.len());
    b.put_u32(ops.len() as u32);
    for op in ops {
        match op {
            Op::PutMember { chat, user } => {
                b.put_u8(PUT_MEMBER);
                b.put_u64(*chat);
                b.put_u64(*user);
            }
            Op::DeleteMember { chat, user } => {
                b.put_u8(DELETE_MEMBER);
                b.put_u64(*chat);
                b.put_u64(*user);
            }
            Op::PutRoom { chat, members } => {
                b.put_u8(PUT_ROOM);
                b.put_u64(*chat);
                put_ids(&mut b, members);
            }
            Op::DeleteRoom { chat } => {
                b.put_u8(DELETE_ROOM);
                b.put_u64(*chat);
            }
            Op::PutContact { a, b: c } => {
                b.put_u8(PUT_CONTACT);
                b.put_u64(*a);
                b.put_u64(*c);
            }
            Op::DeleteContact { a, b: c } => {
                b.put_u8(DELETE_CONTACT);
                b.put_u64(*a);
                b.put_u64(*c);
            }
            Op::PutContacts { user, contacts } => {
                b.put_u8(PUT_CONTACTS);
                b.put_u64(*user);
                put_ids(&mut b, contacts);
            }
        }
    }
    b.freeze()
}

/// Decodes [`encode_ops`]' output.
pub fn decode_ops(data: &[u8]) -> Result<Vec<Op>, WireError> {
    let mut r = data;
    need(&r, 4)?;
    let n = r.get_u32() as usize;
    let mut ops = Vec::with_capacity(n.min(data.len() / 9));
    for _ in 0..n {
        need(&r, 9)?;
        let tag = r.get_u8();
        let first = r.get_u64();
        let op = match tag {
            DELETE_ROOM => Op::DeleteRoom { chat: first },
            PUT_ROOM => Op::PutRoom {
                chat: first,
                members: get_ids(&mut r)?,
            },
            PUT_CONTACTS => Op::PutContacts {
                user: first,
                contacts: get_ids(&mut r)?,
            },
            PUT_MEMBER | DELETE_MEMBER | PUT_CONTACT | DELETE_CONTACT => {
                need(&r, 8)?;
                let second = r.get_u64();
                match tag {
                    PUT_MEMBER => Op::PutMember {
                        chat: first,
                        user: second,
                    },
                    DELETE_MEMBER => Op::DeleteMember {
                        chat: first,
                        user: second,
                    },
                    PUT_CONTACT => Op::PutContact {
                        a: first,
                        b: second,
                    },
                    _ => Op::DeleteContact {
                        a: first,
                        b: second,
                    },
                }
            }
            other => return Err(WireError::UnknownTag(other)),
        };
        ops.push(op);
    }
    Ok(ops)
}

/// A part of a relation change as stored in the stream: the change's id
/// (unique: the writer's slot and incarnation and a counter), its part
/// number and count, and that slice of the encoded operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub change: [u64; 2],
    pub index: u32,
    pub count: u32,
    pub data: Bytes,
}

/// Splits encoded operations into parts of at most `max` bytes of data.
pub fn split_change(change: [u64; 2], ops: &Bytes, max: usize) -> Vec<Bytes> {
    let max = max.max(1);
    let count = ops.len().div_ceil(max).max(1) as u32;
    (0..count)
        .map(|i| {
            let start = (i as usize * max).min(ops.len());
            let end = (start + max).min(ops.len());
            let mut b = BytesMut::with_capacity(24 + end - start);
            b.put_u64(change[0]);
            b.put_u64(change[1]);
            b.put_u32(i);
            b.put_u32(count);
            b.put_slice(&ops[start..end]);
            b.freeze()
        })
        .collect()
}

/// Reads one stored part.
pub fn decode_part(data: &Bytes) -> Result<Part, WireError> {
    let mut r = data.clone();
    need(&r, 24)?;
    let change = [r.get_u64(), r.get_u64()];
    let index = r.get_u32();
    let count = r.get_u32();
    if count == 0 || index >= count {
        return Err(WireError::BadPart(index, count));
    }
    Ok(Part {
        change,
        index,
        count,
        data: r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_message_reads_back_as_written() {
        let from = From {
            slot: 7,
            incarnation: 0xDEAD_BEEF_0000_0001,
        };
        for msg in [
            NodeMsg::Heartbeat,
            NodeMsg::Hello,
            NodeMsg::Bye,
            NodeMsg::Sync,
            NodeMsg::Interest { chat: 9, on: true },
            NodeMsg::RtMsg {
                chat: 1,
                to_user: 2,
                to_client: 3,
                frame: Bytes::from_static(b"frame bytes"),
            },
            NodeMsg::Calls {
                chat: 4,
                users: vec![5, u64::MAX],
            },
            NodeMsg::Pres {
                user: 6,
                value: 3,
                user_set: true,
            },
        ] {
            let bytes = encode(from, &msg);
            assert_eq!(decode(&bytes), Ok((from, msg.clone())));
            // Every strict prefix of the fixed part is refused, never
            // misread (an RtMsg's frame is the rest of the message).
            let fixed = bytes.len()
                - match &msg {
                    NodeMsg::RtMsg { frame, .. } => frame.len(),
                    _ => 0,
                };
            for cut in 0..fixed {
                assert!(
                    decode(&bytes.slice(..cut)).is_err(),
                    "prefix {cut} of {msg:?}"
                );
            }
        }
        assert_eq!(
            decode(&Bytes::from_static(&[99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(WireError::UnknownTag(99))
        );
    }

    #[test]
    fn queries_and_answers_read_back_as_written() {
        for q in [Query::Room(7), Query::User(u64::MAX)] {
            assert_eq!(decode_query(&encode_query(q)), Ok(q));
        }
        for a in [
            Answer::Room {
                joined: 3,
                call_users: vec![1, 2],
            },
            Answer::User {
                statusd: 4,
                chatd: 5,
            },
        ] {
            let bytes = encode_answer(&a);
            assert_eq!(decode_answer(&bytes), Ok(a));
            assert!(decode_answer(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn operations_split_into_parts_read_back_whole() {
        let ops = vec![
            Op::PutMember { chat: 1, user: 2 },
            Op::DeleteMember { chat: 1, user: 3 },
            Op::PutRoom {
                chat: 4,
                members: (1..500).collect(),
            },
            Op::DeleteRoom { chat: 5 },
            Op::PutContact { a: 6, b: 7 },
            Op::DeleteContact { a: 6, b: 8 },
            Op::PutContacts {
                user: 9,
                contacts: vec![10, 11],
            },
        ];
        let encoded = encode_ops(&ops);
        let parts = split_change([1, 2], &encoded, 100);
        assert!(parts.len() > 1);
        let mut whole = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let part = decode_part(p).unwrap();
            assert_eq!((part.change, part.index as usize), ([1, 2], i));
            assert_eq!(part.count as usize, parts.len());
            whole.extend_from_slice(&part.data);
        }
        assert_eq!(decode_ops(&whole), Ok(ops));
        assert!(decode_ops(&whole[..whole.len() - 1]).is_err());
    }
}
