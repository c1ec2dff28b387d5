//! The connection driver both clients share: one task per client that
//! connects, logs in, restores the session (rooms, calls, presence),
//! relays the application's commands and the server's events, keeps the
//! connection alive, and reconnects with backoff when it is lost.
//!
//! What differs between the services is a [`Protocol`]: its login, what
//! it restores, how it reads the server's commands and what the
//! application's commands write. Everything that waits (socket, commands,
//! timers) waits here, in one `select!`: nothing polls.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backoff::{self, Backoff, Delays};
use crate::connect::Connect;
use crate::error::{ClientError, ServerError};
use crate::limits::{self, READ_CHUNK};

/// The options every client has (set on its builder).
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Send `OP_KEEPALIVE` after this long without sending anything.
    pub keepalive: Duration,
    /// A keepalive unanswered (nothing received) this long: the connection
    /// is dead.
    pub keepalive_timeout: Duration,
    /// Connect and log in within this.
    pub login_timeout: Duration,
    /// Reconnect policy; `None`: do not reconnect.
    pub reconnect: Option<Backoff>,
    /// Events buffered for the application.
    pub event_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keepalive: limits::KEEPALIVE,
            keepalive_timeout: limits::KEEPALIVE_TIMEOUT,
            login_timeout: limits::LOGIN_TIMEOUT,
            reconnect: Some(Backoff::default()),
            event_capacity: limits::EVENT_CAPACITY,
        }
    }
}

/// What a client handle and its driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Logged in right now.
    pub connected: AtomicBool,
    /// chatd: the client id of the current connection (0 when none).
    pub client_id: AtomicU32,
    /// The token the next login uses.
    pub token: Mutex<String>,
}

impl Shared {
    pub(crate) fn new(token: String) -> Self {
        Shared {
            connected: AtomicBool::new(false),
            client_id: AtomicU32::new(0),
            token: Mutex::new(token),
        }
    }

    fn token(&self) -> String {
        match self.token.lock() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A message from a handle to its driver.
pub(crate) enum Cmd<C> {
    /// One of the service's commands.
    App(C),
    /// Close the connection and end the driver.
    Close,
}

/// Progress of a login (see [`Protocol::login_step`]).
pub(crate) enum LoginStep {
    /// Keep reading.
    Pending,
    /// Logged in.
    Done,
}

/// What one server command meant after login.
pub(crate) enum Read<E> {
    /// An event for the application.
    Event(E),
    /// Nothing to tell (an `OP_KEEPALIVE` answer).
    Nothing,
    /// An `OP_ERROR` after which the server closes the connection.
    Refused(ServerError),
}

/// A service, as the driver sees it.
pub(crate) trait Protocol: Send + 'static {
    /// What the application is told.
    type Event: Send + 'static;
    /// What the application asks.
    type Command: Send + 'static;

    /// Writes the login (`OP_AUTH`, `OP_HELLO`).
    fn encode_login(&self, token: &[u8], out: &mut BytesMut);
    /// Reads one server command of a login in progress from `buf`
    /// (`Ok(None)`: need more bytes); events it makes go to `emit`.
    fn login_step(
        &mut self,
        buf: &mut BytesMut,
        emit: &mut Vec<Self::Event>,
    ) -> Result<Option<LoginStep>, ClientError>;
    /// The login is done: writes what restores the session (joins, call
    /// heartbeats) and returns the event announcing the connection (the
    /// events the login collected follow it).
    fn logged_in(&mut self, shared: &Shared, now: Instant, out: &mut BytesMut) -> Self::Event;
    /// Reads one server command after login (`Ok(None)`: need more).
    fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Read<Self::Event>>, ClientError>;
    /// An application command: writes it when connected (`out` is
    /// `Some`), and keeps the state a later login restores either way.
    fn command(&mut self, cmd: Self::Command, out: Option<&mut BytesMut>);
    /// Writes periodic commands due by `now` (call heartbeats); returns
    /// when the next is due.
    fn poll_timer(&mut self, now: Instant, out: &mut BytesMut) -> Option<Instant>;
    /// The event announcing that the connection was lost and when the next
    /// attempt is made.
    fn reconnecting(error: ClientError, attempt: u32, delay: Duration) -> Self::Event;
    /// The event announcing that the client is done (`None`: closed by the
    /// application); the event stream ends after it.
    fn closed(error: Option<ClientError>) -> Self::Event;
}

/// Everything one driver task holds.
pub(crate) struct Driver<P: Protocol, C> {
    pub proto: P,
    pub connector: C,
    pub opts: Options,
    pub shared: Arc<Shared>,
    pub cmds: mpsc::Receiver<Cmd<P::Command>>,
    pub events: mpsc::Sender<P::Event>,
}

/// How a connection ended.
enum End {
    /// The application closed the client.
    Closed,
    /// It was lost (or never came up).
    Lost(ClientError),
}

impl<P: Protocol, C: Connect> Driver<P, C> {
    /// Runs the client until it is closed or gives up. `ready` is told how
    /// the first login went; if it failed, the driver ends without events.
    pub(crate) async fn run(mut self, ready: oneshot::Sender<Result<(), ClientError>>) {
        let mut ready = Some(ready);
        let policy = self.opts.reconnect.unwrap_or_default();
        let mut delays = Delays::new(policy, backoff::seed());
        let mut rbuf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut login_events = Vec::new();
        loop {
            rbuf.clear();
            out.clear();
            login_events.clear();
            let login = tokio::time::timeout(
                self.opts.login_timeout,
                self.establish(&mut rbuf, &mut login_events),
            )
            .await
            .unwrap_or(Err(ClientError::Timeout("login")));
            let end = match login {
                Ok(stream) => {
                    delays.reset();
                    let connected = self.proto.logged_in(&self.shared, Instant::now(), &mut out);
                    self.shared.connected.store(true, Ordering::SeqCst);
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                    self.emit(connected).await;
                    for ev in login_events.drain(..) {
                        self.emit(ev).await;
                    }
                    let end = self.session(stream, &mut rbuf, &mut out).await;
                    self.shared.connected.store(false, Ordering::SeqCst);
                    self.shared.client_id.store(0, Ordering::SeqCst);
                    end
                }
                Err(e) => End::Lost(e),
            };
            let error = match end {
                End::Closed => {
                    self.emit(P::closed(None)).await;
                    return;
                }
                End::Lost(e) => e,
            };
            if let Some(r) = ready.take() {
                // The first login failed: `connect` returns the error.
                let _ = r.send(Err(error));
                return;
            }
            if error.is_fatal() || self.opts.reconnect.is_none() {
                self.emit(P::closed(Some(error))).await;
                return;
            }
            let (attempt, delay) = delays.next_delay();
            self.emit(P::reconnecting(error, attempt, delay)).await;
            if !self.pause(delay).await {
                self.emit(P::closed(None)).await;
                return;
            }
        }
    }

    /// Hands an event to the application (waiting for room in its queue;
    /// dropped if it dropped its event stream).
    async fn emit(&mut self, ev: P::Event) {
        let _ = self.events.send(ev).await;
    }

    /// Connects and logs in; login events (a presence dump) are collected
    /// in `emit`, to be handed over once the login is known good.
    async fn establish(
        &mut self,
        rbuf: &mut BytesMut,
        emit: &mut Vec<P::Event>,
    ) -> Result<C::Stream, ClientError> {
        let mut stream = self.connector.connect().await?;
        let mut login = BytesMut::new();
        self.proto
            .encode_login(self.shared.token().as_bytes(), &mut login);
        stream.write_all(&login).await?;
        // A TLS or WebSocket stream may hold what it was given until asked.
        stream.flush().await?;
        loop {
            while let Some(step) = self.proto.login_step(rbuf, emit)? {
                if let LoginStep::Done = step {
                    return Ok(stream);
                }
            }
            rbuf.reserve(READ_CHUNK);
            if stream.read_buf(rbuf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// One logged-in connection, until it is lost or the client closed.
    async fn session(
        &mut self,
        mut stream: C::Stream,
        rbuf: &mut BytesMut,
        out: &mut BytesMut,
    ) -> End {
        match self.serve(&mut stream, rbuf, out).await {
            Ok(()) => {
                // Closed by the application: the server sees end of stream.
                let _ = stream.shutdown().await;
                End::Closed
            }
            Err(e) => End::Lost(e),
        }
    }

    /// The logged-in loop: writes what is pending, then waits for the
    /// first of bytes from the server, a command, or a timer (call
    /// heartbeat, keepalive, keepalive answer overdue).
    async fn serve(
        &mut self,
        stream: &mut C::Stream,
        rbuf: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), ClientError> {
        let (mut last_tx, mut last_rx) = (Instant::now(), Instant::now());
        // When a keepalive went out that nothing has answered yet.
        let mut ping_sent: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let timer = self.proto.poll_timer(now, out);
            // Silent either way for a keepalive interval: the server's idle
            // timeout counts what it receives, and a connection that only
            // sends (call heartbeats) must still learn that it is dead.
            let idle_since = last_tx.min(last_rx);
            if ping_sent.is_none() && now >= idle_since + self.opts.keepalive {
                encode_keepalive(out);
                ping_sent = Some(now);
            }
            if !out.is_empty() {
                stream.write_all(out).await?;
                stream.flush().await?;
                out.clear();
                last_tx = Instant::now();
                continue;
            }
            let mut wake = match ping_sent {
                Some(at) => at + self.opts.keepalive_timeout,
                None => idle_since + self.opts.keepalive,
            };
            if let Some(t) = timer {
                wake = wake.min(t);
            }
            if ping_sent.is_some_and(|at| now >= at + self.opts.keepalive_timeout) {
                return Err(ClientError::Timeout("keepalive answer"));
            }
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
                rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                read = stream.read_buf(rbuf) => {
                    if read? == 0 {
                        return Err(ClientError::Closed);
                    }
                    last_rx = Instant::now();
                    ping_sent = None;
                    while let Some(r) = self.proto.read(rbuf)? {
                        match r {
                            Read::Event(ev) => self.emit(ev).await,
                            Read::Nothing => {}
                            Read::Refused(e) => return Err(ClientError::Refused(e)),
                        }
                    }
                }
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::App(c)) => self.proto.command(c, Some(out)),
                    Some(Cmd::Close) | None => return Ok(()),
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Waits `delay` before the next attempt, keeping the commands that
    /// arrive meanwhile as state for the next login. False when the
    /// application closed the client meanwhile.
    async fn pause(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::App(c)) => self.proto.command(c, None),
                    Some(Cmd::Close) | None => return false,
                },
            }
        }
    }
}

/// Writes `OP_KEEPALIVE` (one byte, the same on both services).
fn encode_keepalive(out: &mut BytesMut) {
    out.put_u8(chatd_proto::OP_KEEPALIVE);
}
