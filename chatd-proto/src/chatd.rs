//! The chatd command set (protocol section 4): rooms, real-time messages and
//! the in-call flag, in both directions, plus the common `OP_KEEPALIVE`,
//! `OP_AUTH` and `OP_ERROR`. Layouts only; what the server does with a
//! command is the server's business. No I/O.
//!
//! The hot path avoids building values where it can: [`encode_join`] and
//! friends write fixed-size replies directly, and
//! [`rewrite_rtmsg_for_delivery`] turns a received `OP_RTMSG` frame into the
//! one every recipient gets, in place, so fan-out shares one buffer.

use bytes::BufMut;

use crate::limits::MSGLEN_FIELD_MAX;
use crate::wire::{self, need, Reader};
use crate::{DecodeError, Limits, ERROR_LEN, KEEPALIVE_LEN, OP_AUTH, OP_ERROR, OP_KEEPALIVE};

/// `OP_JOIN`, both directions: `chatid(8)`.
pub const OP_JOIN: u8 = 0x01;
/// `OP_LEAVE`, both directions: `chatid(8)`.
pub const OP_LEAVE: u8 = 0x02;
/// `OP_HELLO`: C->S `client_version(2) reserved(2)`, S->C `client_id(4)`.
pub const OP_HELLO: u8 = 0x03;
/// `OP_RTMSG`, both directions: a [`RTMSG_HEADER_LEN`] header, then data.
pub const OP_RTMSG: u8 = 0x04;
/// `OP_IN_CALL`, both directions: `chatid(8) status(1)`.
pub const OP_IN_CALL: u8 = 0x05;

/// Header of `OP_RTMSG` in both directions: `opcode(1) chatid(8) userid(8)
/// clientid(4) msgtype(1) msglen(3)`; `msgdata(msglen)` follows.
pub const RTMSG_HEADER_LEN: usize = 25;
/// Bytes of `OP_JOIN` / `OP_LEAVE`, opcode included.
pub const JOIN_LEN: usize = 9;
/// Bytes of `OP_IN_CALL`, opcode included.
pub const IN_CALL_LEN: usize = 10;
/// Bytes of the C->S `OP_HELLO`, opcode included.
pub const HELLO_REQUEST_LEN: usize = 5;
/// Bytes of the S->C `OP_HELLO`, opcode included.
pub const HELLO_REPLY_LEN: usize = 5;

/// Where the userid/clientid pair sits in an `OP_RTMSG` frame: the only
/// bytes in which the two directions differ.
const RTMSG_ADDRESS: std::ops::Range<usize> = 9..21;

/// A command from a client to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `OP_KEEPALIVE`: answered with `OP_KEEPALIVE`.
    Keepalive,
    /// `OP_AUTH`: the JWT, 1..=4096 bytes.
    Auth {
        /// The token bytes (not checked for UTF-8 here).
        token: &'a [u8],
    },
    /// `OP_HELLO`: the client's protocol version. The 2 reserved bytes are
    /// ignored on decode and written as zero.
    Hello {
        /// `client_version`.
        version: u16,
    },
    /// `OP_JOIN`: subscribe to a room.
    Join {
        /// The room.
        chatid: u64,
    },
    /// `OP_LEAVE`: unsubscribe from a room.
    Leave {
        /// The room.
        chatid: u64,
    },
    /// `OP_RTMSG`: a real-time message to (part of) a room.
    RtMsg {
        /// The room.
        chatid: u64,
        /// 0 = every user in the room.
        receiver_userid: u64,
        /// 0 = every connection of the receiver(s).
        receiver_clientid: u32,
        /// Opaque to the server.
        msgtype: u8,
        /// Opaque to the server; at most the server's limit.
        data: &'a [u8],
    },
    /// `OP_IN_CALL`: call heartbeat (true) or "left the call" (false).
    InCall {
        /// The room.
        chatid: u64,
        /// `status` 1 (true) or 0 (false); other values do not decode.
        in_call: bool,
    },
}

/// A command from the server to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `OP_KEEPALIVE`: the answer to a client's keepalive.
    Keepalive,
    /// `OP_ERROR`, with the raw code byte so that clients can report codes
    /// they do not know ([`crate::ErrorCode::from_u8`] types it).
    Error {
        /// Raw error code.
        code: u8,
        /// Opcode of the command that caused it.
        opcode: u8,
        /// The room concerned, 0 when none.
        id: u64,
    },
    /// `OP_HELLO`: login done; the id the server gave this connection.
    Hello {
        /// Never 0 from a conforming server.
        client_id: u32,
    },
    /// `OP_JOIN`: this connection is subscribed to the room.
    Join {
        /// The room.
        chatid: u64,
    },
    /// `OP_LEAVE`: this connection is no longer subscribed to the room.
    Leave {
        /// The room.
        chatid: u64,
    },
    /// `OP_RTMSG`: a message another connection sent.
    RtMsg {
        /// The room.
        chatid: u64,
        /// Who sent it.
        sender_userid: u64,
        /// From which connection.
        sender_clientid: u32,
        /// As sent.
        msgtype: u8,
        /// As sent.
        data: &'a [u8],
    },
    /// `OP_IN_CALL`: the room's call flag (sent when it changes, and after
    /// every `OP_JOIN` reply).
    InCall {
        /// The room.
        chatid: u64,
        /// At least two distinct users are in the call.
        in_call: bool,
    },
}

impl Request<'_> {
    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Keepalive => OP_KEEPALIVE,
            Request::Auth { .. } => OP_AUTH,
            Request::Hello { .. } => OP_HELLO,
            Request::Join { .. } => OP_JOIN,
            Request::Leave { .. } => OP_LEAVE,
            Request::RtMsg { .. } => OP_RTMSG,
            Request::InCall { .. } => OP_IN_CALL,
        }
    }

    /// The room it concerns (the `id` of an OP_ERROR it causes), 0 when none.
    pub fn chatid(&self) -> u64 {
        match *self {
            Request::Join { chatid }
            | Request::Leave { chatid }
            | Request::RtMsg { chatid, .. }
            | Request::InCall { chatid, .. } => chatid,
            Request::Keepalive | Request::Auth { .. } | Request::Hello { .. } => 0,
        }
    }

    /// Bytes [`encode_request`] writes for it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Keepalive => KEEPALIVE_LEN,
            Request::Auth { token } => crate::auth_len(token),
            Request::Hello { .. } => HELLO_REQUEST_LEN,
            Request::Join { .. } | Request::Leave { .. } => JOIN_LEN,
            Request::RtMsg { data, .. } => RTMSG_HEADER_LEN + data.len(),
            Request::InCall { .. } => IN_CALL_LEN,
        }
    }
}

impl Event<'_> {
    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Event::Keepalive => OP_KEEPALIVE,
            Event::Error { .. } => OP_ERROR,
            Event::Hello { .. } => OP_HELLO,
            Event::Join { .. } => OP_JOIN,
            Event::Leave { .. } => OP_LEAVE,
            Event::RtMsg { .. } => OP_RTMSG,
            Event::InCall { .. } => OP_IN_CALL,
        }
    }

    /// Bytes [`encode_event`] writes for it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Event::Keepalive => KEEPALIVE_LEN,
            Event::Error { .. } => ERROR_LEN,
            Event::Hello { .. } => HELLO_REPLY_LEN,
            Event::Join { .. } | Event::Leave { .. } => JOIN_LEN,
            Event::RtMsg { data, .. } => RTMSG_HEADER_LEN + data.len(),
            Event::InCall { .. } => IN_CALL_LEN,
        }
    }
}

/// The `OP_RTMSG` fields both directions share; `userid`/`clientid` are the
/// receiver C->S and the sender S->C.
struct RtMsgHeader {
    chatid: u64,
    userid: u64,
    clientid: u32,
    msgtype: u8,
    len: u32,
}

/// Decodes an `OP_RTMSG` header (after the opcode). `msglen` is checked as
/// soon as it is present: a peer announcing too much is refused before any
/// of the payload is buffered.
fn decode_rtmsg_header(
    r: &mut Reader<'_>,
    limits: &Limits,
) -> Result<Option<RtMsgHeader>, DecodeError> {
    let chatid = need!(r.u64());
    let userid = need!(r.u64());
    let clientid = need!(r.u32());
    let msgtype = need!(r.u8());
    let len = need!(r.u24());
    let max = limits.max_rtmsg_len.min(MSGLEN_FIELD_MAX);
    if len > max {
        return Err(DecodeError::TooLarge {
            opcode: OP_RTMSG,
            chatid,
            len,
            max,
        });
    }
    Ok(Some(RtMsgHeader {
        chatid,
        userid,
        clientid,
        msgtype,
        len,
    }))
}

/// Decodes an `OP_IN_CALL` body (after the opcode), both directions.
fn decode_in_call_body(r: &mut Reader<'_>) -> Result<Option<(u64, bool)>, DecodeError> {
    let chatid = need!(r.u64());
    let in_call = match need!(r.u8()) {
        0 => false,
        1 => true,
        _ => {
            return Err(DecodeError::BadField {
                opcode: OP_IN_CALL,
                chatid,
                field: "status",
            })
        }
    };
    Ok(Some((chatid, in_call)))
}

/// Decodes the first client command in `buf` (see the module docs of
/// the crate root for the three outcomes).
pub fn decode_request<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Request<'a>, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    let req = match need!(r.u8()) {
        OP_KEEPALIVE => Request::Keepalive,
        OP_AUTH => Request::Auth {
            token: need!(crate::decode_auth_body(&mut r)?),
        },
        OP_HELLO => {
            let version = need!(r.u16());
            need!(r.skip::<2>());
            Request::Hello { version }
        }
        OP_JOIN => Request::Join {
            chatid: need!(r.u64()),
        },
        OP_LEAVE => Request::Leave {
            chatid: need!(r.u64()),
        },
        OP_RTMSG => {
            let h = need!(decode_rtmsg_header(&mut r, limits)?);
            Request::RtMsg {
                chatid: h.chatid,
                receiver_userid: h.userid,
                receiver_clientid: h.clientid,
                msgtype: h.msgtype,
                data: need!(r.bytes(h.len as usize)),
            }
        }
        OP_IN_CALL => {
            let (chatid, in_call) = need!(decode_in_call_body(&mut r)?);
            Request::InCall { chatid, in_call }
        }
        op => return Err(DecodeError::UnknownOpcode(op)),
    };
    Ok(Some((req, r.pos())))
}

/// Decodes the first server command in `buf` (clients, tests and the load
/// generator). `limits` bounds `OP_RTMSG` as on the server.
pub fn decode_event<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Event<'a>, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    let ev = match need!(r.u8()) {
        OP_KEEPALIVE => Event::Keepalive,
        OP_ERROR => {
            let (code, opcode, id) = need!(crate::decode_error_body(&mut r));
            Event::Error { code, opcode, id }
        }
        OP_HELLO => Event::Hello {
            client_id: need!(r.u32()),
        },
        OP_JOIN => Event::Join {
            chatid: need!(r.u64()),
        },
        OP_LEAVE => Event::Leave {
            chatid: need!(r.u64()),
        },
        OP_RTMSG => {
            let h = need!(decode_rtmsg_header(&mut r, limits)?);
            Event::RtMsg {
                chatid: h.chatid,
                sender_userid: h.userid,
                sender_clientid: h.clientid,
                msgtype: h.msgtype,
                data: need!(r.bytes(h.len as usize)),
            }
        }
        OP_IN_CALL => {
            let (chatid, in_call) = need!(decode_in_call_body(&mut r)?);
            Event::InCall { chatid, in_call }
        }
        op => return Err(DecodeError::UnknownOpcode(op)),
    };
    Ok(Some((ev, r.pos())))
}

/// Writes one `OP_RTMSG` (either direction; `userid`/`clientid` mean
/// receiver or sender accordingly).
///
/// # Panics
/// If `data` is longer than [`MSGLEN_FIELD_MAX`] (not expressible; a bug).
fn encode_rtmsg(
    chatid: u64,
    userid: u64,
    clientid: u32,
    msgtype: u8,
    data: &[u8],
    buf: &mut impl BufMut,
) {
    buf.put_u8(OP_RTMSG);
    buf.put_u64_le(chatid);
    buf.put_u64_le(userid);
    buf.put_u32_le(clientid);
    buf.put_u8(msgtype);
    wire::put_u24_le(buf, data.len());
    buf.put_slice(data);
}

/// Writes a client command, [`Request::encoded_len`] bytes.
///
/// # Panics
/// If a token is longer than `u16::MAX` or RTMSG data longer than
/// [`MSGLEN_FIELD_MAX`]: such commands cannot be expressed (a caller bug).
pub fn encode_request(req: &Request<'_>, buf: &mut impl BufMut) {
    match *req {
        Request::Keepalive => buf.put_u8(OP_KEEPALIVE),
        Request::Auth { token } => crate::encode_auth(token, buf),
        Request::Hello { version } => {
            buf.put_u8(OP_HELLO);
            buf.put_u16_le(version);
            buf.put_u16_le(0); // reserved
        }
        Request::Join { chatid } => encode_join(chatid, buf),
        Request::Leave { chatid } => encode_leave(chatid, buf),
        Request::RtMsg {
            chatid,
            receiver_userid,
            receiver_clientid,
            msgtype,
            data,
        } => encode_rtmsg(
            chatid,
            receiver_userid,
            receiver_clientid,
            msgtype,
            data,
            buf,
        ),
        Request::InCall { chatid, in_call } => encode_in_call(chatid, in_call, buf),
    }
}

/// Writes a server command, [`Event::encoded_len`] bytes.
///
/// # Panics
/// If RTMSG data is longer than [`MSGLEN_FIELD_MAX`] (a caller bug).
pub fn encode_event(ev: &Event<'_>, buf: &mut impl BufMut) {
    match *ev {
        Event::Keepalive => buf.put_u8(OP_KEEPALIVE),
        Event::Error { code, opcode, id } => crate::encode_error_raw(code, opcode, id, buf),
        Event::Hello { client_id } => encode_hello_reply(client_id, buf),
        Event::Join { chatid } => encode_join(chatid, buf),
        Event::Leave { chatid } => encode_leave(chatid, buf),
        Event::RtMsg {
            chatid,
            sender_userid,
            sender_clientid,
            msgtype,
            data,
        } => encode_rtmsg(chatid, sender_userid, sender_clientid, msgtype, data, buf),
        Event::InCall { chatid, in_call } => encode_in_call(chatid, in_call, buf),
    }
}

/// Writes `OP_JOIN chatid` ([`JOIN_LEN`] bytes; same layout both ways).
pub fn encode_join(chatid: u64, buf: &mut impl BufMut) {
    buf.put_u8(OP_JOIN);
    buf.put_u64_le(chatid);
}

/// Writes `OP_LEAVE chatid` ([`JOIN_LEN`] bytes; same layout both ways).
pub fn encode_leave(chatid: u64, buf: &mut impl BufMut) {
    buf.put_u8(OP_LEAVE);
    buf.put_u64_le(chatid);
}

/// Writes `OP_IN_CALL chatid status` ([`IN_CALL_LEN`] bytes; same layout
/// both ways).
pub fn encode_in_call(chatid: u64, in_call: bool, buf: &mut impl BufMut) {
    buf.put_u8(OP_IN_CALL);
    buf.put_u64_le(chatid);
    buf.put_u8(u8::from(in_call));
}

/// Writes the server's `OP_HELLO client_id` ([`HELLO_REPLY_LEN`] bytes).
pub fn encode_hello_reply(client_id: u32, buf: &mut impl BufMut) {
    buf.put_u8(OP_HELLO);
    buf.put_u32_le(client_id);
}

/// Turns a received C->S `OP_RTMSG` frame (exactly the bytes
/// [`decode_request`] consumed for it: header and data) into the S->C frame
/// every recipient gets, in place. The two layouts differ only in bytes
/// 9..21 (receiver becomes sender), so the data is never copied: this is
/// what makes fan-out zero-copy.
///
/// A frame shorter than the header is a caller bug: it is left untouched
/// (and asserted against in debug builds) rather than panicking a shard.
pub fn rewrite_rtmsg_for_delivery(frame: &mut [u8], sender_userid: u64, sender_clientid: u32) {
    debug_assert!(
        frame.len() >= RTMSG_HEADER_LEN && frame.first() == Some(&OP_RTMSG),
        "not an OP_RTMSG frame"
    );
    if let Some(addr) = frame.get_mut(RTMSG_ADDRESS) {
        let (user, client) = addr.split_at_mut(8);
        user.copy_from_slice(&sender_userid.to_le_bytes());
        client.copy_from_slice(&sender_clientid.to_le_bytes());
    }
}
