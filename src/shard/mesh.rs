//! The cross-shard mesh: one unbounded crossbeam channel into each shard,
//! and a wake-up that neither blocks the sender nor busy-spins the receiver.
//!
//! Each shard's inbox task drains its channel, then marks itself parked and
//! awaits a `tokio::sync::Notify`. A sender pushes, then pokes the Notify
//! only if it finds the parked mark set (and clears it), so a busy shard
//! costs senders a fence and one atomic load per message (a swap only when
//! the receiver is parked) and no system call, and an idle
//! one costs one wake (an eventfd write inside tokio) per burst.
//!
//! Lost wake-ups are impossible: the receiver sets `parked` before its last
//! emptiness check and the sender pushes before it reads `parked` (both
//! sequentially consistent), so at least one of them sees the other; and
//! `Notify::notify_one` stores a permit when nobody is waiting yet.

use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Notify;

use super::msg::ShardMsg;

/// The receiving side of one shard's channel, shared with its senders for
/// the wake-up.
pub struct Inbox {
    parked: AtomicBool,
    notify: Notify,
}

/// Senders into every shard. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct Mesh {
    senders: Arc<[(Sender<ShardMsg>, Arc<Inbox>)]>,
}

/// One shard's end: its receiver and wake-up.
pub struct InboxRx {
    rx: Receiver<ShardMsg>,
    inbox: Arc<Inbox>,
}

/// Builds the mesh for `shards` shards: the shared senders and each
/// shard's receiving end.
pub fn mesh(shards: usize) -> (Mesh, Vec<InboxRx>) {
    let mut senders = Vec::with_capacity(shards);
    let mut rxs = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox = Arc::new(Inbox {
            parked: AtomicBool::new(false),
            notify: Notify::new(),
        });
        senders.push((tx, inbox.clone()));
        rxs.push(InboxRx { rx, inbox });
    }
    (
        Mesh {
            senders: senders.into(),
        },
        rxs,
    )
}

impl Mesh {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Sends `msg` to shard `to` and wakes it if it is parked.
    pub fn send(&self, to: usize, msg: ShardMsg) {
        let (tx, inbox) = &self.senders[to];
        // The receiver lives as long as the process unless the shard
        // thread died; then there is nobody to deliver to.
        if tx.send(msg).is_err() {
            return;
        }
        fence(SeqCst);
        if inbox.parked.load(SeqCst) && inbox.parked.swap(false, SeqCst) {
            inbox.notify.notify_one();
        }
    }
}

impl InboxRx {
    /// Takes one message without waiting.
    pub fn try_recv(&self) -> Option<ShardMsg> {
        // Disconnected cannot happen while the shard holds its own
        // sender in the mesh; either way there is nothing to take.
        self.rx.try_recv().ok()
    }

    /// Waits until the channel may hold a message. Call after `try_recv`
    /// returned `None`.
    pub async fn wait(&self) {
        self.inbox.parked.store(true, SeqCst);
        fence(SeqCst);
        if !self.rx.is_empty() {
            self.inbox.parked.store(false, SeqCst);
            return;
        }
        self.inbox.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::msg::ShardMsg;

    #[test]
    fn a_message_sent_while_parked_wakes_the_receiver() {
        let (mesh, mut rxs) = mesh(1);
        let rx = rxs.remove(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sender = std::thread::spawn(move || {
            for _ in 0..1000 {
                mesh.send(0, ShardMsg::Nop);
            }
        });
        rt.block_on(async {
            let mut got = 0;
            while got < 1000 {
                match rx.try_recv() {
                    Some(_) => got += 1,
                    None => rx.wait().await,
                }
            }
        });
        sender.join().unwrap();
    }
}
