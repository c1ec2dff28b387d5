//! The wheel itself: a slab of entries threaded onto intrusive doubly linked
//! lists, one list per slot plus one "due" list.
//!
//! Time is cut into ticks of `tick_ms`; an entry with deadline `d` belongs to
//! tick `d / tick_ms` and waits in slot `tick % slots`. `next_tick` is the
//! first tick whose slot has not been swept yet. A poll at `now` sweeps the
//! slots of ticks `next_tick..=now / tick_ms` (every slot once at most, even
//! after a long jump): entries due by `now` fire, entries of the current
//! tick that are not due yet move to the due list, and entries of later
//! revolutions stay put. The due list therefore only holds entries of the
//! current (partial) tick and inserts whose tick was already swept; every poll
//! walks it and fires exactly the ones with `deadline <= now`, so the wheel is
//! exact, not tick-rounded.

/// "No entry": end of a list, empty slot, empty free list.
const NIL: u32 = u32::MAX;

/// Identifies one inserted entry. Stale after the entry fired or was
/// cancelled: the slab slot's generation moves on, so a stale key never
/// touches the entry that reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// One slab slot. Free slots keep their generation and chain through `next`.
#[derive(Debug)]
struct Entry<T> {
    /// Bumped every time the slot is freed, so old keys stop matching.
    generation: u32,
    /// `Some` while the slot holds a live timer.
    value: Option<T>,
    deadline_ms: u64,
    /// Which list the entry is on: a slot index, or `due_list` (= slots).
    list: u32,
    prev: u32,
    /// Next on the list; for a free slot, the next free slot.
    next: u32,
}

/// A hashed timer wheel. See the module doc for how it works.
#[derive(Debug)]
pub struct TimerWheel<T> {
    tick_ms: u64,
    /// Number of wheel slots; `heads[slots]` is the due list.
    slots: usize,
    /// List heads: `slots` wheel slots, then the due list.
    heads: Vec<u32>,
    /// One bit per wheel slot, set while the slot is non-empty, so that
    /// `next_deadline` finds the next occupied slot a word at a time.
    occupied: Vec<u64>,
    entries: Vec<Entry<T>>,
    free_head: u32,
    len: usize,
    /// First tick whose slot has not been swept.
    next_tick: u64,
    /// A lower bound of the deadlines on the due list (exact after a poll,
    /// possibly stale-low after a cancel: that only makes `next_deadline`
    /// early, never late). `u64::MAX` when the due list is empty.
    due_min_ms: u64,
}

impl<T> TimerWheel<T> {
    /// A wheel of `slots` slots of `tick_ms` each, starting at `now_ms`.
    /// One revolution is `tick_ms * slots`; longer timeouts work, they are
    /// just looked at once per revolution until due.
    pub fn new(tick_ms: u64, slots: usize, now_ms: u64) -> Self {
        assert!(tick_ms > 0, "timer tick must be positive");
        // The due list's index must fit the u32 list tag next to the slots.
        assert!(
            slots > 0 && slots < NIL as usize,
            "timer slot count out of range"
        );
        TimerWheel {
            tick_ms,
            slots,
            heads: vec![NIL; slots + 1],
            occupied: vec![0; slots.div_ceil(64)],
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            next_tick: now_ms / tick_ms,
            due_min_ms: u64::MAX,
        }
    }

    /// Number of live timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no timer is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a timer that fires at the first poll with `now_ms >= deadline_ms`
    /// (a deadline in the past fires at the next poll).
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerKey {
        let index = match self.free_head {
            NIL => {
                // 4 billion live timers would need >100 GiB; running out of
                // u32 indexes is a bug, not an operating condition.
                let index = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("timer slab exceeds u32 indexes");
                self.entries.push(Entry {
                    generation: 0,
                    value: None,
                    deadline_ms: 0,
                    list: NIL,
                    prev: NIL,
                    next: NIL,
                });
                index
            }
            free => {
                self.free_head = self.entries[free as usize].next;
                free
            }
        };
        let entry = &mut self.entries[index as usize];
        debug_assert!(entry.value.is_none(), "free slot holds a value");
        entry.value = Some(value);
        entry.deadline_ms = deadline_ms;
        let generation = entry.generation;
        self.len += 1;
        let tick = deadline_ms / self.tick_ms;
        if tick < self.next_tick {
            // Its slot was already swept for that tick: wait on the due list.
            self.link(index, self.due_list());
        } else {
            // `slots` < u32::MAX (checked in `new`), so the slot fits.
            self.link(index, self.slot_of(tick) as u32);
        }
        TimerKey { index, generation }
    }

    /// Removes a live timer and returns its value; `None` for a key whose
    /// timer already fired or was cancelled.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.generation != key.generation || entry.value.is_none() {
            return None;
        }
        Some(self.remove(key.index))
    }

    /// Moves every entry with `deadline <= now_ms` into `out`, in no
    /// particular order, and nothing else.
    pub fn poll_expired(&mut self, now_ms: u64, out: &mut Vec<T>) {
        let now_tick = now_ms / self.tick_ms;
        if now_tick >= self.next_tick {
            let span = now_tick - self.next_tick + 1;
            // After a jump of a revolution or more every slot is swept once;
            // the per-entry deadline check decides, so nothing is missed and
            // nothing is visited twice.
            let sweeps = usize::try_from(span).map_or(self.slots, |s| s.min(self.slots));
            let first = self.slot_of(self.next_tick);
            for i in 0..sweeps {
                let slot = (first + i) % self.slots;
                self.sweep_slot(slot, now_ms, now_tick, out);
            }
            self.next_tick = now_tick + 1;
        }
        self.sweep_due(now_ms, out);
    }

    /// Earliest time worth calling `poll_expired` again; `None` when empty.
    /// Never later than the earliest deadline; it may be earlier (a slot's
    /// tick start, or a stale bound after a cancel), in which case that poll
    /// simply fires nothing.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        let slot_ms = self
            .next_occupied_slot_tick()
            .map(|t| t.saturating_mul(self.tick_ms));
        // Entries are either on a slot or on the due list, so with no
        // occupied slot the due bound is a real deadline.
        Some(slot_ms.map_or(self.due_min_ms, |s| s.min(self.due_min_ms)))
    }

    fn due_list(&self) -> u32 {
        self.slots as u32
    }

    fn slot_of(&self, tick: u64) -> usize {
        // The remainder is below `slots`, which fits in usize.
        (tick % self.slots as u64) as usize
    }

    /// Fires what is due in one wheel slot; moves entries of the current
    /// tick that are not due yet onto the due list; leaves later rounds.
    fn sweep_slot(&mut self, slot: usize, now_ms: u64, now_tick: u64, out: &mut Vec<T>) {
        let mut cur = self.heads[slot];
        while cur != NIL {
            let entry = &self.entries[cur as usize];
            let next = entry.next;
            let deadline_ms = entry.deadline_ms;
            if deadline_ms <= now_ms {
                out.push(self.remove(cur));
            } else if deadline_ms / self.tick_ms <= now_tick {
                self.unlink(cur);
                self.link(cur, self.due_list());
            }
            cur = next;
        }
    }

    /// Fires what is due on the due list and recomputes its lower bound.
    fn sweep_due(&mut self, now_ms: u64, out: &mut Vec<T>) {
        let mut min_ms = u64::MAX;
        let mut cur = self.heads[self.slots];
        while cur != NIL {
            let entry = &self.entries[cur as usize];
            let next = entry.next;
            if entry.deadline_ms <= now_ms {
                out.push(self.remove(cur));
            } else {
                min_ms = min_ms.min(entry.deadline_ms);
            }
            cur = next;
        }
        self.due_min_ms = min_ms;
    }

    /// Tick of the first non-empty wheel slot at or after `next_tick`.
    fn next_occupied_slot_tick(&self) -> Option<u64> {
        let start = self.slot_of(self.next_tick);
        let words = self.occupied.len();
        let (w0, b0) = (start / 64, start % 64);
        // The start word from the start bit, the words after it, then
        // (wrapping) the words before it and the start word's low bits.
        let masked_first = self.occupied[w0] & (!0u64 << b0);
        let found = if masked_first != 0 {
            Some(w0 * 64 + masked_first.trailing_zeros() as usize)
        } else {
            (1..=words).find_map(|k| {
                let w = (w0 + k) % words;
                let mut bits = self.occupied[w];
                if w == w0 {
                    bits &= !(!0u64 << b0);
                }
                (bits != 0).then(|| w * 64 + bits.trailing_zeros() as usize)
            })
        }?;
        debug_assert!(found < self.slots, "occupied bit past the last slot");
        let distance = (found + self.slots - start) % self.slots;
        Some(self.next_tick.saturating_add(distance as u64))
    }

    fn link(&mut self, index: u32, list: u32) {
        let head = self.heads[list as usize];
        {
            let entry = &mut self.entries[index as usize];
            entry.list = list;
            entry.prev = NIL;
            entry.next = head;
        }
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[list as usize] = index;
        if list == self.due_list() {
            self.due_min_ms = self
                .due_min_ms
                .min(self.entries[index as usize].deadline_ms);
        } else {
            self.occupied[list as usize / 64] |= 1 << (list % 64);
        }
    }

    fn unlink(&mut self, index: u32) {
        let (list, prev, next) = {
            let e = &self.entries[index as usize];
            (e.list, e.prev, e.next)
        };
        debug_assert!(list != NIL, "unlinking an entry on no list");
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else {
            debug_assert_eq!(self.heads[list as usize], index);
            self.heads[list as usize] = next;
            if next == NIL && list != self.due_list() {
                self.occupied[list as usize / 64] &= !(1 << (list % 64));
            }
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        let e = &mut self.entries[index as usize];
        e.list = NIL;
        e.prev = NIL;
        e.next = NIL;
    }

    /// Unlinks a live entry, frees its slab slot and returns its value.
    fn remove(&mut self, index: u32) -> T {
        self.unlink(index);
        let free_head = self.free_head;
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.next = free_head;
        self.free_head = index;
        self.len -= 1;
        entry
            .value
            .take()
            // Callers only remove entries they found linked, and every
            // linked entry holds a value (checked in `invariants`).
            .expect("linked timer entry without a value")
    }

    /// Slab slots ever allocated (live or free): shows reuse in tests.
    #[cfg(test)]
    pub(crate) fn slab_len(&self) -> usize {
        self.entries.len()
    }

    /// Checks the structure: lists well formed, every live entry on exactly
    /// the list its deadline says, bitmap and length consistent. O(entries +
    /// slots); for tests.
    pub fn invariants(&self) {
        let mut seen = 0;
        for list in 0..=self.slots {
            let mut prev = NIL;
            let mut cur = self.heads[list];
            if list < self.slots {
                let bit = self.occupied[list / 64] >> (list % 64) & 1 == 1;
                assert_eq!(bit, cur != NIL, "occupied bit of slot {list}");
            }
            while cur != NIL {
                let e = &self.entries[cur as usize];
                assert!(e.value.is_some(), "linked entry without value");
                assert_eq!(e.list as usize, list);
                assert_eq!(e.prev, prev);
                let tick = e.deadline_ms / self.tick_ms;
                if list == self.slots {
                    assert!(tick < self.next_tick, "due entry of an unswept tick");
                    assert!(self.due_min_ms <= e.deadline_ms, "due bound too high");
                } else {
                    assert!(tick >= self.next_tick, "slot entry of a swept tick");
                    assert_eq!(self.slot_of(tick), list);
                }
                seen += 1;
                prev = cur;
                cur = e.next;
            }
        }
        assert_eq!(seen, self.len);
        let live = self.entries.iter().filter(|e| e.value.is_some()).count();
        assert_eq!(live, self.len);
    }
}
