//! What the queues between shards may hold, and who waits when one is full
//! (docs/architecture.md, "Back-pressure between shards").
//!
//! The mesh's channels stay unbounded: a shard thread never blocks on a
//! send (two shards blocked on each other's full channel would deadlock,
//! and one blocked shard stalls every connection it owns). Instead each
//! shard's inbox has a count of the bytes of the frames queued to it
//! ([`ShardMsg::queued_bytes`](super::msg::ShardMsg::queued_bytes): an
//! OP_RTMSG on its way to its room's home shard, a fan-out list on its way
//! to the recipients' shard), which the sending shard adds to
//! ([`Budget::charge`]: an OP_RTMSG when it is queued, a fan-out when it
//! leaves, see
//! [`ShardMsg::counts_when_queued`](super::msg::ShardMsg::counts_when_queued))
//! and the receiving shard takes off once per batch handled
//! ([`Budget::release`]).
//!
//! The bound is enforced where waiting is harmless, at the socket of the
//! client that produces the load: before an OP_RTMSG is handled, the input
//! path asks [`Budget::full_for`]; when it names an inbox, the connection
//! stops being read (the command stays in its read buffer) until
//! [`Budget::room_in`] says the inbox is down to its resume mark.
//!
//! - An inbox is *full* from when its count reaches the budget
//!   (`--max-shard-queue-bytes`) until it is down to the resume mark (half
//!   of it, [`limits::SHARD_QUEUE_RESUME_DIVISOR`]). While it is full, every
//!   connection about to send its room an OP_RTMSG waits, those that had
//!   not paused yet too: the connections that paused first are not starved
//!   by those that keep arriving.
//! - A room homed on the sender's own shard is handled in the same pass as
//!   the read and never waits for its own inbox.
//! - Past [`limits::SHARD_QUEUE_HARD_FACTOR`] times the budget, which only
//!   fan-out lists can bring about (a shard whose connections cannot take
//!   their deliveries as fast as they come), every connection about to send
//!   an OP_RTMSG waits for that inbox, since any room may have members on
//!   that shard.
//!
//! An OP_RTMSG counts from the moment it is queued, so every check sees
//! the ones before it: a home shard's count exceeds its budget by at most
//! one message per shard sending to it at the moment it filled. A
//! recipient shard's count passes the hard limit by at most the fan-out of
//! the OP_RTMSG already accepted, and of one read's worth of OP_RTMSG to a
//! room homed on the sender's own shard (handled after the read).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};

use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::limits;

/// The budget of every shard's inbox. Shared by all threads; each inbox's
/// count on its own cache line, apart from the channel's and its
/// neighbours', since every charged message writes it.
pub struct Budget {
    inboxes: Box<[CachePadded<Count>]>,
    /// Inboxes at or past the hard limit.
    over_hard: CachePadded<AtomicUsize>,
    /// Bytes an inbox may hold before it is full.
    limit: usize,
}

/// One inbox's count.
struct Count {
    /// Bytes of the frames queued to this shard and not handled yet.
    queued: AtomicUsize,
    /// The most `queued` has been (a gauge for /metrics).
    peak: AtomicUsize,
    /// Reached the budget and not yet down to the resume mark.
    full: AtomicBool,
    /// A connection waits for room (set before it looks at `queued`).
    waiting: AtomicBool,
    /// Wakes the connections waiting for room.
    room: Notify,
}

impl Budget {
    /// `shards` inboxes of `limit` bytes each.
    pub fn new(shards: usize, limit: usize) -> Self {
        let inboxes = (0..shards)
            .map(|_| {
                CachePadded::new(Count {
                    queued: AtomicUsize::new(0),
                    peak: AtomicUsize::new(0),
                    full: AtomicBool::new(false),
                    waiting: AtomicBool::new(false),
                    room: Notify::new(),
                })
            })
            .collect();
        Self {
            inboxes,
            over_hard: CachePadded::new(AtomicUsize::new(0)),
            limit: limit.max(limits::SHARD_QUEUE_RESUME_DIVISOR),
        }
    }

    /// Counts `bytes` of frames queued to shard `to`.
    pub fn charge(&self, to: usize, bytes: usize) {
        let count = &self.inboxes[to];
        let before = count.queued.fetch_add(bytes, SeqCst);
        let now = before + bytes;
        if now > count.peak.load(Relaxed) {
            count.peak.fetch_max(now, Relaxed);
        }
        if now >= self.limit && !count.full.load(Relaxed) {
            count.full.store(true, SeqCst);
        }
        let hard = self.hard_limit();
        if before < hard && now >= hard {
            self.over_hard.fetch_add(1, SeqCst);
        }
    }

    /// Takes `bytes` of frames that shard `to` handled (or that never
    /// reached it) off its count; once it is down to the resume mark, the
    /// inbox is no longer full and the connections waiting for it wake.
    pub fn release(&self, to: usize, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let count = &self.inboxes[to];
        let before = count.queued.fetch_sub(bytes, SeqCst);
        // Every release follows its charge; a miscount here would wrap and
        // leave the inbox full for good.
        debug_assert!(
            before >= bytes,
            "shard {to}: released {bytes} of {before} bytes"
        );
        let now = before.saturating_sub(bytes);
        let hard = self.hard_limit();
        if before >= hard && now < hard {
            self.over_hard.fetch_sub(1, SeqCst);
        }
        if now < self.resume_mark() {
            if count.full.load(Relaxed) {
                count.full.store(false, SeqCst);
            }
            // The waiter sets `waiting` before it reads `queued`, and this
            // reads `waiting` after it wrote `queued`: one of them sees the
            // other, so no waiter sleeps through the drop to the mark.
            if count.waiting.load(SeqCst) && count.waiting.swap(false, SeqCst) {
                count.room.notify_waiters();
            }
        }
    }

    /// The inbox a connection of shard `me` must wait for before it sends
    /// an OP_RTMSG to a room homed on shard `home`, if any: `home`'s while it
    /// is full (unless `home` is `me`), else any inbox past the hard limit.
    pub fn full_for(&self, home: usize, me: usize) -> Option<usize> {
        if home != me && self.is_full(home) {
            return Some(home);
        }
        if self.over_hard.load(SeqCst) == 0 {
            return None;
        }
        let hard = self.hard_limit();
        (0..self.inboxes.len()).find(|&i| self.inboxes[i].queued.load(SeqCst) >= hard)
    }

    /// Whether shard `to`'s inbox is full: at the budget, or between it and
    /// the resume mark on its way down. (A `full` mark left set by a charge
    /// that raced a release below the mark is ignored.)
    fn is_full(&self, to: usize) -> bool {
        let count = &self.inboxes[to];
        let queued = count.queued.load(SeqCst);
        queued >= self.limit || (queued >= self.resume_mark() && count.full.load(SeqCst))
    }

    /// Whether shard `to`'s inbox is down to its resume mark.
    pub fn has_room(&self, to: usize) -> bool {
        self.inboxes[to].queued.load(SeqCst) < self.resume_mark()
    }

    /// Waits until shard `to`'s inbox is down to its resume mark.
    pub async fn room_in(&self, to: usize) {
        let count = &self.inboxes[to];
        loop {
            let notified = count.room.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a wake between the check and
            // the await is not lost.
            notified.as_mut().enable();
            count.waiting.store(true, SeqCst);
            if self.has_room(to) {
                return;
            }
            notified.await;
        }
    }

    /// Bytes queued in all inboxes now, and the most one inbox has held.
    pub fn queued_bytes(&self) -> (u64, u64) {
        let (mut now, mut peak) = (0u64, 0u64);
        for count in self.inboxes.iter() {
            now += count.queued.load(Relaxed) as u64;
            peak = peak.max(count.peak.load(Relaxed) as u64);
        }
        (now, peak)
    }

    fn resume_mark(&self) -> usize {
        self.limit / limits::SHARD_QUEUE_RESUME_DIVISOR
    }

    fn hard_limit(&self) -> usize {
        self.limit.saturating_mul(limits::SHARD_QUEUE_HARD_FACTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_waits_for_its_rooms_home_while_its_inbox_is_full() {
        let b = Budget::new(3, 1000);
        b.charge(1, 999);
        assert_eq!(b.full_for(1, 0), None, "below the budget");
        b.charge(1, 1);
        assert_eq!(b.full_for(1, 0), Some(1), "at the budget");
        // A room homed on the sender's own shard is handled in the same
        // pass: never a wait on its own inbox.
        assert_eq!(b.full_for(1, 1), None);
        assert_eq!(b.full_for(2, 0), None, "another shard has room");
        // Still full on the way down, for newcomers too: they queue behind
        // the connections already waiting instead of starving them.
        b.release(1, 400);
        assert!(!b.has_room(1));
        assert_eq!(b.full_for(1, 0), Some(1), "full until the resume mark");
        b.release(1, 101);
        assert!(b.has_room(1));
        assert_eq!(b.full_for(1, 0), None, "no longer full at the mark");
        // Filling again from below the budget is not full.
        b.charge(1, 400);
        assert_eq!(b.full_for(1, 0), None);
        assert_eq!(b.queued_bytes(), (899, 1000));
    }

    #[test]
    fn an_inbox_past_the_hard_limit_pauses_every_sender() {
        // Only fan-out lists get an inbox there: any room may have members
        // on that shard, so every send waits for it.
        let b = Budget::new(3, 1000);
        b.charge(2, 1999);
        assert_eq!(b.full_for(1, 0), None);
        b.charge(2, 1);
        assert_eq!(b.full_for(1, 0), Some(2));
        assert_eq!(
            b.full_for(0, 0),
            Some(2),
            "a room on the sender's shard too"
        );
        b.release(2, 1);
        assert_eq!(b.full_for(1, 0), None, "back under the hard limit");
    }

    #[test]
    fn a_waiter_wakes_when_the_inbox_drains_on_another_thread() {
        let b = std::sync::Arc::new(Budget::new(2, 1000));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        for _ in 0..200 {
            b.charge(1, 1000);
            let drainer = {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        b.release(1, 100);
                    }
                })
            };
            // A lost wake-up leaves the waiter asleep: fail, do not hang.
            let woke = rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(10), b.room_in(1)).await
            });
            assert!(woke.is_ok(), "the waiter slept through the drain");
            drainer.join().unwrap();
            assert_eq!(b.queued_bytes().0, 0);
        }
    }
}
