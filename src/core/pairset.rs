//! [`PairSet`]: a compact ordered set of `(u64, u64)` pairs, the shape of
//! every relation index a shard keeps (`(user, room)`, `(user, contact)`).
//!
//! The pairs live in sorted chunks of at most [`CHUNK`] pairs, each chunk
//! below the next. So a set built in bulk costs 16 bytes per pair (plus a
//! 24-byte header per chunk, under 0.03 bytes a pair), where a `BTreeSet`
//! costs 18-27 and a hash set of pairs more. Lookups are two binary
//! searches; one insert or removal moves at most one chunk (16 KiB); a
//! batch of changes ([`PairSet::apply_sorted`]) rebuilds only the chunks it
//! touches, packed full, in O(changes + touched chunks).
//!
//! Keys are compared as plain tuples: no `+ 1` on a key anywhere, so
//! `u64::MAX` is an ordinary id.
//!
//! Invariants (checked by [`PairSet::invariants`] in tests): every chunk
//! is non-empty, strictly ascending, at most [`CHUNK`] long, and entirely
//! below the next chunk; `len` is the sum of the chunk lengths.

/// Most pairs in one chunk: an insert shifts at most this many (16 KiB),
/// and a lookup's second binary search is over at most this many.
pub const CHUNK: usize = 1024;

/// A pair of ids.
pub type Pair = (u64, u64);

/// An ordered set of pairs. See the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairSet {
    chunks: Vec<Vec<Pair>>,
    len: usize,
}

impl PairSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of `pairs`, which may be in any order and hold duplicates.
    /// Chunks come out packed full.
    pub fn from_unsorted(mut pairs: Vec<Pair>) -> Self {
        pairs.sort_unstable();
        pairs.dedup();
        let mut set = PairSet::new();
        set.len = pairs.len();
        set.chunks = pairs.chunks(CHUNK).map(<[Pair]>::to_vec).collect();
        set
    }

    /// Adds `key`, which loading code passes in ascending order: then it
    /// is appended to the last chunk (a new one, of exactly [`CHUNK`]
    /// pairs' capacity, when that is full), so a set loaded this way is
    /// packed full with no copy of the input. A key out of order is
    /// inserted where it belongs. False if it was there already.
    pub fn push_sorted(&mut self, key: Pair) -> bool {
        match self.chunks.last_mut() {
            Some(last) if last.last().is_some_and(|&l| l < key) => {
                if last.len() < CHUNK {
                    last.push(key);
                } else {
                    let mut chunk = Vec::with_capacity(CHUNK);
                    chunk.push(key);
                    self.chunks.push(chunk);
                }
                self.len += 1;
                true
            }
            _ => self.insert(key),
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of heap this set holds (chunk storage and the chunk list).
    pub fn heap_bytes(&self) -> usize {
        let pairs: usize = self.chunks.iter().map(Vec::capacity).sum();
        pairs * std::mem::size_of::<Pair>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Pair>>()
    }

    /// The chunk that holds `key` if anything does: the first whose last
    /// pair is not below it.
    fn chunk_of(&self, key: Pair) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|&l| l < key))
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: Pair) -> bool {
        self.chunks
            .get(self.chunk_of(key))
            .is_some_and(|c| c.binary_search(&key).is_ok())
    }

    /// Adds `key`; false if it was there already.
    pub fn insert(&mut self, key: Pair) -> bool {
        if self.chunks.is_empty() {
            self.chunks.push(vec![key]);
            self.len = 1;
            return true;
        }
        // Past the last chunk's end: append to the last chunk.
        let i = self.chunk_of(key).min(self.chunks.len() - 1);
        let chunk = &mut self.chunks[i];
        let Err(pos) = chunk.binary_search(&key) else {
            return false;
        };
        chunk.insert(pos, key);
        self.len += 1;
        if chunk.len() > CHUNK {
            let tail = chunk.split_off(chunk.len() / 2);
            chunk.shrink_to_fit();
            self.chunks.insert(i + 1, tail);
        }
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: Pair) -> bool {
        let i = self.chunk_of(key);
        let Some(chunk) = self.chunks.get_mut(i) else {
            return false;
        };
        let Ok(pos) = chunk.binary_search(&key) else {
            return false;
        };
        chunk.remove(pos);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(i);
        }
        true
    }

    /// Every `b` with `(a, b)` in the set, ascending.
    pub fn seconds(&self, a: u64) -> impl Iterator<Item = u64> + '_ {
        let first = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|&(x, _)| x < a));
        let start = self
            .chunks
            .get(first)
            .map_or(0, |c| c.partition_point(|&(x, _)| x < a));
        self.chunks
            .get(first..)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .flat_map(move |(i, c)| c[if i == 0 { start } else { 0 }..].iter())
            .take_while(move |&&(x, _)| x == a)
            .map(|&(_, b)| b)
    }

    /// Every pair, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Pair> + '_ {
        self.chunks.iter().flatten().copied()
    }

    /// Adds every pair of `add` and removes every pair of `remove`; both
    /// strictly ascending (debug-asserted) and disjoint. Only the chunks
    /// whose range the changes fall in are rebuilt (packed full), so the
    /// cost is O(changes + touched chunks), whatever the set's size.
    pub fn apply_sorted(&mut self, add: &[Pair], remove: &[Pair]) {
        debug_assert!(add.windows(2).all(|w| w[0] < w[1]), "adds not sorted");
        debug_assert!(remove.windows(2).all(|w| w[0] < w[1]), "removes not sorted");
        if add.is_empty() && remove.is_empty() {
            return;
        }
        if self.chunks.is_empty() {
            *self = PairSet::from_unsorted(add.to_vec());
            return;
        }
        let old = std::mem::take(&mut self.chunks);
        let last = old.len() - 1;
        let mut out: Vec<Vec<Pair>> = Vec::with_capacity(old.len());
        let (mut a, mut r) = (0, 0);
        let mut len = 0;
        for (i, chunk) in old.into_iter().enumerate() {
            // Changes up to this chunk's last pair belong to it; the last
            // chunk also takes everything beyond.
            let bound = |k: &Pair| i == last || chunk.last().is_some_and(|l| k <= l);
            let a_end = a + add[a..].iter().take_while(|k| bound(k)).count();
            let r_end = r + remove[r..].iter().take_while(|k| bound(k)).count();
            if a == a_end && r == r_end {
                len += chunk.len();
                out.push(chunk);
                continue;
            }
            let merged = merge(&chunk, &add[a..a_end], &remove[r..r_end]);
            (a, r) = (a_end, r_end);
            len += merged.len();
            let pieces = merged.len().div_ceil(CHUNK);
            if pieces > 0 {
                let size = merged.len().div_ceil(pieces);
                out.extend(merged.chunks(size).map(<[Pair]>::to_vec));
            }
        }
        self.chunks = out;
        self.len = len;
        self.coalesce();
    }

    /// Joins neighbouring chunks that together fit in one: after removals
    /// many small chunks would each cost an allocation and a header.
    fn coalesce(&mut self) {
        if self.chunks.len() < 2 {
            return;
        }
        let mut out: Vec<Vec<Pair>> = Vec::with_capacity(self.chunks.len());
        for chunk in std::mem::take(&mut self.chunks) {
            match out.last_mut() {
                Some(prev) if prev.len() + chunk.len() <= CHUNK / 2 => prev.extend(chunk),
                _ => out.push(chunk),
            }
        }
        self.chunks = out;
    }

    /// Checks every invariant of the module doc; for tests.
    pub fn invariants(&self) {
        let mut n = 0;
        for (i, c) in self.chunks.iter().enumerate() {
            assert!(!c.is_empty(), "empty chunk {i}");
            assert!(c.len() <= CHUNK, "chunk {i} holds {}", c.len());
            assert!(c.windows(2).all(|w| w[0] < w[1]), "chunk {i} not ascending");
            if let Some(next) = self.chunks.get(i + 1) {
                assert!(c[c.len() - 1] < next[0], "chunk {i} overlaps the next");
            }
            n += c.len();
        }
        assert_eq!(n, self.len, "length");
    }
}

/// `chunk` with `add` merged in and `remove` taken out (all three sorted;
/// `add` and `remove` disjoint).
fn merge(chunk: &[Pair], add: &[Pair], remove: &[Pair]) -> Vec<Pair> {
    let mut out = Vec::with_capacity(chunk.len() + add.len());
    let (mut i, mut a, mut r) = (0, 0, 0);
    loop {
        let next = match (chunk.get(i), add.get(a)) {
            (Some(&c), Some(&x)) if x < c => {
                a += 1;
                x
            }
            (Some(&c), Some(&x)) => {
                // Equal: the pair is already there; take it once.
                i += 1;
                a += usize::from(x == c);
                c
            }
            (Some(&c), None) => {
                i += 1;
                c
            }
            (None, Some(&x)) => {
                a += 1;
                x
            }
            (None, None) => break,
        };
        while remove.get(r).is_some_and(|&k| k < next) {
            r += 1;
        }
        if remove.get(r) != Some(&next) {
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
mod tests;
