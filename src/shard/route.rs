//! Which shard owns what: a pure function of the key and the shard count,
//! so every shard and the admin thread agree without asking anyone.
//!
//! - A room's home shard (`room_home(chatid)`) owns its joined connections,
//!   its call and its flag.
//! - A user's home shard (`user_home(userid)`) owns its presence, its
//!   statusd clients list and who may see it.
//! - A connection lives on the shard whose listener accepted it.

use crate::ids::{ChatId, UserId};

/// Spreads sequential ids evenly (Fibonacci hashing) before the modulo, so
/// rooms 1, 2, 3 ... do not all fall on shards in lockstep with the
/// clients' own id patterns.
fn spread(key: u64, shards: usize) -> usize {
    debug_assert!(shards > 0);
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) % shards as u64) as usize
}

/// The shard that owns room `chat`.
pub fn room_home(chat: ChatId, shards: usize) -> usize {
    spread(chat, shards)
}

/// The shard that owns user `user`'s presence.
pub fn user_home(user: UserId, shards: usize) -> usize {
    // A different odd constant from rooms', so that a user and a room with
    // the same number are not forced onto the same shard.
    spread(user ^ 0x5DEE_CE66_D1CE_5EED, shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_all_shards() {
        for shards in 1..=8 {
            let mut seen = vec![0usize; shards];
            for chat in 1..=800u64 {
                seen[room_home(chat, shards)] += 1;
            }
            assert!(
                seen.iter().all(|&n| n > 800 / shards / 2),
                "{shards}: {seen:?}"
            );
        }
    }

    #[test]
    fn one_shard_owns_everything() {
        assert_eq!(room_home(12345, 1), 0);
        assert_eq!(user_home(u64::MAX, 1), 0);
    }
}
