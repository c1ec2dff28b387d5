//! A connection's outbound queue: small frames copied into one contiguous
//! chunk, large frames shared by reference (`Bytes`), a byte count capped
//! by `--max-outbuf-bytes`, and the waker of the connection's writer task.
//!
//! Small frames (below [`limits::OUT_SHARE_MIN_BYTES`]: every command the
//! server sends but large messages) are copied, back to back, into the
//! connection's current output chunk, taken from the shard's
//! [`ChunkPool`] when the connection gets output and given back once it is
//! written, so a write is one buffer however many frames it carries, and
//! an idle connection holds no chunk. Large frames are queued as clones of
//! the one `Bytes` a broadcast shares (a reference-count increment), as
//! long as the queue holds fewer than [`limits::SHARED_FRAMES_QUEUED_MAX`]
//! segments; past that (a lagging reader) they are copied too, so what a
//! connection pins stays near what the cap counts.
//!
//! The queue is a list of frozen segments (shared frames, and the parts of
//! chunks already handed to a write or filled) followed by the current
//! chunk's unwritten bytes; order on the socket is push order. A segment
//! holds whole frames: a frame that does not fit the current chunk's free
//! space starts the next chunk (a small one always fits an empty chunk),
//! or, if large (copied only for a lagging reader), gets a copy of its
//! own. So the only place a frame is ever cut is where a write stopped,
//! inside the front segment, and the queue remembers that segment as it
//! was (one reference, taken only by a write that stopped inside a
//! segment) to find where that frame ends when it must.
//!
//! That is what closing a slow consumer needs ([`OutQueue::cut`]): every
//! frame not started is dropped, the rest of the one a write began is
//! kept (the client's stream stays whole frames), and the last frame
//! (OP_ERROR SLOW_CONSUMER) goes right behind it, so a reader too slow to
//! drain a full queue still gets its error within the close deadline. The
//! queue does not know the protocol: the caller says how long a command
//! is ([`FrameLen`]), which is asked only then.
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

use bytes::{Buf, Bytes, BytesMut};

use super::chunk::{class_bytes, ChunkPool, CLASSES};
use crate::limits;

/// The length of the command at the start of `bytes`, or `None` if they
/// do not start with a whole one: the service's protocol, which the queue
/// does not know, for [`OutQueue::cut`].
pub type FrameLen = fn(&[u8]) -> Option<usize>;

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
    /// The queued output; boxed, and there only while the connection has
    /// output or a writer, so that an idle connection holds one pointer
    /// (a connection's state is most of what an idle one costs).
    out: Option<Box<Pending>>,
    /// Bytes queued and not yet written.
    bytes: usize,
    /// The writer task.
    writer: Writer,
    /// The writer wrote since the last tick.
    busy_this_tick: bool,
    /// The writer should end once the queue is empty.
    retire: bool,
    /// The connection is on its shard's batch list.
    batched: bool,
}

/// What an [`OutQueue`] holds while it has output.
#[derive(Default)]
struct Pending {
    /// Frozen output, in order: shared frames, and chunk parts that were
    /// filled or handed to a write that did not take them whole.
    segs: VecDeque<Bytes>,
    /// The current chunk; its bytes (copied frames) follow `segs`. `None`
    /// while nothing copied waits: a chunk goes back to the pool as soon
    /// as it is written.
    chunk: Option<BytesMut>,
    /// Size class of `chunk`, or of the next one.
    class: u8,
    /// A write stopped inside a segment: the front one (lent to a write or
    /// not) is the rest of it.
    part: Option<PartWritten>,
    /// A batch taken by [`OutQueue::take_batch`] is out, not yet given
    /// back by [`OutQueue::written`].
    lent: bool,
    /// A slow consumer's cut that waits for the write in flight to be
    /// accounted: the last frame, and the protocol's command lengths.
    cut: Option<(Bytes, FrameLen)>,
}

/// The segment a write stopped inside, as it was queued (so starting at a
/// frame boundary), and how many of its bytes went out.
struct PartWritten {
    origin: Bytes,
    done: usize,
}

impl PartWritten {
    /// The bytes left of the frame the write stopped inside, found by
    /// walking `origin`'s frames; `None` if `frame_len` cannot (then the
    /// whole rest of the segment, which ends at a frame boundary, is the
    /// safe answer).
    fn rest_of_frame(&self, frame_len: FrameLen) -> Option<usize> {
        let mut at = 0;
        loop {
            if at == self.done {
                // It stopped between two frames.
                return Some(0);
            }
            let end = at + frame_len(self.origin.get(at..)?).filter(|&n| n > 0)?;
            if end > self.done {
                return (end <= self.origin.len()).then(|| end - self.done);
            }
            at = end;
        }
    }
}

impl Pending {
    /// True when nothing waits to be written.
    fn is_empty(&self) -> bool {
        self.segs.is_empty() && self.chunk.as_ref().is_none_or(|c| c.is_empty())
    }

    /// Whether `len` bytes fit the current chunk's free space.
    fn fits(&self, len: usize) -> bool {
        self.chunk
            .as_ref()
            .is_some_and(|c| c.capacity() - c.len() >= len)
    }

    /// Copies `frame`, a small one or one that fits, to the end of the
    /// current chunk, or of a new one (from `pool`) if it does not fit:
    /// a frame never spans two chunks (see the module docs).
    fn copy_in(&mut self, frame: &[u8], pool: &mut ChunkPool) {
        let chunk = match &mut self.chunk {
            Some(chunk) if chunk.capacity() - chunk.len() >= frame.len() => chunk,
            _ => self.next_chunk(pool),
        };
        debug_assert!(chunk.capacity() - chunk.len() >= frame.len());
        // Within the capacity: `extend_from_slice` does not reallocate.
        chunk.extend_from_slice(frame);
    }

    /// The current chunk is full (the next frame does not fit, or there is
    /// none): its bytes become a segment, it goes back to the pool (reused
    /// once they are written), and a chunk of the next larger class
    /// becomes current.
    fn next_chunk(&mut self, pool: &mut ChunkPool) -> &mut BytesMut {
        if let Some(mut full) = self.chunk.take() {
            if !full.is_empty() {
                self.segs.push_back(full.split().freeze());
            }
            pool.give(full, self.class);
            // It filled before a write emptied it: the next one is larger.
            self.class = (self.class + 1).min(CLASSES as u8 - 1);
        }
        self.chunk.insert(pool.take(self.class))
    }

    /// Makes the current chunk's bytes a segment, so that what is queued
    /// next (a shared frame) goes after them.
    fn seal_chunk(&mut self) {
        if let Some(chunk) = &mut self.chunk {
            if !chunk.is_empty() {
                self.segs.push_back(chunk.split().freeze());
            }
        }
    }

    /// Gives the current chunk back to `pool`, dropping what it holds
    /// (reused once a write still in flight is done with it).
    fn drop_chunk(&mut self, pool: &mut ChunkPool) {
        if let Some(mut chunk) = self.chunk.take() {
            chunk.clear();
            pool.give(chunk, self.class);
        }
    }

    /// Gives the current chunk back to `pool` once nothing of it waits to
    /// be written; the class for the next one shrinks if this one was
    /// mostly unused.
    fn release_chunk(&mut self, pool: &mut ChunkPool) {
        if !self.segs.is_empty() || self.chunk.as_ref().is_some_and(|c| !c.is_empty()) {
            return;
        }
        if let Some(chunk) = self.chunk.take() {
            // Its free space is what the connection never needed.
            let mostly_unused = chunk.capacity() * 4 >= class_bytes(self.class) * 3;
            pool.give(chunk, self.class);
            if mostly_unused {
                self.class = self.class.saturating_sub(1);
            }
        }
    }
}

impl OutQueue {
    /// Queues `frame` unless that would take the queue over `cap` bytes
    /// (as [`OutQueue::queued_bytes`] counts them). An empty queue always
    /// takes one frame, so a message larger than the cap
    /// (`--max-rtmsg-len` may exceed `--max-outbuf-bytes`) still reaches a
    /// reader that keeps up; memory stays bounded by cap + one frame.
    #[inline]
    pub fn push(
        &mut self,
        frame: &Bytes,
        cap: usize,
        flush: Flush,
        pool: &mut ChunkPool,
    ) -> Result<Wake, PushError> {
        // The common case, kept small enough to inline into fan-out: a
        // small frame that fits the current chunk. (An empty frame, a
        // transport's marker, wraps to usize::MAX: it is a segment of its
        // own, see `push_slow`.)
        if frame.len().wrapping_sub(1) < limits::OUT_SHARE_MIN_BYTES - 1 {
            if let Some(p) = self.out.as_deref_mut() {
                if let Some(chunk) = &mut p.chunk {
                    if chunk.capacity() - chunk.len() >= frame.len() {
                        let queued = self.bytes + p.segs.len() * limits::QUEUED_FRAME_OVERHEAD;
                        if queued > 0 && queued + frame.len() > cap {
                            return Err(PushError::Full);
                        }
                        chunk.extend_from_slice(frame);
                        self.bytes += frame.len();
                        return Ok(self.pushed(flush));
                    }
                }
            }
        }
        self.push_slow(frame, cap, flush, pool)
    }

    /// [`OutQueue::push`] for everything but a small frame that fits the
    /// current chunk.
    #[inline(never)]
    fn push_slow(
        &mut self,
        frame: &Bytes,
        cap: usize,
        flush: Flush,
        pool: &mut ChunkPool,
    ) -> Result<Wake, PushError> {
        let queued = self.queued_bytes();
        let p = self.out.get_or_insert_with(Box::default);
        // An empty frame is a transport's marker (where its own bytes go
        // among the frames, `net::transport`): it keeps its place as a
        // segment of its own, and pins nothing.
        let large = frame.len() >= limits::OUT_SHARE_MIN_BYTES;
        let share = frame.is_empty() || (large && p.segs.len() < limits::SHARED_FRAMES_QUEUED_MAX);
        // A large frame copied (the reader lags) that does not fit the
        // current chunk gets a copy of its own rather than a chunk mostly
        // left empty, or spanning two (a segment holds whole frames).
        let own = share || (large && !p.fits(frame.len()));
        let cost = if own {
            // A segment of its own, and one for the chunk's bytes before
            // it, which are sealed into a segment.
            let sealed = p.chunk.as_ref().is_some_and(|c| !c.is_empty());
            frame.len() + (1 + usize::from(sealed)) * limits::QUEUED_FRAME_OVERHEAD
        } else {
            frame.len()
        };
        if queued > 0 && queued + cost > cap {
            return Err(PushError::Full);
        }
        if own {
            p.seal_chunk();
            p.segs.push_back(match share {
                true => frame.clone(),
                false => Bytes::copy_from_slice(frame),
            });
        } else {
            p.copy_in(frame, pool);
        }
        self.bytes += frame.len();
        Ok(self.pushed(flush))
    }

    /// What a frame just queued with `flush` asks of the caller.
    #[inline]
    fn pushed(&mut self, flush: Flush) -> Wake {
        match flush {
            Flush::Now if matches!(self.writer, Writer::Running) => Wake::Done,
            Flush::Now => self.wake_writer(),
            Flush::Batched if std::mem::replace(&mut self.batched, true) => Wake::Done,
            Flush::Batched => Wake::Batch,
        }
    }

    /// The shard's batch flush: the connection leaves the batch list, and
    /// its writer is woken if anything still waits (or started: `Spawn`).
    pub fn flush_batched(&mut self) -> Wake {
        self.batched = false;
        if self.is_empty() {
            return Wake::Done;
        }
        self.wake_writer()
    }

    /// Bytes the queue is charged for: its bytes not yet written plus
    /// [`limits::QUEUED_FRAME_OVERHEAD`] per segment (copied frames share
    /// their chunk and cost their bytes only).
    pub fn queued_bytes(&self) -> usize {
        let segs = self.out.as_ref().map_or(0, |p| p.segs.len());
        self.bytes + segs * limits::QUEUED_FRAME_OVERHEAD
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.out.as_ref().is_none_or(|p| p.is_empty())
    }

    /// Moves up to `max` segments into `batch` for one vectored write (the
    /// current chunk's bytes are one segment). They stay counted until
    /// [`OutQueue::written`] says how much went out.
    pub fn take_batch(&mut self, batch: &mut Vec<Bytes>, max: usize) {
        let Some(p) = self.out.as_deref_mut() else {
            return;
        };
        p.lent = true;
        let n = p.segs.len().min(max);
        batch.extend(p.segs.drain(..n));
        if p.segs.is_empty() && batch.len() < max {
            if let Some(chunk) = &mut p.chunk {
                if !chunk.is_empty() {
                    batch.push(chunk.split().freeze());
                }
            }
        }
    }

    /// After a write of `batch` that wrote `n` bytes: uncounts them and
    /// puts the unwritten rest back at the front, in order; a chunk with
    /// nothing left to write goes back to `pool`. A write that stopped
    /// inside a segment leaves it noted, as it was, for [`OutQueue::cut`]
    /// (a reference count, per write that stops so, not per frame).
    pub fn written(&mut self, batch: &mut Vec<Bytes>, mut n: usize, pool: &mut ChunkPool) {
        self.bytes -= n.min(self.bytes);
        let mut done = 0;
        for seg in batch.iter() {
            if n >= seg.len() {
                n -= seg.len();
                done += 1;
            } else {
                break;
            }
        }
        if done < batch.len() || self.out.is_some() {
            let p = self.out.get_or_insert_with(Box::default);
            p.lent = false;
            if n > 0 && done < batch.len() {
                // Stopped `n` bytes into `batch[done]`: the front from now.
                match &mut p.part {
                    // It was the front already.
                    Some(part) if done == 0 => part.done += n,
                    part => {
                        *part = Some(PartWritten {
                            origin: batch[done].clone(),
                            done: n,
                        })
                    }
                }
                batch[done].advance(n);
            } else if done > 0 {
                p.part = None;
            }
            for seg in batch.drain(done..).rev() {
                p.segs.push_front(seg);
            }
            p.release_chunk(pool);
        }
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
        if !self.is_empty() {
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
        if self.is_empty() {
            self.writer = Writer::None;
            self.release();
            return false;
        }
        self.take_batch(batch, max);
        true
    }

    /// The writer is gone and the queue is empty: give what held the
    /// output back, so an idle connection holds nothing but the pointer
    /// (its chunk went back to the pool when it was written). The next
    /// frame allocates again; while output flows the writer stays and the
    /// storage with it.
    fn release(&mut self) {
        if self.is_empty() {
            debug_assert!(
                self.out.as_ref().is_none_or(|p| p.chunk.is_none()),
                "an empty queue's chunk went back to the pool when it was written"
            );
            self.out = None;
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
        self.is_empty() && matches!(self.writer, Writer::None)
    }

    /// Drops everything queued; the chunk goes back to `pool` (reused
    /// once a write still in flight is done with it).
    pub fn clear(&mut self, pool: &mut ChunkPool) {
        self.bytes = 0;
        if let Some(p) = self.out.as_deref_mut() {
            p.segs.clear();
            p.part = None;
            p.cut = None;
            p.lent = false;
            p.drop_chunk(pool);
        }
    }

    /// The connection is closed as a slow consumer, with `last` (its
    /// OP_ERROR SLOW_CONSUMER) as its last frame: every frame not started
    /// is dropped, so what is left to write is the rest of the frame a
    /// write stopped inside (found with `frame_len`), at least the first
    /// `keep` bytes (the transport's unit in progress, which must be
    /// completed: the rest of a WebSocket message), and `last` right
    /// behind, whatever the cap. A reader that cannot drain a full queue
    /// within the close deadline still gets its error, at a frame
    /// boundary. With a write in flight what is queued goes now, and the
    /// rest of the cut waits for the write to be accounted
    /// ([`OutQueue::cut_after_write`]). Returns the wake `last` needs
    /// (a queue that held only batched frames has no writer).
    pub fn cut(
        &mut self,
        last: &Bytes,
        keep: usize,
        frame_len: FrameLen,
        pool: &mut ChunkPool,
    ) -> Wake {
        if let Some(p) = self.out.as_deref_mut().filter(|p| p.lent) {
            // Everything still queued came after the batch out: none of
            // it started.
            let unstarted: usize = p.segs.iter().map(Bytes::len).sum::<usize>()
                + p.chunk.as_ref().map_or(0, BytesMut::len);
            self.bytes -= unstarted.min(self.bytes);
            p.segs.clear();
            p.drop_chunk(pool);
            p.cut = Some((last.clone(), frame_len));
            // The writer writing the batch takes it from there.
            return Wake::Done;
        }
        self.drop_unstarted(keep, frame_len, pool);
        self.push_last(last, pool)
    }

    /// After [`OutQueue::written`]: the cut [`OutQueue::cut`] left for
    /// the write that was in flight, if any, with `keep` as there (read
    /// now: the transport's unit in progress is what this write left).
    pub fn cut_after_write(&mut self, keep: usize, pool: &mut ChunkPool) {
        let Some((last, frame_len)) = self.out.as_deref_mut().and_then(|p| p.cut.take()) else {
            return;
        };
        self.drop_unstarted(keep, frame_len, pool);
        // The writer that just wrote writes it: nothing to wake.
        let _ = self.push_last(&last, pool);
    }

    /// Keeps the rest of the frame a write stopped inside, and at least
    /// `keep` bytes, from the front; drops the rest (no batch is out).
    fn drop_unstarted(&mut self, keep: usize, frame_len: FrameLen, pool: &mut ChunkPool) {
        let Some(p) = self.out.as_deref_mut() else {
            return;
        };
        let mut keep = keep;
        if let Some(part) = p.part.take() {
            let front = p.segs.front().map_or(0, Bytes::len);
            keep = keep.max(part.rest_of_frame(frame_len).unwrap_or(front));
        }
        // Only written segments were ever cut, so what is kept is at the
        // front, in segments, never in the current chunk.
        let mut kept = 0;
        let mut segs = 0;
        for seg in p.segs.iter_mut() {
            if kept >= keep {
                break;
            }
            seg.truncate(keep - kept);
            kept += seg.len();
            segs += 1;
        }
        p.segs.truncate(segs);
        p.drop_chunk(pool);
        self.bytes = kept;
    }

    /// Queues a slow consumer's last frame whatever the cap (it exceeds
    /// it by its 11 bytes at most).
    fn push_last(&mut self, last: &Bytes, pool: &mut ChunkPool) -> Wake {
        match self.push(last, usize::MAX, Flush::Now, pool) {
            Ok(wake) => wake,
            // Nothing is over no cap.
            Err(PushError::Full) => Wake::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-segment overhead, and a cap no test reaches.
    const O: usize = limits::QUEUED_FRAME_OVERHEAD;
    const BIG: usize = 1 << 20;
    /// The smallest frame that is shared rather than copied.
    const LARGE: usize = limits::OUT_SHARE_MIN_BYTES;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    /// What `q` holds; it must hold something.
    fn p(q: &OutQueue) -> &Pending {
        q.out.as_deref().expect("the queue has output")
    }

    /// Everything a writer whose socket takes `limit` bytes per write
    /// would send, draining the queue.
    fn drain(q: &mut OutQueue, pool: &mut ChunkPool, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut batch = Vec::new();
        while !q.is_empty() {
            q.take_batch(&mut batch, 8);
            let mut n = 0;
            for seg in &batch {
                let k = seg.len().min(limit - n);
                out.extend_from_slice(&seg[..k]);
                n += k;
            }
            q.written(&mut batch, n, pool);
        }
        out
    }

    #[test]
    fn push_beyond_cap_is_refused_and_leaves_the_queue_as_it_was() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let cap = 8;
        assert_eq!(
            q.push(&b(b"12345"), cap, Flush::Now, &mut pool),
            Ok(Wake::Spawn)
        );
        assert_eq!(
            q.push(&b(b"6789"), cap, Flush::Now, &mut pool),
            Err(PushError::Full)
        );
        assert_eq!(q.queued_bytes(), 5);
        assert_eq!(
            q.push(&b(b"678"), cap, Flush::Now, &mut pool),
            Ok(Wake::Done)
        );
        assert_eq!(q.queued_bytes(), cap);
        assert_eq!(drain(&mut q, &mut pool, BIG), b"12345678");
    }

    #[test]
    fn an_empty_frame_keeps_its_place_as_a_segment_of_its_own() {
        // A transport's marker: its own bytes go where it is, after the
        // frames queued before it and before those queued after.
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let _ = q.push(&b(b"ab"), BIG, Flush::Now, &mut pool);
        let _ = q.push(&Bytes::new(), BIG, Flush::Now, &mut pool);
        let _ = q.push(&b(b"cd"), BIG, Flush::Now, &mut pool);
        assert_eq!(q.queued_bytes(), 4 + 2 * O, "the marker is a segment");
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 8);
        let parts: Vec<&[u8]> = batch.iter().map(|s| &s[..]).collect();
        assert_eq!(parts, [&b"ab"[..], b"", b"cd"]);
        q.written(&mut batch, 4, &mut pool);
        assert!(q.is_empty());

        // Alone in an empty queue, it still wakes a writer.
        let mut q = OutQueue::default();
        assert_eq!(
            q.push(&Bytes::new(), BIG, Flush::Now, &mut pool),
            Ok(Wake::Spawn)
        );
        assert!(!q.is_empty());
        q.take_batch(&mut batch, 8);
        assert_eq!(batch.len(), 1);
        q.written(&mut batch, 0, &mut pool);
        assert!(q.is_empty());
    }

    #[test]
    fn small_frames_are_copied_back_to_back_into_one_chunk() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let src = Bytes::from(vec![9u8; 1000]);
        for i in 0..3 {
            let _ = q.push(&src.slice(i..i + 10), BIG, Flush::Now, &mut pool);
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 8);
        assert_eq!(batch.len(), 1, "one contiguous piece for three frames");
        assert_eq!(batch[0].len(), 30);
        assert!(
            !src.as_ptr_range().contains(&batch[0].as_ptr()),
            "a copy, not the source buffer"
        );
        q.written(&mut batch, 30, &mut pool);
        assert!(q.is_empty());
        assert!(
            p(&q).chunk.is_none(),
            "a written chunk goes back to the pool"
        );
        assert_eq!(pool.allocated(), 1);
        // The next frame reuses it.
        let _ = q.push(&b(b"x"), BIG, Flush::Now, &mut pool);
        assert_eq!(drain(&mut q, &mut pool, BIG), b"x");
        assert_eq!(pool.allocated(), 1);
    }

    #[test]
    fn tiny_frames_cost_their_bytes_and_the_cap_holds_them_to_it() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let cap = 1000;
        let mut taken = 0;
        while q.push(&b(b"k"), cap, Flush::Now, &mut pool).is_ok() {
            taken += 1;
        }
        // A byte each, and a segment's overhead per filled chunk.
        assert_eq!(q.queued_bytes(), cap);
        assert_eq!(taken, cap - p(&q).segs.len() * O);
        assert!(p(&q).segs.len() <= 2, "{} segments", p(&q).segs.len());
        // Back to back in chunks, not a slot per frame.
        let held: usize = p(&q).segs.iter().map(Bytes::len).sum::<usize>()
            + p(&q).chunk.as_ref().map_or(0, |c| c.len() + c.capacity());
        assert!(held <= cap + limits::OUT_CHUNK_MAX, "held {held}");
        assert_eq!(drain(&mut q, &mut pool, 7).len(), taken);
    }

    #[test]
    fn large_frames_are_shared_and_charged_their_segment() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let big = Bytes::from(vec![1u8; LARGE]);
        let _ = q.push(&b(b"ab"), BIG, Flush::Now, &mut pool);
        let _ = q.push(&big, BIG, Flush::Now, &mut pool);
        let _ = q.push(&b(b"cd"), BIG, Flush::Now, &mut pool);
        // "ab" sealed into a segment, the shared frame, then "cd" in the
        // chunk.
        assert_eq!(p(&q).segs.len(), 2);
        assert_eq!(p(&q).segs[1].as_ptr(), big.as_ptr(), "shared, not copied");
        assert_eq!(q.queued_bytes(), LARGE + 4 + 2 * O);
        let mut want = b"ab".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"cd");
        assert_eq!(drain(&mut q, &mut pool, 1000), want);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn a_frame_that_does_not_fit_starts_the_next_chunk_and_chunks_grow() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        // Copied frames that the first chunk holds once.
        let f = Bytes::from((0..=255u8).cycle().take(LARGE - 1).collect::<Vec<u8>>());
        let mut want = Vec::new();
        for _ in 0..4 {
            let _ = q.push(&f, BIG, Flush::Now, &mut pool);
            want.extend_from_slice(&f);
        }
        assert!(p(&q).class > 0, "grew past the smallest class");
        assert_eq!(q.queued_bytes(), 4 * f.len() + p(&q).segs.len() * O);
        // No frame spans two chunks.
        for seg in &p(&q).segs {
            assert_eq!(seg.len() % f.len(), 0, "a segment of whole frames");
        }
        assert_eq!(drain(&mut q, &mut pool, 3000), want);
        assert!(p(&q).chunk.is_none());
    }

    #[test]
    fn a_chunk_mostly_unused_makes_the_next_one_smaller() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue {
            out: Some(Box::new(Pending {
                class: 3,
                ..Pending::default()
            })),
            ..OutQueue::default()
        };
        let _ = q.push(&b(b"x"), BIG, Flush::Now, &mut pool);
        assert_eq!(drain(&mut q, &mut pool, BIG), b"x");
        assert_eq!(p(&q).class, 2);
    }

    #[test]
    fn an_empty_queue_takes_one_frame_larger_than_the_cap() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        assert_eq!(
            q.push(&Bytes::from(vec![0; 20]), 8, Flush::Now, &mut pool),
            Ok(Wake::Spawn)
        );
        assert_eq!(
            q.push(&b(b"x"), 8, Flush::Now, &mut pool),
            Err(PushError::Full)
        );
    }

    #[test]
    fn partial_write_puts_the_unwritten_tail_back_in_order() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let big = Bytes::from(vec![b'L'; LARGE]);
        for f in [&b(b"aaa"), &big, &b(b"ccc")] {
            let _ = q.push(f, BIG, Flush::Now, &mut pool).unwrap();
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 10);
        assert_eq!(batch.len(), 3);
        q.written(&mut batch, 4, &mut pool); // "aaa" and one byte of the large one
        assert!(batch.is_empty());
        assert_eq!(q.queued_bytes(), LARGE - 1 + 3 + 2 * O);
        // More arrives meanwhile: it goes after what was put back.
        let _ = q.push(&b(b"dd"), BIG, Flush::Now, &mut pool);
        let rest = drain(&mut q, &mut pool, BIG);
        assert_eq!(rest.len(), LARGE - 1 + 5);
        assert_eq!(&rest[LARGE - 1..], b"cccdd");
    }

    /// A test protocol: a frame starts with its length (u32 LE).
    fn len_prefixed(bytes: &[u8]) -> Option<usize> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        usize::try_from(len).ok()
    }

    /// A `len_prefixed` frame of `len` bytes, the rest `tag`.
    fn fr(len: usize, tag: u8) -> Bytes {
        let mut f = vec![tag; len];
        f[..4].copy_from_slice(&(len as u32).to_le_bytes());
        Bytes::from(f)
    }

    /// Splits `bytes` into `len_prefixed` frames; fails on a cut one.
    fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = len_prefixed(bytes).expect("a frame header");
            assert!(n >= 4 && n <= bytes.len(), "a cut frame");
            out.push(bytes[..n].to_vec());
            bytes = &bytes[n..];
        }
        out
    }

    /// One write of what `q` holds (up to 8 segments) that stops after
    /// `n` bytes; returns them.
    fn write_some(q: &mut OutQueue, pool: &mut ChunkPool, n: usize) -> Vec<u8> {
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 8);
        let out: Vec<u8> = batch
            .iter()
            .flat_map(|b| b.iter().copied())
            .take(n)
            .collect();
        q.written(&mut batch, out.len(), pool);
        out
    }

    #[test]
    fn a_slow_consumers_cut_keeps_the_rest_of_the_frame_being_written_then_the_last() {
        let last = fr(11, 0xEE);
        // Stops: inside a copied frame (once, then again further in the
        // same one), between two frames of a chunk, inside a shared
        // frame, at the end of a segment.
        for stops in [&[250][..], &[250, 20], &[300], &[1100], &[1000 + LARGE]] {
            let mut pool = ChunkPool::default();
            let mut q = OutQueue::default();
            let mut queued = Vec::new();
            for i in 0..10 {
                queued.push(fr(100, i));
            }
            queued.push(fr(LARGE, 10));
            queued.push(fr(100, 11));
            for f in &queued {
                let _ = q.push(f, BIG, Flush::Now, &mut pool);
            }
            let all: Vec<u8> = queued.iter().flat_map(|f| f.iter().copied()).collect();
            let mut out = Vec::new();
            for &n in stops {
                out.extend(write_some(&mut q, &mut pool, n));
            }
            let at = out.len();
            // Where the frame written into ends (`at` itself if none).
            let mut end = 0;
            while end < at {
                end += len_prefixed(&all[end..]).unwrap();
            }
            let _ = q.cut(&last, 0, len_prefixed, &mut pool);
            assert_eq!(q.bytes, end - at + last.len(), "stopped at {at}");
            out.extend(drain(&mut q, &mut pool, 7));
            let mut want = all[..end].to_vec();
            want.extend_from_slice(&last);
            assert_eq!(out, want, "stopped at {at}");
            assert_eq!(frames(&out).last(), Some(&last.to_vec()));
        }
    }

    #[test]
    fn a_cut_during_a_write_waits_for_it_and_keeps_what_the_transport_owes() {
        let last = fr(11, 0xEE);
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let big = fr(LARGE, 1);
        for f in [&fr(100, 0), &big, &fr(100, 2)] {
            let _ = q.push(f, BIG, Flush::Now, &mut pool);
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 8);
        // Queued while the batch is out: not started, dropped at once.
        let _ = q.push(&fr(100, 3), BIG, Flush::Now, &mut pool);
        assert_eq!(q.cut(&last, 0, len_prefixed, &mut pool), Wake::Done);
        assert_eq!(q.queued_bytes(), 200 + LARGE, "the batch out");
        // The write stops inside the first frame; the transport (a
        // WebSocket message's header covered all three) owes the rest of
        // the batch, past that frame: all of it is kept.
        let mut out: Vec<u8> = batch[0][..40].to_vec();
        q.written(&mut batch, 40, &mut pool);
        q.cut_after_write(60 + LARGE + 100, &mut pool);
        out.extend(drain(&mut q, &mut pool, BIG));
        let mut want: Vec<u8> = [&fr(100, 0), &big, &fr(100, 2)]
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        want.extend_from_slice(&last);
        assert_eq!(out, want);

        // Without a transport's debt, the rest of that frame only.
        let mut q = OutQueue::default();
        for f in [&fr(100, 0), &big, &fr(100, 2)] {
            let _ = q.push(f, BIG, Flush::Now, &mut pool);
        }
        q.take_batch(&mut batch, 8);
        assert_eq!(q.cut(&last, 0, len_prefixed, &mut pool), Wake::Done);
        let mut out: Vec<u8> = batch
            .iter()
            .flat_map(|b| b.iter().copied())
            .take(140)
            .collect();
        q.written(&mut batch, 140, &mut pool);
        q.cut_after_write(0, &mut pool);
        out.extend(drain(&mut q, &mut pool, BIG));
        let mut want = fr(100, 0).to_vec();
        want.extend_from_slice(&big[..]);
        want.extend_from_slice(&last);
        assert_eq!(out, want);
    }

    #[test]
    fn a_cut_that_cannot_read_the_frames_keeps_the_whole_segment() {
        let last = fr(11, 0xEE);
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        for i in 0..3 {
            let _ = q.push(&fr(100, i), BIG, Flush::Now, &mut pool);
        }
        let mut out = write_some(&mut q, &mut pool, 150);
        let _ = q.push(&fr(100, 3), BIG, Flush::Now, &mut pool);
        let _ = q.cut(&last, 0, |_| None, &mut pool);
        out.extend(drain(&mut q, &mut pool, BIG));
        assert_eq!(frames(&out).len(), 4, "three frames, then the last");
    }

    #[test]
    fn a_slow_consumers_last_frame_behind_batched_frames_gets_a_writer_started() {
        // A queue that holds only batched frames has no writer: the cut
        // says one must be started for the last frame (the close that
        // follows finds the writer marked running and starts nothing).
        let last = fr(11, 0xEE);
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        assert_eq!(
            q.push(&fr(100, 0), 104, Flush::Batched, &mut pool),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(&fr(100, 1), 104, Flush::Now, &mut pool),
            Err(PushError::Full)
        );
        assert_eq!(q.cut(&last, 0, len_prefixed, &mut pool), Wake::Spawn);
        assert_eq!(q.wake_writer(), Wake::Done);
        assert_eq!(drain(&mut q, &mut pool, BIG), last.to_vec());
    }

    #[test]
    fn a_large_frame_copied_for_a_lagging_reader_is_never_split() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let n = limits::SHARED_FRAMES_QUEUED_MAX;
        let mut want = Vec::new();
        for i in 0..n + 8 {
            let f = fr(
                [100, LARGE, 3000, 20_000, limits::OUT_CHUNK_MAX + 5][i % 5],
                i as u8,
            );
            let _ = q.push(&f, BIG << 4, Flush::Now, &mut pool);
            want.extend_from_slice(&f);
        }
        for seg in &p(&q).segs {
            frames(seg);
        }
        assert_eq!(drain(&mut q, &mut pool, 5000), want);
    }

    #[test]
    fn take_batch_respects_the_iovec_limit() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let big = Bytes::from(vec![0u8; LARGE]);
        for _ in 0..3 {
            let _ = q.push(&big, BIG, Flush::Now, &mut pool).unwrap();
        }
        let _ = q.push(&b(b"x"), BIG, Flush::Now, &mut pool).unwrap();
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 2);
        assert_eq!(batch.len(), 2);
        q.written(&mut batch, 2 * LARGE, &mut pool);
        assert_eq!(q.queued_bytes(), LARGE + 1 + O);
        q.take_batch(&mut batch, 2);
        assert_eq!(batch.len(), 2, "the last shared frame and the chunk");
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    const BIG: usize = 1 << 20;
    use std::task::Waker;

    fn b(s: &'static [u8]) -> Bytes {
        Bytes::from_static(s)
    }

    #[test]
    fn output_made_during_the_read_turn_is_the_readers_to_write() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let mut batch = Vec::new();
        q.reader_turn();
        assert_eq!(
            q.push(&b(b"reply"), BIG, Flush::Now, &mut pool),
            Ok(Wake::Done)
        );
        assert!(q.reader_take(&mut batch, 8));
        // More queued while the reader writes: still its own.
        assert_eq!(
            q.push(&b(b"more"), BIG, Flush::Now, &mut pool),
            Ok(Wake::Done)
        );
        q.written(&mut batch, 5, &mut pool);
        assert!(q.reader_take(&mut batch, 8));
        q.written(&mut batch, 4, &mut pool);
        // Empty: the turn ends, the storage goes, and the next frame needs
        // a writer task.
        assert!(!q.reader_take(&mut batch, 8));
        assert!(q.out.is_none(), "an idle queue holds nothing");
        assert_eq!(
            q.push(&b(b"later"), BIG, Flush::Now, &mut pool),
            Ok(Wake::Spawn)
        );
        // A queue owned by a writer task is left to it.
        q.reader_turn();
        assert!(!q.reader_take(&mut batch, 8));
    }

    /// A queue whose writer task was started for one frame, wrote it and
    /// parked.
    fn parked_after_one_write(batch: &mut Vec<Bytes>, pool: &mut ChunkPool) -> OutQueue {
        let mut q = OutQueue::default();
        let waker = Waker::noop();
        assert_eq!(q.push(&b(b"a"), BIG, Flush::Now, pool), Ok(Wake::Spawn));
        assert_eq!(q.poll_writer(batch, 8, false, waker), Some(Next::Write));
        q.written(batch, 1, pool);
        assert_eq!(q.poll_writer(batch, 8, false, waker), None);
        q
    }

    #[test]
    fn a_writer_is_started_once_and_retired_after_an_idle_tick() {
        let mut pool = ChunkPool::default();
        let waker = Waker::noop();
        let mut batch = Vec::new();
        let mut q = parked_after_one_write(&mut batch, &mut pool);
        // Give the segment list some storage, as a writer of shared frames
        // would have.
        let large = Bytes::from(vec![0u8; limits::OUT_SHARE_MIN_BYTES]);
        let _ = q.push(&large, BIG, Flush::Now, &mut pool);
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Write)
        );
        q.written(&mut batch, large.len(), &mut pool);
        assert_eq!(q.poll_writer(&mut batch, 8, false, waker), None);
        // It wrote during this tick: kept, with its storage.
        assert!(q.tick());
        assert!(q.out.as_ref().is_some_and(|p| p.segs.capacity() > 0));
        // Nothing during the next one: retired.
        assert!(!q.tick());
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Retire)
        );
        assert!(q.out.is_none(), "a retired writer's queue holds nothing");
        // The next frame needs a new writer.
        assert_eq!(
            q.push(&b(b"b"), BIG, Flush::Now, &mut pool),
            Ok(Wake::Spawn)
        );
    }

    #[test]
    fn a_closing_connection_flushes_before_closing() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let waker = Waker::noop();
        let mut batch = Vec::new();
        let _ = q.push(&b(b"bye"), BIG, Flush::Now, &mut pool);
        assert_eq!(q.poll_writer(&mut batch, 8, true, waker), Some(Next::Write));
        q.written(&mut batch, 3, &mut pool);
        assert_eq!(q.poll_writer(&mut batch, 8, true, waker), Some(Next::Close));
    }

    #[test]
    fn a_batched_frame_waits_for_the_batch_flush_or_the_next_write() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let waker = Waker::noop();
        let mut batch = Vec::new();
        // The first batched frame puts the connection on the batch list,
        // once; no writer is started for it.
        assert_eq!(
            q.push(&b(b"p1"), BIG, Flush::Batched, &mut pool),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(&b(b"p2"), BIG, Flush::Batched, &mut pool),
            Ok(Wake::Done)
        );
        // The flush starts the writer, which takes both in one batch.
        assert_eq!(q.flush_batched(), Wake::Spawn);
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Write)
        );
        let out: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(out, b"p1p2");
        q.written(&mut batch, 4, &mut pool);
        assert_eq!(q.poll_writer(&mut batch, 8, false, waker), None);
        // Off the list again: the next batched frame registers anew; an
        // immediate frame after it wakes the writer, which writes both in
        // queue order, and the later flush finds nothing left to do.
        assert_eq!(
            q.push(&b(b"p3"), BIG, Flush::Batched, &mut pool),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(&b(b"now"), BIG, Flush::Now, &mut pool),
            Ok(Wake::Done)
        );
        assert_eq!(
            q.poll_writer(&mut batch, 8, false, waker),
            Some(Next::Write)
        );
        let out: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(out, b"p3now");
        q.written(&mut batch, 5, &mut pool);
        assert_eq!(q.flush_batched(), Wake::Done);
    }

    #[test]
    fn an_idle_tick_does_not_write_batched_frames_early() {
        let mut pool = ChunkPool::default();
        let waker = Waker::noop();
        let mut batch = Vec::new();
        let mut q = parked_after_one_write(&mut batch, &mut pool);
        assert_eq!(
            q.push(&b(b"p"), BIG, Flush::Batched, &mut pool),
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
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        // Frames cut from one large buffer, as fan-out cuts them from a
        // sender's read buffer: small ones, and large ones.
        let len = limits::OUT_SHARE_MIN_BYTES;
        let n = limits::SHARED_FRAMES_QUEUED_MAX;
        let big = Bytes::from(vec![7u8; (n + 3) * len + 1]);
        let in_big = |f: &Bytes| big.as_ptr_range().contains(&f.as_ptr());
        let segs = |q: &OutQueue| q.out.as_ref().expect("output").segs.clone();
        let _ = q.push(&big.slice(0..1), BIG << 4, Flush::Now, &mut pool);
        assert!(!segs(&q).iter().any(in_big), "a small frame is copied");
        for i in 0..n + 3 {
            let _ = q.push(
                &big.slice(1 + i * len..1 + (i + 1) * len),
                BIG << 4,
                Flush::Now,
                &mut pool,
            );
        }
        let shared = segs(&q).iter().filter(|f| in_big(f)).count();
        assert!(shared < n, "shared while short: {shared}");
        assert!(shared > n / 2, "large frames are shared: {shared}");
        assert_eq!(q.bytes, (n + 3) * len + 1);
        // Once the shared frames are written, nothing queued refers to the
        // large buffer any more.
        let mut batch = Vec::new();
        q.take_batch(&mut batch, n);
        let total: usize = batch.iter().map(Bytes::len).sum();
        q.written(&mut batch, total, &mut pool);
        assert!(!segs(&q).iter().any(in_big));
        assert!(!q.is_empty());
    }

    #[test]
    fn a_batched_frame_still_respects_the_cap() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        assert_eq!(
            q.push(&b(b"12345"), 8, Flush::Batched, &mut pool),
            Ok(Wake::Batch)
        );
        assert_eq!(
            q.push(&b(b"6789"), 8, Flush::Batched, &mut pool),
            Err(PushError::Full)
        );
        assert_eq!(q.queued_bytes(), 5);
    }
}
