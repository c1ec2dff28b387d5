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
//!
//! The channels are unbounded, and a shard never blocks on a send; what
//! they may hold is bounded at the clients' sockets instead ([`Budget`],
//! one per mesh).
//!
//! A shard's channel closes only when its thread ends: normally after a
//! drain (messages sent to it then are moot), or by a panic, which the
//! binary turns into the end of the process ([`crate::fatal`]). A message
//! to a closed channel outside a drain is logged, once per shard.

use std::sync::atomic::{fence, AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Notify;

use super::budget::Budget;
use super::msg::ShardMsg;

/// The receiving side of one shard's channel, shared with its senders for
/// the wake-up.
pub struct Inbox {
    parked: AtomicBool,
    notify: Notify,
    /// A message to this shard found its channel closed outside a drain,
    /// and that was logged.
    gone_reported: AtomicBool,
}

/// Senders into every shard. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct Mesh {
    senders: Arc<[(Sender<ShardMsg>, Arc<Inbox>)]>,
    /// Set once the process drains: shards that finished may be gone.
    draining: Arc<AtomicBool>,
    /// What each inbox may hold.
    budget: Arc<Budget>,
}

/// One shard's end: its receiver and wake-up.
pub struct InboxRx {
    rx: Receiver<ShardMsg>,
    inbox: Arc<Inbox>,
}

/// Builds the mesh for `shards` shards, each inbox with a budget of
/// `budget` bytes: the shared senders and each shard's receiving end.
pub fn mesh(shards: usize, budget: usize) -> (Mesh, Vec<InboxRx>) {
    let mut senders = Vec::with_capacity(shards);
    let mut rxs = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox = Arc::new(Inbox {
            parked: AtomicBool::new(false),
            notify: Notify::new(),
            gone_reported: AtomicBool::new(false),
        });
        senders.push((tx, inbox.clone()));
        rxs.push(InboxRx { rx, inbox });
    }
    (
        Mesh {
            senders: senders.into(),
            draining: Arc::new(AtomicBool::new(false)),
            budget: Arc::new(Budget::new(shards, budget)),
        },
        rxs,
    )
}

impl Mesh {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// What each inbox may hold, and the connections waiting for room.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The process is draining: from now on a shard that finished its
    /// drain may be gone, and messages to it are dropped without a word.
    pub fn begin_drain(&self) {
        self.draining.store(true, SeqCst);
    }

    /// Sends `msg` to shard `to` and wakes it if it is parked. Returns
    /// false when the shard is gone (its thread ended), which outside a
    /// drain is logged once per shard.
    pub fn send(&self, to: usize, msg: ShardMsg) -> bool {
        let (tx, inbox) = &self.senders[to];
        if tx.send(msg).is_err() {
            if !self.draining.load(SeqCst) && !inbox.gone_reported.swap(true, SeqCst) {
                tracing::error!(
                    shard = to,
                    "shard {to} is gone: messages to it (its rooms, users and connections) are dropped"
                );
            }
            return false;
        }
        fence(SeqCst);
        if inbox.parked.load(SeqCst) && inbox.parked.swap(false, SeqCst) {
            inbox.notify.notify_one();
        }
        true
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
        let (mesh, mut rxs) = mesh(1, 1 << 20);
        let rx = rxs.remove(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let sender = std::thread::spawn(move || {
            for _ in 0..1000 {
                assert!(mesh.send(0, ShardMsg::Nop));
            }
        });
        // A lost wake-up parks the receiver for good: fail, do not hang.
        let got = rt.block_on(async {
            let mut got = 0;
            let receive = async {
                while got < 1000 {
                    match rx.try_recv() {
                        Some(_) => got += 1,
                        None => rx.wait().await,
                    }
                }
            };
            let woke = tokio::time::timeout(std::time::Duration::from_secs(10), receive).await;
            (woke.is_ok(), got)
        });
        assert_eq!(
            got,
            (true, 1000),
            "the receiver stayed parked: a lost wake-up"
        );
        sender.join().unwrap();
    }

    #[test]
    fn a_message_to_a_shard_that_is_gone_is_refused_not_lost_silently() {
        let reported = |m: &Mesh| m.senders[1].1.gone_reported.load(SeqCst);
        // Outside a drain a dead shard is reported (logged once).
        let (dead, rxs) = mesh(2, 1 << 20);
        drop(rxs);
        assert!(!dead.send(1, ShardMsg::Nop));
        assert!(reported(&dead));
        // During a drain shards that finished are expected to be gone.
        let (drained, rxs) = mesh(2, 1 << 20);
        drop(rxs);
        drained.begin_drain();
        assert!(!drained.send(1, ShardMsg::Nop));
        assert!(!reported(&drained));
    }
}
