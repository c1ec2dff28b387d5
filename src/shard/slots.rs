//! A shard's connection slots: a slab whose every slot carries its own
//! generation, so that a [`ConnRef`](super::msg::ConnRef) kept after its
//! connection closed (in a queued `Deliver`, a room's joined set, a login
//! dump) never reaches the connection that reuses the slot.
//!
//! The slab hands out the last freed slot first, so under churn a few slots
//! are reused over and over. Each slot's generation advances when its
//! occupant leaves and is 32 bits wide: one slot must be reused 2^32 times
//! (hours of a shard doing nothing but accepting and closing, all on that
//! one slot) before a generation comes back, while a stale reference lives
//! as long as a message in flight or a close being processed. (It used to
//! be a 16-bit counter shared by the whole shard, which came round after
//! 65,536 accepts: seconds of churn.) Generations live beside the slab, so
//! they survive a slot's vacancy, at 4 bytes per slot ever used.

use slab::Slab;

/// Values in slots, each slot with its generation.
pub struct Slots<T> {
    slab: Slab<T>,
    /// Generation of each slot's current (or next) occupant, by slot.
    gens: Vec<u32>,
    /// Most values held at once; slots are below this.
    max: usize,
    /// Generation a slot gets when it is used for the first time.
    first_gen: u32,
}

impl<T> Slots<T> {
    /// Room for `capacity` values before the slab grows, `max` at most;
    /// slots start at generation `first_gen` (0 but in tests of the
    /// wrap-around).
    pub fn with_capacity(capacity: usize, max: usize, first_gen: u32) -> Self {
        Slots {
            slab: Slab::with_capacity(capacity.min(max)),
            gens: Vec::new(),
            max,
            first_gen,
        }
    }

    /// Stores `value`; returns its slot and generation, or `None` when
    /// `max` values are held already (the slot would be out of range).
    pub fn insert(&mut self, value: T) -> Option<(usize, u32)> {
        if self.slab.len() >= self.max {
            return None;
        }
        // With fewer than `max` held, the slab's next slot is below `max`:
        // it never made a slot at or past `max`.
        let slot = self.slab.vacant_key();
        if slot >= self.gens.len() {
            self.gens.resize(slot + 1, self.first_gen);
        }
        let gen = self.gens[slot];
        let key = self.slab.insert(value);
        debug_assert_eq!(key, slot);
        Some((slot, gen))
    }

    /// The value in `slot` if its generation is still `gen`.
    pub fn get_mut(&mut self, slot: usize, gen: u32) -> Option<&mut T> {
        if self.gens.get(slot) != Some(&gen) {
            return None;
        }
        self.slab.get_mut(slot)
    }

    /// The value in `slot` if its generation is still `gen`.
    pub fn get(&self, slot: usize, gen: u32) -> Option<&T> {
        if self.gens.get(slot) != Some(&gen) {
            return None;
        }
        self.slab.get(slot)
    }

    /// Takes the value out of `slot` if its generation is still `gen`; the
    /// slot's next occupant gets the next generation.
    pub fn remove(&mut self, slot: usize, gen: u32) -> Option<T> {
        self.get(slot, gen)?;
        let value = self.slab.remove(slot);
        self.gens[slot] = gen.wrapping_add(1);
        Some(value)
    }

    /// Every value with its slot and generation.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u32, &T)> {
        self.slab
            .iter()
            .map(|(slot, value)| (slot, self.gens[slot], value))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 22;

    #[test]
    fn a_stale_reference_misses_after_the_slot_is_reused_past_a_16_bit_wrap() {
        let mut slots = Slots::with_capacity(4, MAX, 0);
        let (stale_slot, stale_gen) = slots.insert("first").unwrap();
        slots.remove(stale_slot, stale_gen).unwrap();
        // The slab reuses the freed slot first: churn it well past the
        // 65,536 generations a 16-bit counter had.
        for i in 0..(1u32 << 16) + 10 {
            let (slot, gen) = slots.insert("churn").unwrap();
            assert_eq!(slot, stale_slot, "the freed slot is reused");
            assert_ne!(gen, stale_gen, "reuse {i} got the stale generation");
            slots.remove(slot, gen).unwrap();
        }
        let (slot, gen) = slots.insert("new").unwrap();
        assert_eq!((slot, gen), (stale_slot, (1 << 16) + 11));
        assert_eq!(slots.get_mut(stale_slot, stale_gen), None);
        assert_eq!(slots.remove(stale_slot, stale_gen), None);
        assert_eq!(slots.get(slot, gen), Some(&"new"));
    }

    #[test]
    fn generations_are_per_slot_and_survive_vacancy() {
        let mut slots = Slots::with_capacity(4, MAX, 0);
        let a = slots.insert('a').unwrap();
        let b = slots.insert('b').unwrap();
        assert_eq!((a, b), ((0, 0), (1, 0)));
        slots.remove(a.0, a.1).unwrap();
        slots.remove(b.0, b.1).unwrap();
        // Slot 1 was freed last, so it is used first; each slot goes on
        // from its own generation.
        assert_eq!(slots.insert('c'), Some((1, 1)));
        assert_eq!(slots.insert('d'), Some((0, 1)));
        assert_eq!(slots.insert('e'), Some((2, 0)));
        let mut seen: Vec<(usize, u32, char)> = slots.iter().map(|(s, g, v)| (s, g, *v)).collect();
        seen.sort_unstable();
        assert_eq!(seen, [(0, 1, 'd'), (1, 1, 'c'), (2, 0, 'e')]);
        assert_eq!(slots.len(), 3);
    }

    #[test]
    fn a_generation_wraps_to_zero_after_the_largest_and_stale_ones_still_miss() {
        let mut slots = Slots::with_capacity(1, MAX, u32::MAX - 1);
        let old = slots.insert(1).unwrap();
        assert_eq!(old, (0, u32::MAX - 1));
        slots.remove(old.0, old.1).unwrap();
        let last = slots.insert(2).unwrap();
        assert_eq!(last, (0, u32::MAX));
        slots.remove(last.0, last.1).unwrap();
        let wrapped = slots.insert(3).unwrap();
        assert_eq!(wrapped, (0, 0));
        assert_eq!(slots.get(old.0, old.1), None);
        assert_eq!(slots.get(last.0, last.1), None);
        assert_eq!(slots.get(0, 0), Some(&3));
    }

    #[test]
    fn a_full_set_refuses_and_never_makes_a_slot_past_its_max() {
        let mut slots = Slots::with_capacity(0, 3, 0);
        let held: Vec<(usize, u32)> = (0..3).map(|v| slots.insert(v).unwrap()).collect();
        assert_eq!(slots.insert(9), None);
        slots.remove(held[1].0, held[1].1).unwrap();
        assert_eq!(slots.insert(9), Some((1, 1)));
        assert_eq!(slots.insert(10), None);
        assert!(slots.iter().all(|(slot, _, _)| slot < 3));
    }

    #[test]
    fn a_reference_to_a_slot_never_used_misses() {
        let mut slots: Slots<u8> = Slots::with_capacity(1, MAX, 0);
        assert_eq!(slots.get(5, 0), None);
        assert_eq!(slots.remove(5, 0), None);
        assert!(slots.is_empty());
    }
}
