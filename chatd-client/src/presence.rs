//! The statusd client: presence (protocol section 5).
//!
//! A [`PresenceClient`] is a cheap, cloneable handle on one connection
//! task; what the server sends arrives as [`PresenceEvent`]s. The client
//! remembers the presence it last set and announces it again in the
//! `OP_HELLO` of every reconnect.
//!
//! Presence values are raw bytes, as on the wire: the low 7 bits are the
//! application's (0 offline; 1..127 growing with "chattiness"), and the top
//! bit, [`AUTO_FLAG`], marks a value set automatically (an idle timer),
//! which only this client takes; a value without it is the user's choice
//! and every client of the user takes it (protocol 5.2).

use std::time::Duration;

use bytes::{Buf, BytesMut};
use chatd_proto::ids::UserId;
use chatd_proto::statusd::{self as sw, Event, Request, AUTO_FLAG};
use tokio::net::ToSocketAddrs;
use tokio::time::Instant;

use crate::builder::{Builder, Handle};
use crate::connect::{Connect, Tcp};
use crate::error::{ClientError, ServerError};
use crate::events::Events;
use crate::login::{self, StatusdLogin};
use crate::session::{LoginStep, Protocol, Read, Shared};

/// What the statusd server told the client, and what happened to its
/// connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum PresenceEvent {
    /// Logged in (the first time, or again after a reconnect): everyone is
    /// offline until told otherwise. The login dump follows: a
    /// [`PresenceEvent::Presence`] for every user this one may see whose
    /// presence is not 0, then [`PresenceEvent::Synced`].
    Connected,
    /// `OP_PRES user presence`: a user this one may see (a contact, or
    /// someone sharing a room) has this presence now.
    Presence {
        /// The user.
        user: UserId,
        /// Its presence (the top bit is always clear).
        presence: u8,
    },
    /// The login dump ended: the view is complete, and this is the
    /// client's own user's presence.
    Synced {
        /// The own user's presence.
        own: u8,
    },
    /// `OP_PRES 0 presence` after the login: the own user's presence now
    /// (the answer to [`PresenceClient::set_presence`], or a change made by
    /// another client of the same user).
    Own {
        /// The own user's presence.
        presence: u8,
    },
    /// An `OP_ERROR` that refused one command and left the connection open
    /// (`RATE_LIMITED`).
    Error(ServerError),
    /// The connection was lost (or refused); the next attempt starts after
    /// `delay`.
    Reconnecting {
        /// Why.
        error: ClientError,
        /// Attempts since the last login, this one included.
        attempt: u32,
        /// How long until it.
        delay: Duration,
    },
    /// The client is done: closed by the application (`None`), or given up.
    /// The event stream ends after this.
    Closed {
        /// Why, when not closed by the application.
        error: Option<ClientError>,
    },
}

/// A statusd client's events.
pub type PresenceEvents = Events<PresenceEvent>;

/// statusd's own builder options (see [`Builder`] for the common ones).
#[derive(Clone, Debug)]
pub struct PresenceOptions {
    presence: u8,
}

/// The builder of a [`PresenceClient`].
pub type PresenceBuilder = Builder<PresenceOptions>;

impl Builder<PresenceOptions> {
    /// The presence the first login announces (raw byte). The default,
    /// `AUTO_FLAG | 0`, changes nothing for the user: an automatic 0 is
    /// this client's alone, and the user's presence is the highest of its
    /// clients'.
    pub fn presence(mut self, presence: u8) -> Self {
        self.service.presence = presence;
        self
    }

    /// Connects over TCP to `addr` (resolved again at every reconnect) and
    /// logs in; returns once the login dump is read, with the client and
    /// its events (which start with the dump).
    pub async fn connect<A>(self, addr: A) -> Result<(PresenceClient, PresenceEvents), ClientError>
    where
        A: ToSocketAddrs + Clone + Send + Sync + 'static,
    {
        self.connect_with(Tcp(addr)).await
    }

    /// As [`Self::connect`], over the streams `connector` opens.
    pub async fn connect_with<C: Connect>(
        self,
        connector: C,
    ) -> Result<(PresenceClient, PresenceEvents), ClientError> {
        let proto = PresenceProtocol {
            presence: self.service.presence,
        };
        let (handle, events) = self.start(proto, connector).await?;
        Ok((PresenceClient { handle }, events))
    }
}

/// A statusd client: a cheap, cloneable handle on one connection, which
/// reconnects by itself (see the [crate docs](crate)).
#[derive(Clone, Debug)]
pub struct PresenceClient {
    handle: Handle<Command>,
}

impl PresenceClient {
    /// A builder for a client logging in with `token`.
    pub fn builder(token: impl Into<String>) -> PresenceBuilder {
        Builder::new(
            token.into(),
            PresenceOptions {
                presence: AUTO_FLAG,
            },
        )
    }

    /// Sets this client's presence (raw byte, see the [module
    /// docs](self)): answered by [`PresenceEvent::Own`] with the user's
    /// resulting presence. While disconnected it is kept, and announced at
    /// the next login.
    pub async fn set_presence(&self, presence: u8) -> Result<(), ClientError> {
        self.handle.command(Command::SetPresence(presence)).await
    }

    /// Whether the client is logged in right now.
    pub fn is_connected(&self) -> bool {
        self.handle.is_connected()
    }

    /// The token the next login uses.
    pub fn set_token(&self, token: impl Into<String>) {
        self.handle.set_token(token.into());
    }

    /// Closes the connection and ends the client; the event stream ends
    /// with [`PresenceEvent::Closed`]. Dropping every handle does the same.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

/// A [`PresenceClient`]'s command to its connection task.
#[derive(Debug)]
pub(crate) enum Command {
    SetPresence(u8),
}

/// statusd, as the connection task drives it.
#[derive(Debug)]
struct PresenceProtocol {
    /// What this client announces: the last value set.
    presence: u8,
}

impl Protocol for PresenceProtocol {
    type Event = PresenceEvent;
    type Command = Command;

    fn encode_login(&self, token: &[u8], out: &mut BytesMut) {
        login::encode_statusd(token, self.presence, out);
    }

    fn login_step(
        &mut self,
        buf: &mut BytesMut,
        emit: &mut Vec<PresenceEvent>,
    ) -> Result<Option<LoginStep>, ClientError> {
        let Some((ev, used)) = sw::decode_event(buf)? else {
            return Ok(None);
        };
        buf.advance(used);
        match login::statusd(&ev) {
            StatusdLogin::Entry { user, presence } => {
                emit.push(PresenceEvent::Presence { user, presence });
                Ok(Some(LoginStep::Pending))
            }
            StatusdLogin::Done { own } => {
                emit.push(PresenceEvent::Synced { own });
                Ok(Some(LoginStep::Done))
            }
            StatusdLogin::Refused(e) => Err(ClientError::Refused(e)),
            StatusdLogin::Pending => Ok(Some(LoginStep::Pending)),
        }
    }

    /// The presence went with `OP_HELLO`: nothing to restore. The login's
    /// events (the dump, then `Synced`) follow this one.
    fn logged_in(&mut self, _shared: &Shared, _now: Instant, _out: &mut BytesMut) -> PresenceEvent {
        PresenceEvent::Connected
    }

    fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Read<PresenceEvent>>, ClientError> {
        let Some((ev, used)) = sw::decode_event(buf)? else {
            return Ok(None);
        };
        buf.advance(used);
        Ok(Some(match ev {
            Event::Keepalive => Read::Nothing,
            Event::Pres {
                userid: 0,
                presence,
            } => Read::Event(PresenceEvent::Own { presence }),
            Event::Pres { userid, presence } => Read::Event(PresenceEvent::Presence {
                user: userid,
                presence,
            }),
            Event::Error { code, opcode, id } => {
                let e = ServerError { code, opcode, id };
                if e.closes_connection() {
                    Read::Refused(e)
                } else {
                    Read::Event(PresenceEvent::Error(e))
                }
            }
        }))
    }

    fn command(&mut self, cmd: Command, out: Option<&mut BytesMut>) {
        let Command::SetPresence(presence) = cmd;
        self.presence = presence;
        if let Some(out) = out {
            sw::encode_request(&Request::SetPres { presence }, out);
        }
    }

    fn poll_timer(&mut self, _now: Instant, _out: &mut BytesMut) -> Option<Instant> {
        None
    }

    fn reconnecting(error: ClientError, attempt: u32, delay: Duration) -> PresenceEvent {
        PresenceEvent::Reconnecting {
            error,
            attempt,
            delay,
        }
    }

    fn closed(error: Option<ClientError>) -> PresenceEvent {
        PresenceEvent::Closed { error }
    }
}
