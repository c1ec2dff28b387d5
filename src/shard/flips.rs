//! Round 2 of a relation change on this shard (docs/architecture.md,
//! "Relations and the admin API"): for the touched users homed here, what
//! the change showed and hid, computed from every shard's flip sets a
//! chunk of users at a time, and the presence updates that follow
//! (`emit`, for pairs whose user is homed here).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::msg::ShardMsg;
use super::statusd::{broadcast, fan_out, pres_frame};
use super::{route, FlipRound, Shard};
use crate::core::relations::{self, FlipSets};
use crate::ids::{FastMap, FastSet, UserId};
use crate::limits;

/// Handles a message of round 2 (`FlipGather`, `FlipPart`, `Emit`).
pub fn handle(shard: &Shard, msg: ShardMsg) {
    match msg {
        ShardMsg::FlipGather { epoch, from, users } => {
            let sets = {
                let st = shard.state.borrow();
                debug_assert_eq!(st.relations.epoch(), epoch, "flip sets of another change");
                // Contacts are kept on the user's home, which asked.
                let home = from as usize == shard.id;
                users
                    .into_iter()
                    .map(|u| {
                        let mut sets = FlipSets::default();
                        st.relations.flip_sets(u, &mut sets);
                        if home {
                            st.relations.contact_flip_sets(u, &mut sets);
                        }
                        (u, sets)
                    })
                    .collect()
            };
            shard.send(from as usize, ShardMsg::FlipPart { epoch, sets });
        }
        ShardMsg::FlipPart { epoch, sets } => flip_part(shard, epoch, sets),
        ShardMsg::Emit { pairs } => emit(shard, pairs),
        _ => {}
    }
}

/// Round 1 of a relation change is being applied here.
pub fn open_round(shard: &Shard) {
    let mut st = shard.state.borrow_mut();
    let f = &mut st.updates.flips;
    f.open = true;
    f.stopped_showing.clear();
}

/// The relation change's round 2 is over on every shard: every update it
/// asked of this shard has arrived.
pub fn close_round(shard: &Shard) {
    let mut st = shard.state.borrow_mut();
    let f = &mut st.updates.flips;
    f.open = false;
    f.stopped_showing = FastSet::default();
}

/// Starts round 2 of relation change `epoch` here.
pub fn start_flips(
    shard: &Shard,
    epoch: u64,
    touched: Arc<Vec<UserId>>,
    done: oneshot::Sender<Vec<UserId>>,
) {
    let queue: Vec<UserId> = {
        let st = shard.state.borrow();
        let shards = shard.shards();
        // A user that went quiet before the change has nothing to show or
        // hide (and no client to tell); one that went quiet since may
        // still need to hide itself.
        let concerned =
            |u: UserId| st.presence.is_active(u) || st.updates.flips.stopped_showing.contains(&u);
        touched
            .iter()
            .copied()
            .filter(|&u| route::user_home(u, shards) == shard.id && concerned(u))
            .collect()
    };
    let round = FlipRound {
        epoch,
        touched,
        queue,
        sets: FastMap::default(),
        parts_left: 0,
        done,
    };
    let mut st = shard.state.borrow_mut();
    debug_assert!(
        st.updates.flips.round.is_none(),
        "two relation changes at once"
    );
    st.updates.flips.round = Some(round);
    drop(st);
    next_chunk(shard);
}

/// Sends the next chunk of the flip round, or ends the round.
fn next_chunk(shard: &Shard) {
    let (epoch, users) = {
        let mut st = shard.state.borrow_mut();
        let Some(round) = st.updates.flips.round.as_mut() else {
            return;
        };
        if round.queue.is_empty() {
            let round = st.updates.flips.round.take();
            drop(st);
            if let Some(round) = round {
                // After what this round sent: the next change's round 1
                // reaches every shard behind these updates.
                shard.ack_after_flush(round.done, Vec::new());
            }
            return;
        }
        let n = round.queue.len().min(limits::FLIP_CHUNK_USERS);
        let users: Vec<UserId> = round.queue.drain(..n).collect();
        round.sets = users.iter().map(|&u| (u, FlipSets::default())).collect();
        round.parts_left = shard.shards();
        (round.epoch, users)
    };
    let from = shard.id as u16;
    broadcast(shard, |_| ShardMsg::FlipGather {
        epoch,
        from,
        users: users.clone(),
    });
}

/// One shard's flip sets for the chunk in flight arrived.
fn flip_part(shard: &Shard, epoch: u64, parts: Vec<(UserId, FlipSets)>) {
    let (touched, sets) = {
        let mut st = shard.state.borrow_mut();
        let Some(round) = st.updates.flips.round.as_mut().filter(|r| r.epoch == epoch) else {
            debug_assert!(false, "flip part of change {epoch} without its round");
            return;
        };
        for (u, part) in parts {
            let sets = round.sets.entry(u).or_default();
            sets.kept.extend(part.kept);
            sets.before.extend(part.before);
            sets.after.extend(part.after);
        }
        round.parts_left -= 1;
        if round.parts_left > 0 {
            return;
        }
        (round.touched.clone(), std::mem::take(&mut round.sets))
    };
    let shards = shard.shards();
    let mut local: Vec<(UserId, UserId, bool)> = Vec::new();
    let mut remote: Vec<Vec<(UserId, UserId, bool)>> = vec![Vec::new(); shards];
    for (user, sets) in sets {
        for (other, visible) in relations::flips([&sets]) {
            // A pair of two touched users is seen from both ends; the
            // lower id sends both directions (docs/architecture.md).
            if other < user && touched.binary_search(&other).is_ok() {
                continue;
            }
            local.push((user, other, visible));
            remote[route::user_home(other, shards)].push((other, user, visible));
        }
    }
    emit(shard, local);
    for (to, pairs) in remote.into_iter().enumerate() {
        if !pairs.is_empty() {
            shard.send(to, ShardMsg::Emit { pairs });
        }
    }
    next_chunk(shard);
}

/// Sends what a relation change showed and hid: for each `(about, to,
/// visible)` (`about` homed here), `about`'s presence to `to`'s clients
/// if visible and not 0 (hidden until now, `to` shows 0), or 0 if hidden
/// and `to` may be showing something else: `about` may be showing a value
/// other than 0 now, or stopped after the change was applied here (its
/// last update then went to who sees it since the change, without `to`).
/// One frame per `about`, one message per watcher home.
fn emit(shard: &Shard, mut pairs: Vec<(UserId, UserId, bool)>) {
    pairs.sort_unstable_by_key(|&(about, to, visible)| (about, visible, to));
    let mut rest = &pairs[..];
    while let Some(&(about, _, visible)) = rest.first() {
        let n = rest
            .iter()
            .take_while(|&&(a, _, v)| a == about && v == visible)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let value = {
            let st = shard.state.borrow();
            if visible {
                st.presence.presence(about)
            } else if st.presence.may_show_nonzero(about)
                || st.updates.flips.stopped_showing.contains(&about)
            {
                0
            } else {
                continue;
            }
        };
        if visible && value == 0 {
            continue;
        }
        let frame = pres_frame(shard, about, value);
        fan_out(shard, &frame, group.iter().map(|&(_, to, _)| to).collect());
    }
}
