//! The login of both services, sans-IO (protocol section 2): the bytes a
//! client sends, and what each answer of the server means for a login in
//! progress. The async clients use it, and so can any other driver of a
//! socket (the server's integration tests drive it over blocking sockets).
//!
//! ```
//! use chatd_client::login::{self, ChatdLogin};
//! use chatd_proto::chatd::Event;
//!
//! let mut out = Vec::new();
//! login::encode_chatd(b"a.jwt.token", &mut out);
//! // ... write `out`, then feed each decoded server command:
//! let step = login::chatd(&Event::Hello { client_id: 7 });
//! assert_eq!(step, ChatdLogin::Done { client_id: 7 });
//! ```

use bytes::BufMut;
use chatd_proto::chatd::{self as cw, Event as ChatdEvent};
use chatd_proto::ids::{ClientId, UserId};
use chatd_proto::limits::{MAX_TOKEN_LEN, PROTOCOL_VERSION};
use chatd_proto::statusd::{self as sw, Event as StatusdEvent};

use crate::error::ServerError;

/// Writes chatd's login: `OP_AUTH token`, `OP_HELLO` with this crate's
/// protocol version.
///
/// # Panics
/// If the token is longer than the protocol allows (the client's builders
/// check it first and return an error instead).
pub fn encode_chatd(token: &[u8], out: &mut impl BufMut) {
    assert!(token.len() <= MAX_TOKEN_LEN, "token too long");
    cw::encode_request(&cw::Request::Auth { token }, out);
    cw::encode_request(
        &cw::Request::Hello {
            version: PROTOCOL_VERSION,
        },
        out,
    );
}

/// Writes statusd's login: `OP_AUTH token`, `OP_HELLO` with this crate's
/// protocol version and the client's initial presence (raw byte,
/// [`AUTO_FLAG`](chatd_proto::statusd::AUTO_FLAG) included).
///
/// # Panics
/// As [`encode_chatd`].
pub fn encode_statusd(token: &[u8], presence: u8, out: &mut impl BufMut) {
    assert!(token.len() <= MAX_TOKEN_LEN, "token too long");
    sw::encode_request(&sw::Request::Auth { token }, out);
    sw::encode_request(
        &sw::Request::Hello {
            version: PROTOCOL_VERSION,
            presence,
        },
        out,
    );
}

/// What a server command means for a chatd login in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatdLogin {
    /// `OP_HELLO client_id`: logged in.
    Done {
        /// The id the server gave this connection.
        client_id: ClientId,
    },
    /// `OP_ERROR`: the login was refused; the server closes the connection.
    Refused(ServerError),
    /// Anything else (`OP_KEEPALIVE`): keep reading.
    Pending,
}

/// Interprets one server command during a chatd login.
pub fn chatd(ev: &ChatdEvent<'_>) -> ChatdLogin {
    match *ev {
        ChatdEvent::Hello { client_id } => ChatdLogin::Done { client_id },
        ChatdEvent::Error { code, opcode, id } => {
            ChatdLogin::Refused(ServerError { code, opcode, id })
        }
        _ => ChatdLogin::Pending,
    }
}

/// What a server command means for a statusd login in progress: after
/// `OP_HELLO` the server sends the login dump, the presence of every user
/// the client may see (not 0), then `OP_PRES 0 own` to end it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusdLogin {
    /// One entry of the dump.
    Entry {
        /// A user the client may see.
        user: UserId,
        /// That user's presence.
        presence: u8,
    },
    /// `OP_PRES 0 own`: the dump ended; logged in.
    Done {
        /// The client's own user's presence.
        own: u8,
    },
    /// `OP_ERROR`: the login was refused; the server closes the connection.
    Refused(ServerError),
    /// Anything else (`OP_KEEPALIVE`): keep reading.
    Pending,
}

/// Interprets one server command during a statusd login.
pub fn statusd(ev: &StatusdEvent) -> StatusdLogin {
    match *ev {
        StatusdEvent::Pres {
            userid: 0,
            presence,
        } => StatusdLogin::Done { own: presence },
        StatusdEvent::Pres { userid, presence } => StatusdLogin::Entry {
            user: userid,
            presence,
        },
        StatusdEvent::Error { code, opcode, id } => {
            StatusdLogin::Refused(ServerError { code, opcode, id })
        }
        StatusdEvent::Keepalive => StatusdLogin::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd_proto::{ErrorCode, Limits, OP_AUTH};

    #[test]
    fn the_chatd_login_is_auth_then_hello_version_1() {
        let mut out = Vec::new();
        encode_chatd(b"tok", &mut out);
        let (first, used) = cw::decode_request(&out, &Limits::ANY).unwrap().unwrap();
        assert_eq!(first, cw::Request::Auth { token: b"tok" });
        let (second, rest) = cw::decode_request(&out[used..], &Limits::ANY)
            .unwrap()
            .unwrap();
        assert_eq!(second, cw::Request::Hello { version: 1 });
        assert_eq!(used + rest, out.len());
    }

    #[test]
    fn the_statusd_login_carries_the_initial_presence() {
        let mut out = Vec::new();
        encode_statusd(b"tok", 0x83, &mut out);
        let (_, used) = sw::decode_request(&out).unwrap().unwrap();
        let (hello, _) = sw::decode_request(&out[used..]).unwrap().unwrap();
        assert_eq!(
            hello,
            sw::Request::Hello {
                version: 1,
                presence: 0x83
            }
        );
    }

    #[test]
    fn login_answers_are_read_as_done_refused_or_pending() {
        assert_eq!(chatd(&ChatdEvent::Keepalive), ChatdLogin::Pending);
        let refused = ChatdEvent::Error {
            code: ErrorCode::AuthFailed as u8,
            opcode: OP_AUTH,
            id: 0,
        };
        match chatd(&refused) {
            ChatdLogin::Refused(e) => assert!(e.is_fatal() && e.closes_connection()),
            other => panic!("{other:?}"),
        }
        let entry = StatusdEvent::Pres {
            userid: 5,
            presence: 3,
        };
        assert_eq!(
            statusd(&entry),
            StatusdLogin::Entry {
                user: 5,
                presence: 3
            }
        );
        let end = StatusdEvent::Pres {
            userid: 0,
            presence: 2,
        };
        assert_eq!(statusd(&end), StatusdLogin::Done { own: 2 });
    }
}
