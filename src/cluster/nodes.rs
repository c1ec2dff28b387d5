//! Which other nodes are alive, from what they send (sans-IO; `now_ms` is
//! an argument). A node is alive from its first message until it says
//! goodbye or sends nothing for the node timeout; a message with another
//! incarnation from the same slot is a restart (docs/cluster.md, "Node
//! loss").

use crate::cluster::wire::From;
use crate::core::room::NodeSlot;
use crate::ids::FastMap;

/// What a message from a node means for what this node holds of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A live node, as known.
    Known,
    /// A node not known (first met, or back after it was dropped for
    /// silence): what it sends from now on is kept.
    New,
    /// The slot's node restarted: drop what the old one told first.
    Restarted,
    /// From a node that said goodbye: ignore.
    Gone,
}

#[derive(Debug)]
struct Peer {
    incarnation: u64,
    last_ms: u64,
    /// Said goodbye (its late messages are ignored).
    bye: bool,
}

/// The other nodes. See the module doc.
#[derive(Debug)]
pub struct Nodes {
    timeout_ms: u64,
    peers: FastMap<NodeSlot, Peer>,
}

impl Nodes {
    /// Nodes silent for `timeout_ms` are dropped.
    pub fn new(timeout_ms: u64) -> Self {
        Nodes {
            timeout_ms,
            peers: FastMap::default(),
        }
    }

    /// A message from `from` at `now_ms`.
    pub fn seen(&mut self, from: From, now_ms: u64) -> Seen {
        match self.peers.get_mut(&from.slot) {
            Some(p) if p.incarnation == from.incarnation => {
                if p.bye {
                    return Seen::Gone;
                }
                p.last_ms = now_ms;
                Seen::Known
            }
            Some(p) => {
                let was_live = !p.bye;
                *p = Peer {
                    incarnation: from.incarnation,
                    last_ms: now_ms,
                    bye: false,
                };
                if was_live {
                    Seen::Restarted
                } else {
                    Seen::New
                }
            }
            None => {
                self.peers.insert(
                    from.slot,
                    Peer {
                        incarnation: from.incarnation,
                        last_ms: now_ms,
                        bye: false,
                    },
                );
                Seen::New
            }
        }
    }

    /// `from` said goodbye; true if it was live (drop what it told).
    pub fn bye(&mut self, from: From) -> bool {
        match self.peers.get_mut(&from.slot) {
            Some(p) if p.incarnation == from.incarnation => !std::mem::replace(&mut p.bye, true),
            Some(_) => false,
            None => {
                self.peers.insert(
                    from.slot,
                    Peer {
                        incarnation: from.incarnation,
                        last_ms: 0,
                        bye: true,
                    },
                );
                false
            }
        }
    }

    /// Nodes silent for the timeout at `now_ms`: forgotten (a later
    /// message makes them [`Seen::New`]), returned so their state is
    /// dropped.
    pub fn expire(&mut self, now_ms: u64) -> Vec<NodeSlot> {
        let timeout = self.timeout_ms;
        let dead: Vec<NodeSlot> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.bye && now_ms.saturating_sub(p.last_ms) >= timeout)
            .map(|(&s, _)| s)
            .collect();
        for s in &dead {
            self.peers.remove(s);
        }
        dead
    }

    /// Forgets every node (this node reconnected: it asks all to resend);
    /// returns the live ones, whose state is dropped.
    pub fn forget_all(&mut self) -> Vec<NodeSlot> {
        let live = self
            .peers
            .iter()
            .filter(|(_, p)| !p.bye)
            .map(|(&s, _)| s)
            .collect();
        self.peers.clear();
        live
    }

    /// Live nodes.
    pub fn live(&self) -> usize {
        self.peers.values().filter(|p| !p.bye).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(slot: NodeSlot, incarnation: u64) -> From {
        From { slot, incarnation }
    }

    #[test]
    fn a_node_lives_until_silent_for_the_timeout() {
        let mut n = Nodes::new(1000);
        assert_eq!(n.seen(from(1, 7), 0), Seen::New);
        assert_eq!(n.seen(from(1, 7), 500), Seen::Known);
        assert!(n.expire(1499).is_empty());
        assert_eq!(n.expire(1500), vec![1]);
        assert_eq!(n.live(), 0);
        // Back after being dropped: new again, so it is asked to resend.
        assert_eq!(n.seen(from(1, 7), 1600), Seen::New);
    }

    #[test]
    fn a_restart_and_a_goodbye_are_told_apart() {
        let mut n = Nodes::new(1000);
        n.seen(from(2, 1), 0);
        assert_eq!(n.seen(from(2, 2), 10), Seen::Restarted);
        assert!(n.bye(from(2, 2)));
        assert!(!n.bye(from(2, 2)), "one goodbye counts once");
        assert_eq!(n.seen(from(2, 2), 20), Seen::Gone, "late messages ignored");
        assert!(
            n.expire(10_000).is_empty(),
            "a node that left does not expire again"
        );
        assert_eq!(n.seen(from(2, 3), 30), Seen::New, "the slot's next start");
    }
}
