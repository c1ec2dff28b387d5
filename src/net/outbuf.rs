//! A connection's outbound queue: frames shared by reference (`Bytes`),
//! a byte count capped by `--max-outbuf-bytes`, and the waker of the
//! connection's writer task.
//!
//! Frames are never copied here: a room broadcast queues clones of one
//! `Bytes` (a reference-count increment) on every recipient.
//!
//! A connection has a writer task only while it has output: the queue
//! says when one must be started ([`Wake::Spawn`]), and a writer that
//! stayed idle for a whole timer tick is retired, so an idle connection
//! costs no task.
//!
//! A frame queued with [`Flush::Batched`] wakes no writer: it goes out
//! with the next frame written to the connection anyway, or when the shard
//! flushes its batch list (`--presence-batch-ms`), whichever comes first.
//! Order on the connection is the queue's order either way.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::{Buf, Bytes};

use crate::limits;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// Queueing it would exceed the cap: the reader is too slow.
    Full,
}

/// The connection's writer task, if any.
#[derive(Default)]
enum Writer {
    /// No task: the next frame must start one.
    #[default]
    None,
    /// A task waits for frames.
    Parked(Waker),
    /// A task is running (writing, or about to look at the queue).
    Running,
    /// The connection's read task is handling input and will write what
    /// that queues itself, before its next read: no task needed.
    Reader,
}

/// When a queued frame is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// As soon as the connection's writer gets to it.
    Now,
    /// With the connection's next write, at the latest at the shard's next
    /// batch flush: many small updates to one connection become one write.
    Batched,
}

/// What the caller must do after queueing.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Wake {
    /// A writer exists and was woken if needed (or, for a batched frame,
    /// the queue already waits for the batch flush).
    Done,
    /// No writer exists: start one.
    Spawn,
    /// A batched frame: put the connection on the shard's batch list.
    Batch,
}

/// What a writer should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write the batch it was given.
    Write,
    /// Nothing queued and the connection closes: shut the socket down.
    Close,
    /// Nothing queued for a whole tick: end the task.
    Retire,
}

/// Frames waiting to be written to one connection.
#[derive(Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames` (after any partial write of the first one).
    queued_bytes: usize,
    /// The writer task.
    writer: Writer,
    /// The writer wrote since the last tick.
    busy_this_tick: bool,
    /// The writer should end once the queue is empty.
    retire: bool,
    /// The connection is on its shard's batch list.
    batched: bool,
    /// Part of the first queued frame went out: the stream is mid-frame.
    front_started: bool,
    /// The last frame is queued ([`OutQueue::push_last`]): frames not
    /// started are dropped, those a write in progress puts back too.
    last: bool,
}

impl OutQueue {
    /// Queues `frame` unless that would take the queue over `cap` bytes,
    /// each frame charged its length plus [`limits::QUEUED_FRAME_OVERHEAD`].
    /// An empty queue always takes one frame, so a message larger than the
    /// cap (`--max-rtmsg-len` may exceed `--max-outbuf-bytes`) still reaches
    /// a reader that keeps up; memory stays bounded by cap + one frame.
    pub fn push(&mut self, frame: Bytes, cap: usize, flush: Flush) -> Result<Wake, PushError> {
        let cost = frame.len() + limits::QUEUED_FRAME_OVERHEAD;
        if self.queued_bytes > 0 && self.queued_bytes + cost > cap {
            return Err(PushError::Full);
        }
        // A frame shares the buffer it was cut from; on a queue this long
        // (the reader lags) it would keep that whole buffer alive while the
        // cap counts only the frame, so it is queued as a private copy.
        let frame = if self.frames.len() >= limits::SHARED_FRAMES_QUEUED_MAX {
            Bytes::copy_from_slice(&frame)
        } else {
            frame
        };
        self.queued_bytes += cost;
        self.frames.push_back(frame);
        Ok(match flush {
            Flush::Now => self.wake_writer(),
            Flush::Batched if std::mem::replace(&mut self.batched, true) => Wake::Done,
            Flush::Batched => Wake::Batch,
        })
    }

    /// The shard's batch flush: the connection leaves the batch list, and
    /// its writer is woken if anything still waits (or started: `Spawn`).
    pub fn flush_batched(&mut self) -> Wake {
        self.batched = false;
        if self.frames.is_empty() {
            return Wake::Done;
        }
        self.wake_writer()
    }

    /// Bytes the queue is charged for: its frames' bytes (after any
    /// partial write of the first one) plus the per-frame overhead.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Moves up to `max` frames into `batch` for one vectored write. They
    /// stay counted until [`OutQueue::written`] says how much went out.
    pub fn take_batch(&mut self, batch: &mut Vec<Bytes>, max: usize) {
        let n = self.frames.len().min(max);
        batch.extend(self.frames.drain(..n));
        if n > 0 {
            // A started frame went into the batch; the write puts it back.
            self.front_started = false;
        }
    }

    /// Queues `frame` as the last thing the connection is sent (OP_ERROR
    /// SLOW_CONSUMER), whatever the cap: every queued frame not started
    /// yet is dropped first (and those a write in progress puts back),
    /// so the reader gets whole frames, then this one, and what is left to
    /// write after the close is at most one frame's rest and `frame`.
    pub fn push_last(&mut self, frame: Bytes) -> Wake {
        let keep = usize::from(self.front_started).min(self.frames.len());
        for dropped in self.frames.drain(keep..) {
            let cost = dropped.len() + limits::QUEUED_FRAME_OVERHEAD;
            self.queued_bytes -= cost.min(self.queued_bytes);
        }
        self.last = true;
        self.queued_bytes += frame.len() + limits::QUEUED_FRAME_OVERHEAD;
        self.frames.push_back(frame);
        self.wake_writer()
    }

    /// After a write of `batch` that wrote `n` bytes: uncounts them (and
    /// the overhead of each frame written whole) and puts the unwritten
    /// rest back at the front, in order.
    pub fn written(&mut self, batch: &mut Vec<Bytes>, mut n: usize) {
        let wrote = n;
        let mut rest = 0;
        let mut partial = false;
        for frame in batch.iter_mut() {
            if n >= frame.len() {
                n -= frame.len();
                rest += 1;
            } else {
                partial = n > 0;
                frame.advance(n);
                break;
            }
        }
        let uncharged = wrote + rest * limits::QUEUED_FRAME_OVERHEAD;
        self.queued_bytes -= uncharged.min(self.queued_bytes);
        if self.last {
            // Only a started frame's rest goes back, before the last one.
            let keep = rest + usize::from(partial).min(batch.len() - rest);
            for dropped in batch.drain(keep..) {
                let cost = dropped.len() + limits::QUEUED_FRAME_OVERHEAD;
                self.queued_bytes -= cost.min(self.queued_bytes);
            }
        }
        for frame in batch.drain(rest..).rev() {
            self.frames.push_front(frame);
        }
        self.front_started = partial;
        batch.clear();
    }

    /// The writer's turn: moves up to `max` frames into `batch` and says
    /// to write them, or says to close or retire, or parks it.
    pub fn poll_writer(
        &mut self,
        batch: &mut Vec<Bytes>,
        max: usize,
        closing: bool,
        waker: &Waker,
    ) -> Option<Next> {
        if !self.frames.is_empty() {
            self.take_batch(batch, max);
            self.busy_this_tick = true;
            self.writer = Writer::Running;
            Some(Next::Write)
        } else if closing {
            Some(Next::Close)
        } else if self.retire {
            self.retire = false;
            self.writer = Writer::None;
            self.release();
            Some(Next::Retire)
        } else {
            self.writer = Writer::Parked(waker.clone());
            None
        }
    }

    /// Wakes the writer (to write, or to flush and close), or says that
    /// one must be started.
    pub fn wake_writer(&mut self) -> Wake {
        match std::mem::replace(&mut self.writer, Writer::Running) {
            Writer::None => {
                self.busy_this_tick = true;
                Wake::Spawn
            }
            Writer::Parked(w) => {
                w.wake();
                Wake::Done
            }
            Writer::Running => Wake::Done,
            Writer::Reader => {
                self.writer = Writer::Reader;
                Wake::Done
            }
        }
    }

    /// The read task starts handling input: unless a writer task exists,
    /// what the input produces is the read task's to write.
    pub fn reader_turn(&mut self) {
        if matches!(self.writer, Writer::None) {
            self.writer = Writer::Reader;
        }
    }

    /// The read task's write: moves up to `max` frames into `batch` and
    /// returns true, or, with nothing queued, ends its turn (the next frame
    /// queued starts a writer task) and returns false. False too when a
    /// writer task owns the queue.
    pub fn reader_take(&mut self, batch: &mut Vec<Bytes>, max: usize) -> bool {
        if !matches!(self.writer, Writer::Reader) {
            return false;
        }
        if self.frames.is_empty() {
            self.writer = Writer::None;
            self.release();
            return false;
        }
        self.take_batch(batch, max);
        true
    }

    /// The writer is gone and the queue is empty: give its storage back,
    /// so an idle connection holds none (a queue that held a frame keeps
    /// room for four, 128 bytes, otherwise). The next frame allocates
    /// again; while output flows the writer stays and the storage with it.
    fn release(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > 0 {
            self.frames = VecDeque::new();
        }
    }

    /// Called once per timer tick for a connection that has a writer:
    /// a writer idle for the whole tick is told to retire. Returns false
    /// once there is no writer task left to watch.
    pub fn tick(&mut self) -> bool {
        if matches!(self.writer, Writer::None | Writer::Reader) {
            return false;
        }
        // Batched frames wait for the batch flush, which needs the writer:
        // retiring it now would write them early.
        if std::mem::take(&mut self.busy_this_tick) || self.batched {
            return true;
        }
        self.retire = true;
        if let Writer::Parked(w) = std::mem::replace(&mut self.writer, Writer::Running) {
            w.wake();
        }
        false
    }

    /// Nothing queued and no writer of any kind.
    pub fn is_idle(&self) -> bool {
        self.frames.is_empty() && matches!(self.writer, Writer::None)
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.queued_bytes = 0;
        self.front_started = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-frame overhead, and a cap no test reaches.
    const O: usize = limits::QUEUED_FRAME_OVERHEAD;
    const BIG: usize = 1 << 20;

    #[test]
    fn push_beyond_cap_is_refused_and_leaves_the_queue_as_it_was() {
        let mut q = OutQueue::default();
        let cap = 2 * O + 8;
        assert_eq!(
            q.push(Bytes::from_static(b"12345"), cap, Flush::Now),
            Ok(Wake::Spawn)
        );
        assert_eq!(
            q.push(Bytes::from_static(b"6789"), cap, Flush::Now),
            Err(PushError::Full)
        );
        assert_eq!(q.queued_bytes(), O + 5);
        assert_eq!(
            q.push(Bytes::from_static(b"678"), cap, Flush::Now),
            Ok(Wake::Done)
        );
        assert_eq!(q.queued_bytes(), cap);
    }

    #[test]
    fn each_frame_is_charged_its_overhead_so_tiny_frames_cannot_flood_memory() {
        let mut q = OutQueue::default();
        let cap = 10 * (O + 1);
        let mut taken = 0;
        while q.push(Bytes::from_static(b"k"), cap, Flush::Now).is_ok() {
            taken += 1;
        }
        assert_eq!(
            taken, 10,
            "1-byte frames under a cap of 10 x (1 + overhead)"
        );
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 4);
        q.written(&mut batch, 4);
        assert_eq!(q.queued_bytes(), 6 * (O + 1));
    }

    #[test]
    fn an_empty_queue_takes_one_frame_larger_than_the_cap() {
        let mut q = OutQueue::default();
        assert_eq!(
            q.push(Bytes::from(vec![0; 20]), 8, Flush::Now),
            Ok(Wake::Spawn)
        );
        assert_eq!(
            q.push(Bytes::from_static(b"x"), 8, Flush::Now),
            Err(PushError::Full)
        );
    }

    #[test]
    fn partial_write_puts_the_unwritten_tail_back_in_order() {
        let mut q = OutQueue::default();
        for f in [&b"aaa"[..], b"bbb", b"ccc"] {
            let _ = q.push(Bytes::copy_from_slice(f), BIG, Flush::Now).unwrap();
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 10);
        assert_eq!(batch.len(), 3);
        q.written(&mut batch, 4); // "aaa" and one byte of "bbb"
        assert!(batch.is_empty());
        assert_eq!(q.queued_bytes(), 2 * O + 5);
        q.take_batch(&mut batch, 10);
        let rest: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(rest, b"bbccc");
    }

    #[test]
    fn take_batch_respects_the_iovec_limit() {
        let mut q = OutQueue::default();
        for _ in 0..5 {
            let _ = q.push(Bytes::from_static(b"x"), BIG, Flush::Now).unwrap();
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 2);
        assert_eq!(batch.len(), 2);
        q.written(&mut batch, 2);
        assert_eq!(q.queued_bytes(), 3 * (O + 1));
    }

    #[test]
    fn the_last_frame_follows_whole_frames_only() {
        let f = |b: &'static [u8]| Bytes::from_static(b);
        // Part of the first frame went out: its rest stays, the others go.
        let mut q = OutQueue::default();
        for frame in [f(b"aaaa"), f(b"bbbb"), f(b"cccc")] {
            let _ = q.push(frame, BIG, Flush::Now);
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 1);
        q.written(&mut batch, 1);
        let _ = q.push_last(f(b"E"));
        q.take_batch(&mut batch, 16);
        assert_eq!(batch, [f(b"aaa"), f(b"E")]);
        assert_eq!(q.queued_bytes(), 3 + 1 + 2 * O);
        batch.clear();

        // A write in progress: what it puts back goes, but a started rest.
        let mut q = OutQueue::default();
        for frame in [f(b"aaaa"), f(b"bbbb"), f(b"cccc")] {
            let _ = q.push(frame, BIG, Flush::Now);
        }
        let mut in_flight = Vec::new();
        q.take_batch(&mut in_flight, 2);
        let _ = q.push_last(f(b"E"));
        q.written(&mut in_flight, 6);
        q.take_batch(&mut batch, 16);
        assert_eq!(batch, [f(b"bb"), f(b"E")]);
        assert_eq!(q.queued_bytes(), 2 + 1 + 2 * O);
        batch.clear();

        // Nothing started: only the last frame is left.
        let mut q = OutQueue::default();
        let _ = q.push(f(b"aaaa"), BIG, Flush::Now);
        let mut in_flight = Vec::new();
        q.take_batch(&mut in_flight, 1);
        let _ = q.push_last(f(b"E"));
        q.written(&mut in_flight, 0);
        q.take_batch(&mut batch, 16);
        assert_eq!(batch, [f(b"E")]);
        assert_eq!(q.queued_bytes(), 1 + O);
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    const BIG: usize = 1 << 20;
    use std::task::Waker;

    #[test]
    fn output_made_during_the_read_turn_is_the_readers_to_write() {
        let mut q = OutQueue::default();
        let mut batch = Vec::new();
        q.reader_turn();
        assert_eq!(
            q.push(Bytes::from_static(b"reply"), BIG, Flush::Now),
            Ok(Wake::Done)
        );
        assert!(q.reader_take(&mut batch, 8));
        // More queued while the reader writes: still its own.
        assert_eq!(
            q.push(Bytes::from_static(b"more"), BIG, Flush::Now),
            Ok(Wake::Done)
        );
        q.written(&mut batch, 5);
        assert!(q.reader_take(&mut batch, 8));
        q.written(&mut batch, 4);
        // Empty: the turn ends, the storage goes, and the next frame needs
        // a writer task.
        assert!(!q.reader_take(&mut batch, 8));
        assert_eq!(q.frames.capacity(), 0);
        assert_eq!(
            q.push(Bytes::from_static(b"later"), BIG, Flush::Now),
            Ok(Wake::Spawn)
        );
        // A queue owned by a writer task is left to it.
        q.reader_turn();
        assert!(!q.reader_take(&mut batch, 8));
    }

    /// A queue whose writer task was started for one frame, wrote it and
    /// parked.
    fn parked_after_one_write(batch: &mut Vec<Bytes>) -> OutQueue {
        let mut q = OutQueue::default();
        let waker = Waker::noop();
        assert_eq!(
            q.push(Bytes::from_static(b"a"), BIG, Flush::Now),
            Ok(Wake::Spawn)
        );
        assert_eq!(q.poll_writer(batch, 8, false, waker), Some(Next::Write));
        q.written(batch, 1);
        assert_eq!(q.poll_writer(batch, 8, false, waker), None);
        q
    }

    #[test]
    fn a_writer_is_started_once_and_retired_after_an_idle_tick() {
        let waker = Waker::noop();
        let mut batch = Vec::new();
        let mut q = parked_after_one_write(&mut batch);
        // It wrote during this tick: kept, with its storage.
        assert!(q.tick());
        assert!(q.frames.capacity() > 0);
        // Nothing during the next one: retired.
        assert!(!q.tick());
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Retire)
        );
        assert_eq!(
            q.frames.capacity(),
            0,
            "a retired writer's queue holds no storage"
        );
        // The next frame needs a new writer.
        assert_eq!(
            q.push(Bytes::from_static(b"b"), BIG, Flush::Now),
            Ok(Wake::Spawn)
        );
    }

    #[test]
    fn a_closing_connection_flushes_before_closing() {
        let mut q = OutQueue::default();
        let waker = Waker::noop();
        let mut batch = Vec::new();
        let _ = q.push(Bytes::from_static(b"bye"), BIG, Flush::Now);
        assert_eq!(q.poll_writer(&mut batch, 8, true, waker), Some(Next::Write));
        q.written(&mut batch, 3);
        assert_eq!(q.poll_writer(&mut batch, 8, true, waker), Some(Next::Close));
    }

    #[test]
    fn a_batched_frame_waits_for_the_batch_flush_or_the_next_write() {
        let mut q = OutQueue::default();
        let waker = Waker::noop();
        let mut batch = Vec::new();
        // The first batched frame puts the connection on the batch list,
        // once; no writer is started for it.
        assert_eq!(
            q.push(Bytes::from_static(b"p1"), BIG, Flush::Batched),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(Bytes::from_static(b"p2"), BIG, Flush::Batched),
            Ok(Wake::Done)
        );
        // The flush starts the writer, which takes both in one batch.
        assert_eq!(q.flush_batched(), Wake::Spawn);
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Write)
        );
        assert_eq!(batch.len(), 2);
        q.written(&mut batch, 4);
        assert_eq!(q.poll_writer(&mut batch, 8, false, waker), None);
        // Off the list again: the next batched frame registers anew; an
        // immediate frame after it wakes the writer, which writes both in
        // queue order, and the later flush finds nothing left to do.
        assert_eq!(
            q.push(Bytes::from_static(b"p3"), BIG, Flush::Batched),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(Bytes::from_static(b"now"), BIG, Flush::Now),
            Ok(Wake::Done)
        );
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Write)
        );
        let out: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(out, b"p3now");
        q.written(&mut batch, 5);
        assert_eq!(q.flush_batched(), Wake::Done);
    }

    #[test]
    fn an_idle_tick_does_not_write_batched_frames_early() {
        let waker = Waker::noop();
        let mut batch = Vec::new();
        let mut q = parked_after_one_write(&mut batch);
        assert_eq!(
            q.push(Bytes::from_static(b"p"), BIG, Flush::Batched),
            Ok(Wake::Batch)
        );
        // Two ticks, the second one idle: the writer is kept and not woken.
        assert!(q.tick());
        assert!(q.tick());
        assert!(matches!(q.writer, Writer::Parked(_)));
        assert_eq!(q.flush_batched(), Wake::Done);
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Write)
        );
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn a_lagging_queue_holds_copies_not_shared_buffers() {
        let mut q = OutQueue::default();
        // Frames cut from one large buffer, as fan-out cuts them from a
        // sender's read buffer.
        let big = Bytes::from(vec![7u8; 64 * 1024]);
        let n = limits::SHARED_FRAMES_QUEUED_MAX;
        for i in 0..n + 3 {
            let _ = q.push(big.slice(i..i + 1), 1 << 20, Flush::Now);
        }
        let in_big = |f: &Bytes| big.as_ptr_range().contains(&f.as_ptr());
        assert!(q.frames.iter().take(n).all(in_big), "shared while short");
        assert!(!q.frames.iter().skip(n).any(in_big), "copies once long");
        assert_eq!(
            q.queued_bytes(),
            (n + 3) * (limits::QUEUED_FRAME_OVERHEAD + 1)
        );
        // Once the shared frames are written, nothing queued refers to the
        // large buffer any more.
        let mut batch = Vec::new();
        q.take_batch(&mut batch, n);
        q.written(&mut batch, n);
        assert!(q.frames.iter().all(|f| !in_big(f)));
        assert_eq!(&q.frames[0][..], &[7u8][..]);
    }

    #[test]
    fn a_batched_frame_still_respects_the_cap() {
        let mut q = OutQueue::default();
        assert_eq!(
            q.push(Bytes::from_static(b"12345"), 8, Flush::Batched),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(Bytes::from_static(b"6789"), 8, Flush::Batched),
            Err(PushError::Full)
        );
        assert_eq!(q.queued_bytes(), limits::QUEUED_FRAME_OVERHEAD + 5);
    }
}
