//! Recycled recipient lists. A cross-shard `Deliver` carries a list of
//! connections to the shard that owns them; that shard hands the emptied
//! list back to the sender's pool, so a steady stream of messages
//! allocates no lists. One pool per shard, filled by the others
//! (lock-free, bounded: surplus lists are simply freed).

use crossbeam_queue::ArrayQueue;

/// Lists a pool keeps at most.
const POOL_LISTS: usize = 1024;

/// Largest list kept (in elements): an occasional huge room does not pin
/// its list's memory forever.
const POOL_LIST_MAX: usize = 64 * 1024;

/// A pool of empty `Vec<T>` with their capacity.
pub struct ListPool<T> {
    lists: ArrayQueue<Vec<T>>,
}

impl<T> Default for ListPool<T> {
    fn default() -> Self {
        Self {
            lists: ArrayQueue::new(POOL_LISTS),
        }
    }
}

impl<T> ListPool<T> {
    /// An empty list with room for at least `n` elements: a recycled one
    /// if there is one (grown if needed), else a new one.
    pub fn take(&self, n: usize) -> Vec<T> {
        match self.lists.pop() {
            Some(mut v) => {
                v.reserve(n);
                v
            }
            None => Vec::with_capacity(n),
        }
    }

    /// Gives a list back (emptied here).
    pub fn give(&self, mut v: Vec<T>) {
        if v.capacity() == 0 || v.capacity() > POOL_LIST_MAX {
            return;
        }
        v.clear();
        // Full: let it go.
        let _ = self.lists.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_back_list_is_reused_with_its_capacity() {
        let pool = ListPool::<u64>::default();
        let mut v = pool.take(10);
        v.extend(0..10);
        let ptr = v.as_ptr();
        pool.give(v);
        let again = pool.take(5);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr);
    }
}
