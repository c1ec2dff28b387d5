//! What can go wrong: [`ClientError`] for a connection or a call on a
//! client, [`ServerError`] for an `OP_ERROR` the server sent.

use chatd_proto::{DecodeError, ErrorCode};

/// An `OP_ERROR` from the server: which command it refused and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerError {
    /// The raw code byte (codes this version does not know are kept).
    pub code: u8,
    /// The opcode of the command that caused it (0 when none).
    pub opcode: u8,
    /// The room concerned (0 when none).
    pub id: u64,
}

impl ServerError {
    /// The code, when this version of the protocol defines it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::from_u8(self.code)
    }

    /// Whether the server closes the connection after it (unknown codes
    /// are taken to close it).
    pub fn closes_connection(&self) -> bool {
        self.error_code().is_none_or(ErrorCode::closes_connection)
    }

    /// Whether logging in again cannot help: the token was refused
    /// (`AUTH_FAILED`), the version is not spoken (`BAD_VERSION`), or the
    /// login order was broken (`NOT_AUTHENTICATED`, a client bug).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.error_code(),
            Some(ErrorCode::AuthFailed | ErrorCode::BadVersion | ErrorCode::NotAuthenticated)
        )
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.error_code() {
            Some(code) => write!(f, "{code}")?,
            None => write!(f, "error code {}", self.code)?,
        }
        write!(f, " for opcode {:#04x}", self.opcode)?;
        if self.id != 0 {
            write!(f, " (room {})", self.id)?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

/// Why a connection ended or a call on a client failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("closed by the server")]
    Closed,
    /// The server sent bytes that do not decode.
    #[error("undecodable command from the server: {0}")]
    Decode(#[from] DecodeError),
    /// The server refused the connection with an `OP_ERROR` that closes it
    /// (`AUTH_FAILED`, `SHUTTING_DOWN`, `TOO_MANY_CONNECTIONS`, ...).
    #[error("refused by the server: {0}")]
    Refused(ServerError),
    /// The login did not complete within the login timeout, or the server
    /// did not answer a keepalive within the keepalive timeout.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The client is between connections: real-time messages are not
    /// queued while disconnected (they would arrive stale).
    #[error("not connected")]
    NotConnected,
    /// The client was closed (or gave up); nothing more can be sent.
    #[error("the client is closed")]
    ClientClosed,
    /// An argument the protocol cannot carry (an id of 0, a token longer
    /// than the protocol allows, a message larger than `msglen` can say).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl ClientError {
    /// Whether reconnecting cannot help (see [`ServerError::is_fatal`]).
    pub fn is_fatal(&self) -> bool {
        match self {
            ClientError::Refused(e) => e.is_fatal(),
            ClientError::ClientClosed | ClientError::InvalidArgument(_) => true,
            _ => false,
        }
    }
}
