//! The statusd command set (protocol section 5): login with an initial
//! presence, presence changes from clients, presence updates to clients,
//! plus the common `OP_KEEPALIVE`, `OP_AUTH` and `OP_ERROR`. Layouts only;
//! combining and distributing presence is the server's business. No I/O.
//!
//! Presence bytes are kept raw: the meaning of the low 7 bits belongs to the
//! application, and the [`AUTO_FLAG`] bit is interpreted by the server.

use bytes::BufMut;

use crate::wire::{need, Reader};
use crate::{DecodeError, ERROR_LEN, KEEPALIVE_LEN, OP_AUTH, OP_ERROR, OP_KEEPALIVE};

/// `OP_HELLO`, C->S: `version(2) user_presence(1) reserved(1)`.
pub const OP_HELLO: u8 = 0x01;
/// `OP_SETPRES`, C->S: `presence(1)`.
pub const OP_SETPRES: u8 = 0x02;
/// `OP_PRES`, S->C: `userid(8) presence(1)`.
pub const OP_PRES: u8 = 0x03;

/// Bytes of `OP_PRES`, opcode included.
pub const PRES_LEN: usize = 10;
/// Bytes of `OP_HELLO`, opcode included.
pub const HELLO_LEN: usize = 5;
/// Bytes of `OP_SETPRES`, opcode included.
pub const SETPRES_LEN: usize = 2;

/// The most significant bit of a client-sent presence: 1 = set
/// automatically (idle timer), 0 = set by the user. Always 0 in `OP_PRES`.
pub const AUTO_FLAG: u8 = 0x80;

/// A command from a client to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `OP_KEEPALIVE`: answered with `OP_KEEPALIVE`.
    Keepalive,
    /// `OP_AUTH`: the JWT, 1..=4096 bytes.
    Auth {
        /// The token bytes.
        token: &'a [u8],
    },
    /// `OP_HELLO`: protocol version and this client's initial presence. The
    /// reserved byte is ignored on decode and written as zero.
    Hello {
        /// Protocol version.
        version: u16,
        /// Raw byte, [`AUTO_FLAG`] included.
        presence: u8,
    },
    /// `OP_SETPRES`: a new presence for this client (or, without
    /// [`AUTO_FLAG`], for all the user's clients).
    SetPres {
        /// Raw byte, [`AUTO_FLAG`] included.
        presence: u8,
    },
}

/// A command from the server to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `OP_KEEPALIVE`: the answer to a client's keepalive.
    Keepalive,
    /// `OP_ERROR`, with the raw code byte.
    Error {
        /// Raw error code.
        code: u8,
        /// Opcode of the command that caused it.
        opcode: u8,
        /// Always 0 on statusd (no rooms).
        id: u64,
    },
    /// `OP_PRES`: a user's presence; userid 0 means the client's own user.
    Pres {
        /// The user, or 0 for "yourself".
        userid: u64,
        /// Raw byte (the server keeps [`AUTO_FLAG`] clear).
        presence: u8,
    },
}

impl Request<'_> {
    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Keepalive => OP_KEEPALIVE,
            Request::Auth { .. } => OP_AUTH,
            Request::Hello { .. } => OP_HELLO,
            Request::SetPres { .. } => OP_SETPRES,
        }
    }

    /// Bytes [`encode_request`] writes for it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Keepalive => KEEPALIVE_LEN,
            Request::Auth { token } => crate::auth_len(token),
            Request::Hello { .. } => HELLO_LEN,
            Request::SetPres { .. } => SETPRES_LEN,
        }
    }
}

impl Event {
    /// The command's opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            Event::Keepalive => OP_KEEPALIVE,
            Event::Error { .. } => OP_ERROR,
            Event::Pres { .. } => OP_PRES,
        }
    }

    /// Bytes [`encode_event`] writes for it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Event::Keepalive => KEEPALIVE_LEN,
            Event::Error { .. } => ERROR_LEN,
            Event::Pres { .. } => PRES_LEN,
        }
    }
}

/// Decodes the first client command in `buf` (see the module docs of
/// the crate root for the three outcomes).
pub fn decode_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    let req = match need!(r.u8()) {
        OP_KEEPALIVE => Request::Keepalive,
        OP_AUTH => Request::Auth {
            token: need!(crate::decode_auth_body(&mut r)?),
        },
        OP_HELLO => {
            let version = need!(r.u16());
            let presence = need!(r.u8());
            need!(r.skip::<1>());
            Request::Hello { version, presence }
        }
        OP_SETPRES => Request::SetPres {
            presence: need!(r.u8()),
        },
        op => return Err(DecodeError::UnknownOpcode(op)),
    };
    Ok(Some((req, r.pos())))
}

/// Decodes the first server command in `buf` (clients, tests and the load
/// generator).
pub fn decode_event(buf: &[u8]) -> Result<Option<(Event, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    let ev = match need!(r.u8()) {
        OP_KEEPALIVE => Event::Keepalive,
        OP_ERROR => {
            let (code, opcode, id) = need!(crate::decode_error_body(&mut r));
            Event::Error { code, opcode, id }
        }
        OP_PRES => Event::Pres {
            userid: need!(r.u64()),
            presence: need!(r.u8()),
        },
        op => return Err(DecodeError::UnknownOpcode(op)),
    };
    Ok(Some((ev, r.pos())))
}

/// Writes a client command, [`Request::encoded_len`] bytes.
///
/// # Panics
/// If a token is longer than `u16::MAX` (not expressible; a caller bug).
pub fn encode_request(req: &Request<'_>, buf: &mut impl BufMut) {
    match *req {
        Request::Keepalive => buf.put_u8(OP_KEEPALIVE),
        Request::Auth { token } => crate::encode_auth(token, buf),
        Request::Hello { version, presence } => {
            buf.put_u8(OP_HELLO);
            buf.put_u16_le(version);
            buf.put_u8(presence);
            buf.put_u8(0); // reserved
        }
        Request::SetPres { presence } => {
            buf.put_u8(OP_SETPRES);
            buf.put_u8(presence);
        }
    }
}

/// Writes a server command, [`Event::encoded_len`] bytes.
pub fn encode_event(ev: &Event, buf: &mut impl BufMut) {
    match *ev {
        Event::Keepalive => buf.put_u8(OP_KEEPALIVE),
        Event::Error { code, opcode, id } => crate::encode_error_raw(code, opcode, id, buf),
        Event::Pres { userid, presence } => encode_pres(userid, presence, buf),
    }
}

/// Writes `OP_PRES userid presence` ([`PRES_LEN`] bytes), the hot path of
/// presence fan-out.
pub fn encode_pres(userid: u64, presence: u8, buf: &mut impl BufMut) {
    buf.put_u8(OP_PRES);
    buf.put_u64_le(userid);
    buf.put_u8(presence);
}
