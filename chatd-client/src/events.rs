//! The stream of events a client hands its application.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// A client's events, in the order they happened. Read them with
/// [`Events::recv`] or as a [`Stream`](futures_core::Stream); the stream
/// ends after the client's closing event.
///
/// Events are buffered up to the builder's `event_capacity`; when the
/// buffer is full the client stops reading from the server until there is
/// room (so a slow application slows its connection, it does not grow
/// memory). An application that does not want events drops this: they are
/// then discarded.
#[derive(Debug)]
pub struct Events<E> {
    rx: mpsc::Receiver<E>,
}

impl<E> Events<E> {
    pub(crate) fn new(rx: mpsc::Receiver<E>) -> Self {
        Events { rx }
    }

    /// The next event; `None` once the client is closed and every event
    /// was read.
    pub async fn recv(&mut self) -> Option<E> {
        self.rx.recv().await
    }

    /// The next event if one is already waiting.
    pub fn try_recv(&mut self) -> Option<E> {
        self.rx.try_recv().ok()
    }
}

impl<E> futures_core::Stream for Events<E> {
    type Item = E;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<E>> {
        self.rx.poll_recv(cx)
    }
}
