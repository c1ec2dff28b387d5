//! Server-wide chatd client ids (protocol 4.1): one incrementing 32-bit
//! counter for all shards, never 0, never an id still held by a connected
//! client after the counter wraps.
//!
//! In a cluster every id carries the node's slot in its high bits
//! ([`ClientIds::for_node`]), so ids are unique among all nodes with no
//! round trip per login.
//!
//! The counter is one atomic; the ids in use sit in striped sets (see
//! [`super::striped`]): a login or logout takes one uncontended lock,
//! never a server-wide one.

use std::sync::atomic::{AtomicU32, Ordering};

use super::striped::Striped;
use crate::ids::{ClientId, FastSet};
use crate::limits;

/// Hands out and takes back client ids.
pub struct ClientIds {
    next: AtomicU32,
    /// The node's slot in the high bits (0 for a single node).
    prefix: u32,
    /// The bits the counter fills (all for a single node).
    mask: u32,
    in_use: Striped<FastSet<ClientId>>,
}

impl ClientIds {
    /// Starts counting at `first` (1 in production; tests start near the
    /// top to exercise wrap-around).
    pub fn new(first: ClientId) -> Self {
        Self {
            next: AtomicU32::new(first),
            prefix: 0,
            mask: u32::MAX,
            in_use: Striped::default(),
        }
    }

    /// Ids of node `slot` of a cluster (1 and up): the slot in the high
    /// [`limits::CLUSTER_SLOT_BITS`] bits, the counter (from `first`) in
    /// the rest.
    pub fn for_node(slot: u16, first: ClientId) -> Self {
        let low = 32 - limits::CLUSTER_SLOT_BITS;
        Self {
            next: AtomicU32::new(first),
            prefix: u32::from(slot) << low,
            mask: (1 << low) - 1,
            in_use: Striped::default(),
        }
    }

    /// The next free id. Loops only past ids still in use after a wrap,
    /// of which there can be at most as many as connected clients.
    pub fn allocate(&self) -> ClientId {
        loop {
            let id = self.prefix | (self.next.fetch_add(1, Ordering::Relaxed) & self.mask);
            if id != 0 && self.in_use.lock(u64::from(id)).insert(id) {
                return id;
            }
        }
    }

    /// Gives `id` back when its connection closes.
    pub fn release(&self, id: ClientId) {
        self.in_use.lock(u64::from(id)).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_around_skips_zero_and_ids_in_use() {
        let ids = ClientIds::new(u32::MAX - 1);
        let a = ids.allocate(); // MAX-1
        let b = ids.allocate(); // MAX
        assert_eq!((a, b), (u32::MAX - 1, u32::MAX));
        ids.release(a);
        // Counter wraps to 0 (skipped) then 1.
        assert_eq!(ids.allocate(), 1);
    }

    #[test]
    fn a_node_of_a_cluster_gives_ids_with_its_slot_and_wraps_within_it() {
        let ids = ClientIds::for_node(3, (1 << 24) - 1);
        assert_eq!(ids.allocate(), (3 << 24) | 0xFF_FFFF);
        // The counter wraps inside the node's range: 3 << 24 is not 0, so
        // it is a valid id.
        assert_eq!(ids.allocate(), 3 << 24);
        assert_eq!(ids.allocate(), (3 << 24) | 1);
    }

    #[test]
    fn an_id_held_across_a_full_wrap_is_skipped() {
        let ids = ClientIds::new(5);
        let held = ids.allocate();
        assert_eq!(held, 5);
        ids.next.store(5, Ordering::Relaxed); // as if the counter went round
        assert_eq!(ids.allocate(), 6);
    }
}
