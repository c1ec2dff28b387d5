//! A shard's pool of output chunks: the contiguous buffers small frames
//! are copied into on their way to a connection's socket
//! ([`super::outbuf::OutQueue`]), so a write is one or a few large buffers
//! instead of one piece per delivery (what the kernel's copy spent its
//! time gathering; docs/architecture.md, "A room message", step 7).
//!
//! Chunks come in size classes, [`limits::OUT_CHUNK_MIN`] doubling up to
//! [`limits::OUT_CHUNK_MAX`]: a connection starts with the class it needed
//! last, takes a larger one each time a chunk fills before a write empties
//! it, and a smaller one when it used a quarter or less, so a connection
//! that gets one small frame holds a small chunk and a busy one large
//! ones.
//!
//! A chunk is a `BytesMut`; what a writer sends is a `Bytes` split off its
//! front, which shares the allocation. A chunk given back to the pool may
//! therefore still be referenced by a write in flight or a queue that has
//! not written it yet: [`ChunkPool::take`] reclaims one only when no
//! other reference is left (`BytesMut::try_reclaim`, which never
//! allocates), and otherwise moves on, so a chunk is reused as soon as its
//! bytes are out, without the queue having to track when that happens.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::limits;

/// Number of chunk size classes.
pub const CLASSES: usize =
    (limits::OUT_CHUNK_MAX / limits::OUT_CHUNK_MIN).trailing_zeros() as usize + 1;

/// Pooled chunks a take looks at before it allocates: the front of a
/// class's list is the chunk given back longest ago, the one most likely
/// written out by now.
const TAKE_TRIES: usize = 3;

/// Bytes of class `class`'s chunks.
pub const fn class_bytes(class: u8) -> usize {
    limits::OUT_CHUNK_MIN << class
}

/// A shard's free output chunks, by size class. Not `Send`: each shard
/// has its own.
#[derive(Default)]
pub struct ChunkPool {
    free: [VecDeque<BytesMut>; CLASSES],
    /// Bytes of the chunks in `free`, against [`limits::OUT_POOL_BYTES_MAX`].
    pooled_bytes: usize,
    /// Chunks allocated because none could be reused (a counter for
    /// benchmarks and metrics).
    allocated: u64,
}

impl ChunkPool {
    /// An empty chunk of `class` with its whole capacity free: a pooled
    /// one nothing refers to any more, else a new one.
    pub fn take(&mut self, class: u8) -> BytesMut {
        let size = class_bytes(class);
        let free = &mut self.free[usize::from(class)];
        for _ in 0..TAKE_TRIES.min(free.len()) {
            let Some(mut chunk) = free.pop_front() else {
                break;
            };
            chunk.clear();
            if chunk.try_reclaim(size) {
                self.pooled_bytes -= size;
                return chunk;
            }
            // Still written from: try it again later.
            free.push_back(chunk);
        }
        self.allocated += 1;
        BytesMut::with_capacity(size)
    }

    /// Takes back a chunk of `class` (empty; its bytes may still be in
    /// flight). A full pool makes room by letting go of chunks of other
    /// classes (the sizes connections needed before, which a burst that
    /// made them grow leaves behind); if that is not enough, this chunk is
    /// the one let go (freed once its last bytes are written).
    pub fn give(&mut self, chunk: BytesMut, class: u8) {
        let size = class_bytes(class);
        let mut other = 0;
        while self.pooled_bytes + size > limits::OUT_POOL_BYTES_MAX && other < CLASSES {
            if other != usize::from(class) && self.free[other].pop_front().is_some() {
                self.pooled_bytes -= class_bytes(other as u8);
            } else {
                other += 1;
            }
        }
        if self.pooled_bytes + size <= limits::OUT_POOL_BYTES_MAX {
            self.pooled_bytes += size;
            self.free[usize::from(class)].push_back(chunk);
        }
    }

    /// Chunks allocated so far because the pool had none to reuse.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Bytes of chunks waiting in the pool.
    pub fn pooled_bytes(&self) -> usize {
        self.pooled_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_min_to_max() {
        assert_eq!(class_bytes(0), limits::OUT_CHUNK_MIN);
        assert_eq!(class_bytes(CLASSES as u8 - 1), limits::OUT_CHUNK_MAX);
    }

    #[test]
    fn a_chunk_is_reused_once_its_bytes_are_gone_and_not_before() {
        let mut pool = ChunkPool::default();
        let mut chunk = pool.take(0);
        assert_eq!(pool.allocated(), 1);
        chunk.extend_from_slice(b"hello");
        let in_flight = chunk.split().freeze();
        pool.give(chunk, 0);
        // Still referenced by the write in flight: not handed out again.
        let other = pool.take(0);
        assert_eq!(pool.allocated(), 2);
        assert_ne!(other.as_ptr(), in_flight.as_ptr());
        assert_eq!(&in_flight[..], b"hello");
        let ptr = in_flight.as_ptr();
        drop(in_flight);
        // Written and dropped: the same memory comes back, whole.
        let again = pool.take(0);
        assert_eq!(pool.allocated(), 2);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.capacity(), class_bytes(0));
        assert_eq!(pool.pooled_bytes(), 0);
    }

    #[test]
    fn a_full_pool_lets_go_of_other_classes_first() {
        let mut pool = ChunkPool::default();
        let top = CLASSES as u8 - 1;
        let n = limits::OUT_POOL_BYTES_MAX / class_bytes(0);
        for _ in 0..n {
            pool.give(BytesMut::with_capacity(class_bytes(0)), 0);
        }
        assert_eq!(pool.pooled_bytes(), limits::OUT_POOL_BYTES_MAX);
        pool.give(BytesMut::with_capacity(class_bytes(top)), top);
        assert_eq!(pool.free[usize::from(top)].len(), 1);
        assert_eq!(
            pool.free[0].len(),
            n - class_bytes(top) / class_bytes(0),
            "just enough small chunks let go"
        );
        assert!(pool.pooled_bytes() <= limits::OUT_POOL_BYTES_MAX);
    }

    #[test]
    fn the_pool_keeps_at_most_its_byte_limit() {
        let mut pool = ChunkPool::default();
        let top = CLASSES as u8 - 1;
        let n = limits::OUT_POOL_BYTES_MAX / class_bytes(top) + 3;
        for _ in 0..n {
            pool.give(BytesMut::with_capacity(class_bytes(top)), top);
        }
        assert!(pool.pooled_bytes() <= limits::OUT_POOL_BYTES_MAX);
        assert_eq!(
            pool.free[usize::from(top)].len(),
            limits::OUT_POOL_BYTES_MAX / class_bytes(top)
        );
    }
}
