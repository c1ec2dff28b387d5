//! The builder both clients are made with: the options they share here,
//! each service's own in [`crate::chat`] and [`crate::presence`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::connect::Connect;
use crate::error::ClientError;
use crate::events::Events;
use crate::limits::COMMAND_CAPACITY;
use crate::session::{Cmd, Driver, Options, Protocol, Shared};

/// Options of a client before it connects. Made by
/// [`ChatClient::builder`](crate::ChatClient::builder) or
/// [`PresenceClient::builder`](crate::PresenceClient::builder); `S` holds
/// the service's own options.
#[derive(Clone, Debug)]
#[must_use]
pub struct Builder<S> {
    pub(crate) token: String,
    pub(crate) opts: Options,
    pub(crate) service: S,
}

impl<S> Builder<S> {
    pub(crate) fn new(token: String, service: S) -> Self {
        Builder {
            token,
            opts: Options::default(),
            service,
        }
    }

    /// Sends `OP_KEEPALIVE` after this long without sending or without
    /// receiving anything (default 30 s; the server closes connections
    /// silent for its idle timeout, 90 s by default).
    pub fn keepalive(mut self, every: Duration) -> Self {
        self.opts.keepalive = every;
        self
    }

    /// Takes the connection for dead, and reconnects, when a keepalive
    /// gets no answer (nothing at all arrives) within this (default 10 s).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.opts.keepalive_timeout = timeout;
        self
    }

    /// Connect and login must be done within this (default 10 s).
    pub fn login_timeout(mut self, timeout: Duration) -> Self {
        self.opts.login_timeout = timeout;
        self
    }

    /// Reconnects with this backoff when the connection is lost (the
    /// default: [`Backoff::default`]).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.opts.reconnect = Some(backoff);
        self
    }

    /// Does not reconnect: a lost connection closes the client.
    pub fn no_reconnect(mut self) -> Self {
        self.opts.reconnect = None;
        self
    }

    /// Events buffered for the application before the client stops
    /// reading from the server (default 1024).
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.opts.event_capacity = events.max(1);
        self
    }

    /// Starts the connection task and waits for the first login.
    pub(crate) async fn start<P: Protocol, C: Connect>(
        self,
        proto: P,
        connector: C,
    ) -> Result<(Handle<P::Command>, Events<P::Event>), ClientError> {
        if self.token.is_empty() || self.token.len() > chatd_proto::limits::MAX_TOKEN_LEN {
            return Err(ClientError::InvalidArgument("token length"));
        }
        let shared = Arc::new(Shared::new(self.token));
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(self.opts.event_capacity);
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = Driver {
            proto,
            connector,
            opts: self.opts,
            shared: shared.clone(),
            cmds: cmd_rx,
            events: ev_tx,
        };
        tokio::spawn(driver.run(ready_tx));
        match ready_rx.await {
            Ok(Ok(())) => Ok((Handle { tx: cmd_tx, shared }, Events::new(ev_rx))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::ClientClosed),
        }
    }
}

/// What every client handle holds: the way to its connection task, and
/// the state they share. Cloning it is cheap.
#[derive(Debug)]
pub(crate) struct Handle<C> {
    tx: mpsc::Sender<Cmd<C>>,
    pub(crate) shared: Arc<Shared>,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<C> Handle<C> {
    /// Hands a command to the connection task.
    pub(crate) async fn command(&self, cmd: C) -> Result<(), ClientError> {
        self.tx
            .send(Cmd::App(cmd))
            .await
            .map_err(|_| ClientError::ClientClosed)
    }

    /// Whether the client is logged in right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.shared
            .connected
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The token for the next login.
    pub(crate) fn set_token(&self, token: String) {
        match self.shared.token.lock() {
            Ok(mut t) => *t = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// Asks the connection task to close and end.
    pub(crate) async fn close(&self) {
        let _ = self.tx.send(Cmd::Close).await;
    }
}
