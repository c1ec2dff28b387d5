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
//! Back-pressure: the channels stay unbounded (a shard thread never blocks
//! on a send), but each inbox counts the bytes of the frames queued to it
//! ([`ShardMsg::queued_bytes`]: OP_RTMSG deliveries on their way to a
//! room's home shard, and the fan-out lists to connections' shards), the
//! sender adding when it queues a message and the receiver taking them off
//! once handled. A client connection that is about to send an OP_RTMSG to
//! an inbox holding more than the budget (`--max-shard-queue-bytes`)
//! stops reading instead ([`Mesh::full_for`], [`Mesh::room_in`]) and
//! resumes when the inbox is down to half of it. Only fan-out lists can
//! push an inbox past twice the budget (a connection's shard that cannot
//! keep up with the deliveries to its connections), and then every
//! connection sending an OP_RTMSG to another shard pauses, since any
//! room may have members there: the memory the mesh holds stays bounded
//! by about twice the budget per shard, plus one read per shard that was
//! under way when the budget was reached.
//!
//! A shard's channel closes only when its thread ends: normally after a
//! drain (messages sent to it then are moot), or by a panic, which the
//! binary turns into the end of the process ([`crate::fatal`]). A message
//! to a closed channel outside a drain is logged, once per shard.

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::Notify;

use super::msg::ShardMsg;

/// The receiving side of one shard's channel, shared with its senders for
/// the wake-up.
pub struct Inbox {
    parked: AtomicBool,
    notify: Notify,
    /// A message to this shard found its channel closed outside a drain,
    /// and that was logged.
    gone_reported: AtomicBool,
    /// Bytes of the frames queued to this shard and not handled yet.
    queued: AtomicUsize,
    /// The most `queued` has been (a gauge for /metrics).
    peak: AtomicUsize,
    /// A connection waits for `queued` to fall to the low-water mark.
    waiting: AtomicBool,
    /// Wakes the connections waiting for room in this inbox.
    room: Notify,
}

/// Senders into every shard. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct Mesh {
    senders: Arc<[(Sender<ShardMsg>, Arc<Inbox>)]>,
    /// Set once the process drains: shards that finished may be gone.
    draining: Arc<AtomicBool>,
    /// Bytes an inbox may hold before connections sending to it pause.
    budget: usize,
    /// Inboxes holding at least twice the budget (the hard limit).
    over_hard: Arc<AtomicUsize>,
}

/// One shard's end: its receiver and wake-up.
pub struct InboxRx {
    rx: Receiver<ShardMsg>,
    inbox: Arc<Inbox>,
}

/// Builds the mesh for `shards` shards, each inbox holding `budget` bytes
/// of frames before connections sending to it pause: the shared senders
/// and each shard's receiving end.
pub fn mesh(shards: usize, budget: usize) -> (Mesh, Vec<InboxRx>) {
    let mut senders = Vec::with_capacity(shards);
    let mut rxs = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox = Arc::new(Inbox {
            parked: AtomicBool::new(false),
            notify: Notify::new(),
            gone_reported: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            room: Notify::new(),
        });
        senders.push((tx, inbox.clone()));
        rxs.push(InboxRx { rx, inbox });
    }
    (
        Mesh {
            senders: senders.into(),
            draining: Arc::new(AtomicBool::new(false)),
            budget: budget.max(1),
            over_hard: Arc::new(AtomicUsize::new(0)),
        },
        rxs,
    )
}

impl Mesh {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
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

    /// Counts `bytes` of frames queued to shard `to` (by its sender, when
    /// it queues the message; see [`ShardMsg::queued_bytes`]).
    pub fn charge(&self, to: usize, bytes: usize) {
        let inbox = &self.senders[to].1;
        let before = inbox.queued.fetch_add(bytes, SeqCst);
        let now = before + bytes;
        if now > inbox.peak.load(Relaxed) {
            inbox.peak.fetch_max(now, Relaxed);
        }
        let hard = self.hard_limit();
        if before < hard && now >= hard {
            self.over_hard.fetch_add(1, SeqCst);
        }
    }

    /// Takes `bytes` of frames that shard `to` has handled (or that never
    /// reached it) off its count, and wakes the connections waiting for
    /// room once it is down to the low-water mark.
    pub fn release(&self, to: usize, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let inbox = &self.senders[to].1;
        let before = inbox.queued.fetch_sub(bytes, SeqCst);
        let now = before.saturating_sub(bytes);
        let hard = self.hard_limit();
        if before >= hard && now < hard {
            self.over_hard.fetch_sub(1, SeqCst);
        }
        // The waiter sets `waiting` before it reads `queued`, and this
        // reads `waiting` after it wrote `queued`: one of them sees the
        // other, so no waiter sleeps through the drop below the mark.
        if now < self.low_water() && inbox.waiting.load(SeqCst) && inbox.waiting.swap(false, SeqCst)
        {
            inbox.room.notify_waiters();
        }
    }

    /// The inbox a connection of shard `me` must wait for before it sends
    /// an OP_RTMSG to a room homed on shard `home`, if any: `home`'s, when
    /// it holds the budget or more (a room homed on `me` itself is handled
    /// in the same pass and never waits on its own inbox); else any inbox
    /// over the hard limit, since the room may have members there.
    pub fn full_for(&self, home: usize, me: usize) -> Option<usize> {
        if home != me && self.senders[home].1.queued.load(SeqCst) >= self.budget {
            return Some(home);
        }
        if self.over_hard.load(SeqCst) == 0 {
            return None;
        }
        let hard = self.hard_limit();
        (0..self.senders.len()).find(|&i| self.senders[i].1.queued.load(SeqCst) >= hard)
    }

    /// Whether shard `to`'s inbox is down to the low-water mark, at which
    /// the connections waiting for it resume.
    pub fn has_room(&self, to: usize) -> bool {
        self.senders[to].1.queued.load(SeqCst) < self.low_water()
    }

    /// Waits until shard `to`'s inbox is down to the low-water mark (half
    /// the budget). The caller bounds the wait (a shard that ended never
    /// takes its count down).
    pub async fn room_in(&self, to: usize) {
        let inbox = &self.senders[to].1;
        loop {
            let notified = inbox.room.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a wake between the check
            // and the await is not lost.
            notified.as_mut().enable();
            inbox.waiting.store(true, SeqCst);
            if self.has_room(to) {
                return;
            }
            notified.await;
        }
    }

    /// Bytes queued in all inboxes now, and the most one inbox has held.
    pub fn queued_bytes(&self) -> (u64, u64) {
        let (mut now, mut peak) = (0u64, 0u64);
        for (_, inbox) in self.senders.iter() {
            now += inbox.queued.load(Relaxed) as u64;
            peak = peak.max(inbox.peak.load(Relaxed) as u64);
        }
        (now, peak)
    }

    fn low_water(&self) -> usize {
        self.budget / 2
    }

    fn hard_limit(&self) -> usize {
        self.budget.saturating_mul(2)
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
    fn a_send_waits_for_its_rooms_home_once_its_queue_holds_the_budget() {
        let (mesh, _rxs) = mesh(3, 1000);
        mesh.charge(1, 999);
        assert_eq!(mesh.full_for(1, 0), None, "below the budget");
        mesh.charge(1, 1);
        assert_eq!(mesh.full_for(1, 0), Some(1), "at the budget");
        // A room homed on the sender's own shard is handled in the same
        // pass: never a wait on its own queue.
        assert_eq!(mesh.full_for(1, 1), None);
        assert_eq!(mesh.full_for(2, 0), None, "another shard has room");
        // Resumed at half the budget, not before.
        mesh.release(1, 400);
        assert!(!mesh.has_room(1));
        mesh.release(1, 101);
        assert!(mesh.has_room(1));
        assert_eq!(mesh.queued_bytes(), (499, 1000));
    }

    #[test]
    fn a_queue_past_twice_the_budget_pauses_sends_to_every_shard() {
        // Only fan-out lists get a queue there: any room may have members
        // on that shard, so every cross-shard send waits for it.
        let (mesh, _rxs) = mesh(3, 1000);
        mesh.charge(2, 1999);
        assert_eq!(mesh.full_for(1, 0), None);
        mesh.charge(2, 1);
        assert_eq!(mesh.full_for(1, 0), Some(2));
        assert_eq!(mesh.full_for(0, 0), Some(2));
        mesh.release(2, 1);
        assert_eq!(mesh.full_for(1, 0), None, "back under the hard limit");
    }

    #[test]
    fn a_waiter_wakes_when_the_queue_drains_from_another_thread() {
        let (mesh, _rxs) = mesh(2, 1000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        for _ in 0..200 {
            mesh.charge(1, 1000);
            let drainer = {
                let mesh = mesh.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        mesh.release(1, 100);
                    }
                })
            };
            // A lost wake-up leaves the waiter asleep: fail, do not hang.
            let woke = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), mesh.room_in(1)).await
            });
            assert!(woke.is_ok(), "the waiter slept through the drain");
            drainer.join().unwrap();
            assert_eq!(mesh.queued_bytes().0, 0);
        }
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
