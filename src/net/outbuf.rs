//! A connection's outbound queue: frames shared by reference (`Bytes`),
//! a byte count capped by `--max-outbuf-bytes`, and the waker of the
//! connection's writer task.
//!
//! Frames are never copied here: a room broadcast queues clones of one
//! `Bytes` (a reference-count increment) on every recipient.

use std::collections::VecDeque;
use std::task::Waker;

use bytes::{Buf, Bytes};

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// Queueing it would exceed the cap: the reader is too slow.
    Full,
}

/// Frames waiting to be written to one connection.
#[derive(Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames` (after any partial write of the first one).
    queued_bytes: usize,
    /// The writer task, parked while the queue was empty.
    writer: Option<Waker>,
}

impl OutQueue {
    /// Queues `frame` unless that would take the queue over `cap` bytes.
    pub fn push(&mut self, frame: Bytes, cap: usize) -> Result<(), PushError> {
        if self.queued_bytes + frame.len() > cap {
            return Err(PushError::Full);
        }
        self.queued_bytes += frame.len();
        self.frames.push_back(frame);
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        Ok(())
    }

    /// Bytes queued.
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
    }

    /// After a write of `batch` that wrote `n` bytes: uncounts them and
    /// puts the unwritten rest back at the front, in order.
    pub fn written(&mut self, batch: &mut Vec<Bytes>, mut n: usize) {
        self.queued_bytes -= n.min(self.queued_bytes);
        let mut rest = 0;
        for frame in batch.iter_mut() {
            if n >= frame.len() {
                n -= frame.len();
                rest += 1;
            } else {
                frame.advance(n);
                break;
            }
        }
        for frame in batch.drain(rest..).rev() {
            self.frames.push_front(frame);
        }
        batch.clear();
    }

    /// Registers the writer's waker for the next push.
    pub fn park_writer(&mut self, waker: &Waker) {
        self.writer = Some(waker.clone());
    }

    /// Wakes the writer (to flush and close, say) whether or not a frame
    /// was queued.
    pub fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.queued_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_beyond_cap_is_refused_and_leaves_the_queue_as_it_was() {
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"12345"), 8).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"6789"), 8), Err(PushError::Full));
        assert_eq!(q.queued_bytes(), 5);
        q.push(Bytes::from_static(b"678"), 8).unwrap();
        assert_eq!(q.queued_bytes(), 8);
    }

    #[test]
    fn partial_write_puts_the_unwritten_tail_back_in_order() {
        let mut q = OutQueue::default();
        for f in [&b"aaa"[..], b"bbb", b"ccc"] {
            q.push(Bytes::copy_from_slice(f), 100).unwrap();
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 10);
        assert_eq!(batch.len(), 3);
        q.written(&mut batch, 4); // "aaa" and one byte of "bbb"
        assert!(batch.is_empty());
        assert_eq!(q.queued_bytes(), 5);
        q.take_batch(&mut batch, 10);
        let rest: Vec<u8> = batch.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(rest, b"bbccc");
    }

    #[test]
    fn take_batch_respects_the_iovec_limit() {
        let mut q = OutQueue::default();
        for _ in 0..5 {
            q.push(Bytes::from_static(b"x"), 100).unwrap();
        }
        let mut batch = Vec::new();
        q.take_batch(&mut batch, 2);
        assert_eq!(batch.len(), 2);
        q.written(&mut batch, 2);
        assert_eq!(q.queued_bytes(), 3);
    }
}
