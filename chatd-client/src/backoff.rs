//! Reconnect delays: exponential backoff with jitter, sans-IO (the caller
//! sleeps). Jitter spreads the reconnects of many clients that lost the
//! same server at the same moment, so a restarted server is not met by
//! all of them in the same millisecond.

use std::time::Duration;

/// Reconnect policy: the delay before attempt `n` is drawn uniformly from
/// `[d/2, d]` with `d = min(initial * 2^(n-1), max)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first attempt (before jitter).
    pub initial: Duration,
    /// Longest delay (before jitter).
    pub max: Duration,
}

impl Default for Backoff {
    /// 200 ms, doubling up to 10 s ([`crate::limits::RECONNECT_INITIAL`],
    /// [`crate::limits::RECONNECT_MAX`]).
    fn default() -> Self {
        Backoff {
            initial: crate::limits::RECONNECT_INITIAL,
            max: crate::limits::RECONNECT_MAX,
        }
    }
}

/// The delays of one run of reconnect attempts.
#[derive(Clone, Debug)]
pub(crate) struct Delays {
    policy: Backoff,
    attempt: u32,
    rng: u64,
}

impl Delays {
    /// Delays for `policy`, jitter seeded with `seed` (any value).
    pub(crate) fn new(policy: Backoff, seed: u64) -> Self {
        Delays {
            policy,
            attempt: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// Starts over (after a successful login).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The number of the next attempt and the delay before it.
    pub(crate) fn next_delay(&mut self) -> (u32, Duration) {
        self.attempt = self.attempt.saturating_add(1);
        let doublings = (self.attempt - 1).min(31);
        let base = self
            .policy
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.policy.max);
        // xorshift64: plenty for spreading delays.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        let span = base - half;
        let frac = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        (self.attempt, half + span.mul_f64(frac))
    }
}

/// A seed that differs between processes and clients.
pub(crate) fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let here = &t as *const u64 as u64;
    t ^ here.rotate_left(32) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_max_with_jitter_in_the_upper_half() {
        let policy = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let mut d = Delays::new(policy, 42);
        let bases = [100, 200, 400, 800, 1000, 1000, 1000];
        for (i, base) in bases.into_iter().enumerate() {
            let (attempt, delay) = d.next_delay();
            assert_eq!(attempt, i as u32 + 1);
            let base = Duration::from_millis(base);
            assert!(
                delay >= base / 2 && delay <= base,
                "attempt {attempt}: {delay:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        d.reset();
        let (attempt, delay) = d.next_delay();
        assert_eq!(attempt, 1);
        assert!(delay <= Duration::from_millis(100));
    }

    #[test]
    fn different_seeds_spread_the_same_attempt() {
        let delays: std::collections::BTreeSet<Duration> = (0..20u64)
            .map(|s| Delays::new(Backoff::default(), s * 7919).next_delay().1)
            .collect();
        assert!(delays.len() > 10, "jitter spread only {delays:?}");
    }

    #[test]
    fn many_attempts_do_not_overflow() {
        let mut d = Delays::new(Backoff::default(), 1);
        for _ in 0..100 {
            let (_, delay) = d.next_delay();
            assert!(delay <= Backoff::default().max);
        }
    }
}
