//! The chatd client: rooms, real-time messages and the in-call flag
//! (protocol section 4).
//!
//! A [`ChatClient`] is a cheap, cloneable handle on one connection task;
//! what the server sends arrives as [`ChatEvent`]s. The client remembers
//! the rooms it joined and the calls it is in, and restores both after a
//! reconnect: it joins the rooms again and resumes the call heartbeats.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use chatd_proto::chatd::{self as cw, Event, Request};
use chatd_proto::ids::{ChatId, ClientId, UserId};
use chatd_proto::limits::MSGLEN_FIELD_MAX;
use chatd_proto::{ErrorCode, Limits};
use tokio::net::ToSocketAddrs;
use tokio::time::Instant;

use crate::builder::{Builder, Handle};
use crate::connect::{Connect, Tcp};
use crate::error::{ClientError, ServerError};
use crate::events::Events;
use crate::login::{self, ChatdLogin};
use crate::session::{LoginStep, Protocol, Read, Shared};

/// Who an `OP_RTMSG` goes to, within its room (protocol section 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// Every connection joined to the room (but the sender).
    Room,
    /// Every connection of this user joined to the room.
    User(UserId),
    /// The one connection with this client id, if it is this user's and
    /// joined to the room.
    Client(UserId, ClientId),
}

impl To {
    /// The receiver fields of `OP_RTMSG`.
    fn fields(self) -> Result<(UserId, ClientId), ClientError> {
        match self {
            To::Room => Ok((0, 0)),
            To::User(0) | To::Client(0, _) => Err(ClientError::InvalidArgument("user id 0")),
            To::Client(_, 0) => Err(ClientError::InvalidArgument("client id 0")),
            To::User(user) => Ok((user, 0)),
            To::Client(user, client) => Ok((user, client)),
        }
    }
}

/// A real-time message from another connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The room it was sent to.
    pub chat: ChatId,
    /// Who sent it.
    pub from_user: UserId,
    /// From which connection.
    pub from_client: ClientId,
    /// As sent (opaque to the server).
    pub msgtype: u8,
    /// As sent.
    pub data: Bytes,
}

/// What the chatd server told the client, and what happened to its
/// connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChatEvent {
    /// Logged in (the first time, or again after a reconnect); the rooms
    /// the client had joined are being joined again.
    Connected {
        /// The id the server gave this connection.
        client_id: ClientId,
    },
    /// `OP_JOIN`: subscribed to the room. `InCall` with its flag follows.
    Joined {
        /// The room.
        chat: ChatId,
    },
    /// `OP_LEAVE`: no longer subscribed (asked for, or the user stopped
    /// being a member). The client forgets the room and any call in it.
    Left {
        /// The room.
        chat: ChatId,
    },
    /// `OP_IN_CALL`: the room's call flag (after each join, and when it
    /// changes).
    InCall {
        /// The room.
        chat: ChatId,
        /// At least two distinct users are in the room's call.
        in_call: bool,
    },
    /// `OP_RTMSG` from another connection.
    Message(Message),
    /// An `OP_ERROR` that refused one command and left the connection open
    /// (`NOT_MEMBER`, `NOT_JOINED`, `BAD_ADDRESS`, `TOO_MANY_ROOMS`,
    /// `RATE_LIMITED`). A refused join or call is forgotten.
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
    /// The client is done: closed by the application (`None`), or given up
    /// (a fatal refusal such as `AUTH_FAILED`, or reconnect disabled). The
    /// event stream ends after this.
    Closed {
        /// Why, when not closed by the application.
        error: Option<ClientError>,
    },
}

/// A chatd client's events.
pub type ChatEvents = Events<ChatEvent>;

/// chatd's own builder options (see [`Builder`] for the common ones).
#[derive(Clone, Debug)]
pub struct ChatOptions {
    rooms: BTreeSet<ChatId>,
    call_heartbeat: Duration,
}

/// The builder of a [`ChatClient`].
pub type ChatBuilder = Builder<ChatOptions>;

impl Builder<ChatOptions> {
    /// Rooms to join at every login, the first included (as if
    /// [`ChatClient::join`] had been called for each).
    pub fn rooms(mut self, rooms: impl IntoIterator<Item = ChatId>) -> Self {
        self.service.rooms.extend(rooms);
        self
    }

    /// How often the client repeats `OP_IN_CALL 1` for the calls it is in
    /// (default 3 s; the protocol asks for every 2-5 s, and the server's
    /// call timeout is 10 s by default).
    pub fn call_heartbeat(mut self, every: Duration) -> Self {
        self.service.call_heartbeat = every;
        self
    }

    /// Connects over TCP to `addr` (resolved again at every reconnect) and
    /// logs in; returns once logged in, with the client and its events.
    /// The first connection's failure is returned here; later ones are
    /// retried as the builder says.
    pub async fn connect<A>(self, addr: A) -> Result<(ChatClient, ChatEvents), ClientError>
    where
        A: ToSocketAddrs + Clone + Send + Sync + 'static,
    {
        self.connect_with(Tcp(addr)).await
    }

    /// As [`Self::connect`], over the streams `connector` opens (TLS, a
    /// WebSocket adapter: see [`crate::connect`]).
    pub async fn connect_with<C: Connect>(
        self,
        connector: C,
    ) -> Result<(ChatClient, ChatEvents), ClientError> {
        if self.service.rooms.contains(&0) {
            return Err(ClientError::InvalidArgument("room id 0"));
        }
        let proto = ChatProtocol {
            rooms: self.service.rooms.clone(),
            calls: BTreeSet::new(),
            heartbeat: self.service.call_heartbeat,
            next_heartbeat: None,
            client_id: 0,
        };
        let (handle, events) = self.start(proto, connector).await?;
        Ok((ChatClient { handle }, events))
    }
}

/// A chatd client: a cheap, cloneable handle on one connection, which
/// reconnects by itself (see the [crate docs](crate)).
///
/// Commands return once they are handed to the connection task, not when
/// the server answered: answers arrive as [`ChatEvent`]s.
#[derive(Clone, Debug)]
pub struct ChatClient {
    handle: Handle<Command>,
}

impl ChatClient {
    /// A builder for a client logging in with `token` (a JWT the admin API
    /// issues: `POST /v1/tokens`).
    pub fn builder(token: impl Into<String>) -> ChatBuilder {
        Builder::new(
            token.into(),
            ChatOptions {
                rooms: BTreeSet::new(),
                call_heartbeat: crate::limits::CALL_HEARTBEAT,
            },
        )
    }

    /// Joins `chat` (answered by [`ChatEvent::Joined`] and
    /// [`ChatEvent::InCall`], or [`ChatEvent::Error`] `NOT_MEMBER`). The
    /// room is joined again after every reconnect until it is left.
    pub async fn join(&self, chat: ChatId) -> Result<(), ClientError> {
        if chat == 0 {
            return Err(ClientError::InvalidArgument("room id 0"));
        }
        self.handle.command(Command::Join(chat)).await
    }

    /// Leaves `chat` (answered by [`ChatEvent::Left`]), and any call in it.
    pub async fn leave(&self, chat: ChatId) -> Result<(), ClientError> {
        self.handle.command(Command::Leave(chat)).await
    }

    /// Sends a real-time message to `to` in `chat` (a room this client
    /// joined). Not queued while disconnected: fails with
    /// [`ClientError::NotConnected`] then, since a real-time message sent
    /// later would arrive stale.
    pub async fn send(
        &self,
        chat: ChatId,
        to: To,
        msgtype: u8,
        data: &[u8],
    ) -> Result<(), ClientError> {
        let (receiver_userid, receiver_clientid) = to.fields()?;
        if data.len() > MSGLEN_FIELD_MAX as usize {
            return Err(ClientError::InvalidArgument(
                "message longer than msglen allows",
            ));
        }
        if !self.handle.is_connected() {
            return Err(ClientError::NotConnected);
        }
        let req = Request::RtMsg {
            chatid: chat,
            receiver_userid,
            receiver_clientid,
            msgtype,
            data,
        };
        let mut frame = BytesMut::with_capacity(req.encoded_len());
        cw::encode_request(&req, &mut frame);
        self.handle.command(Command::Frame(frame.freeze())).await
    }

    /// Enters the call of `chat` (a joined room): sends `OP_IN_CALL 1` now
    /// and then every call heartbeat, across reconnects, until
    /// [`Self::leave_call`] or leaving the room.
    pub async fn enter_call(&self, chat: ChatId) -> Result<(), ClientError> {
        self.handle.command(Command::EnterCall(chat)).await
    }

    /// Leaves the call of `chat`: stops the heartbeat and sends
    /// `OP_IN_CALL 0`.
    pub async fn leave_call(&self, chat: ChatId) -> Result<(), ClientError> {
        self.handle.command(Command::LeaveCall(chat)).await
    }

    /// The client id of the current connection; `None` while disconnected.
    pub fn client_id(&self) -> Option<ClientId> {
        match self
            .handle
            .shared
            .client_id
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            0 => None,
            id => Some(id),
        }
    }

    /// Whether the client is logged in right now.
    pub fn is_connected(&self) -> bool {
        self.handle.is_connected()
    }

    /// The token the next login uses (a fresh one before the current one
    /// expires).
    pub fn set_token(&self, token: impl Into<String>) {
        self.handle.set_token(token.into());
    }

    /// Closes the connection and ends the client; the event stream ends
    /// with [`ChatEvent::Closed`]. Dropping every handle does the same.
    pub async fn close(&self) {
        self.handle.close().await;
    }
}

/// A [`ChatClient`]'s command to its connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Join(ChatId),
    Leave(ChatId),
    EnterCall(ChatId),
    LeaveCall(ChatId),
    /// An encoded `OP_RTMSG`.
    Frame(Bytes),
}

/// chatd, as the connection task drives it.
#[derive(Debug)]
struct ChatProtocol {
    /// Rooms joined (or asked for) and not left or refused.
    rooms: BTreeSet<ChatId>,
    /// Rooms whose call the client is in.
    calls: BTreeSet<ChatId>,
    /// How often calls are beaten.
    heartbeat: Duration,
    /// When the calls are beaten next (`None` while in no call).
    next_heartbeat: Option<Instant>,
    /// The id of the current login.
    client_id: ClientId,
}

impl ChatProtocol {
    /// Writes `OP_IN_CALL 1` for every call.
    fn beat(&self, out: &mut BytesMut) {
        for &chat in &self.calls {
            cw::encode_in_call(chat, true, out);
        }
    }
}

impl Protocol for ChatProtocol {
    type Event = ChatEvent;
    type Command = Command;

    fn encode_login(&self, token: &[u8], out: &mut BytesMut) {
        login::encode_chatd(token, out);
    }

    fn login_step(
        &mut self,
        buf: &mut BytesMut,
        _emit: &mut Vec<ChatEvent>,
    ) -> Result<Option<LoginStep>, ClientError> {
        let Some((ev, used)) = cw::decode_event(buf, &Limits::ANY)? else {
            return Ok(None);
        };
        let step = login::chatd(&ev);
        buf.advance(used);
        match step {
            ChatdLogin::Done { client_id } => {
                self.client_id = client_id;
                Ok(Some(LoginStep::Done))
            }
            ChatdLogin::Refused(e) => Err(ClientError::Refused(e)),
            ChatdLogin::Pending => Ok(Some(LoginStep::Pending)),
        }
    }

    fn logged_in(&mut self, shared: &Shared, now: Instant, out: &mut BytesMut) -> ChatEvent {
        shared
            .client_id
            .store(self.client_id, std::sync::atomic::Ordering::SeqCst);
        // Rooms first: a call heartbeat needs its room joined, and both
        // reach the room's home shard in order.
        for &chat in &self.rooms {
            cw::encode_join(chat, out);
        }
        self.beat(out);
        self.next_heartbeat = (!self.calls.is_empty()).then(|| now + self.heartbeat);
        ChatEvent::Connected {
            client_id: self.client_id,
        }
    }

    fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Read<ChatEvent>>, ClientError> {
        let Some((ev, used)) = cw::decode_event(buf, &Limits::ANY)? else {
            return Ok(None);
        };
        let read = match ev {
            Event::RtMsg {
                chatid,
                sender_userid,
                sender_clientid,
                msgtype,
                ..
            } => {
                // The payload is shared out of the read buffer, not copied.
                let frame = buf.split_to(used).freeze();
                return Ok(Some(Read::Event(ChatEvent::Message(Message {
                    chat: chatid,
                    from_user: sender_userid,
                    from_client: sender_clientid,
                    msgtype,
                    data: frame.slice(cw::RTMSG_HEADER_LEN..),
                }))));
            }
            Event::Keepalive | Event::Hello { .. } => Read::Nothing,
            Event::Join { chatid } => Read::Event(ChatEvent::Joined { chat: chatid }),
            Event::Leave { chatid } => {
                self.rooms.remove(&chatid);
                self.calls.remove(&chatid);
                Read::Event(ChatEvent::Left { chat: chatid })
            }
            Event::InCall { chatid, in_call } => Read::Event(ChatEvent::InCall {
                chat: chatid,
                in_call,
            }),
            Event::Error { code, opcode, id } => {
                let e = ServerError { code, opcode, id };
                if e.closes_connection() {
                    Read::Refused(e)
                } else {
                    match (e.error_code(), opcode) {
                        (Some(ErrorCode::NotMember | ErrorCode::TooManyRooms), cw::OP_JOIN) => {
                            self.rooms.remove(&id);
                            self.calls.remove(&id);
                        }
                        (Some(ErrorCode::NotJoined), cw::OP_IN_CALL) => {
                            self.calls.remove(&id);
                        }
                        _ => {}
                    }
                    Read::Event(ChatEvent::Error(e))
                }
            }
        };
        buf.advance(used);
        Ok(Some(read))
    }

    fn command(&mut self, cmd: Command, out: Option<&mut BytesMut>) {
        match cmd {
            Command::Join(chat) => {
                self.rooms.insert(chat);
                if let Some(out) = out {
                    cw::encode_join(chat, out);
                }
            }
            Command::Leave(chat) => {
                self.rooms.remove(&chat);
                self.calls.remove(&chat);
                if let Some(out) = out {
                    cw::encode_leave(chat, out);
                }
            }
            Command::EnterCall(chat) => {
                self.calls.insert(chat);
                if let Some(out) = out {
                    cw::encode_in_call(chat, true, out);
                    if self.next_heartbeat.is_none() {
                        self.next_heartbeat = Some(Instant::now() + self.heartbeat);
                    }
                }
            }
            Command::LeaveCall(chat) => {
                let was_in = self.calls.remove(&chat);
                if let (true, Some(out)) = (was_in, out) {
                    cw::encode_in_call(chat, false, out);
                }
            }
            // Dropped while disconnected (`send` checks first; this is a
            // connection lost in between).
            Command::Frame(frame) => {
                if let Some(out) = out {
                    out.extend_from_slice(&frame);
                }
            }
        }
    }

    fn poll_timer(&mut self, now: Instant, out: &mut BytesMut) -> Option<Instant> {
        if self.calls.is_empty() {
            self.next_heartbeat = None;
            return None;
        }
        let due = *self.next_heartbeat.get_or_insert(now + self.heartbeat);
        if now < due {
            return Some(due);
        }
        self.beat(out);
        let next = now + self.heartbeat;
        self.next_heartbeat = Some(next);
        Some(next)
    }

    fn reconnecting(error: ClientError, attempt: u32, delay: Duration) -> ChatEvent {
        ChatEvent::Reconnecting {
            error,
            attempt,
            delay,
        }
    }

    fn closed(error: Option<ClientError>) -> ChatEvent {
        ChatEvent::Closed { error }
    }
}
