//! A token bucket, sans-IO: `allow(now_ms)` spends one token if there is
//! one. Tokens are kept in thousandths so integer refill stays exact at
//! millisecond steps.

/// Rate limit of one kind of command on one connection.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens (x1000) added per millisecond = rate per second.
    rate_per_s: u64,
    /// Most tokens (x1000) held.
    cap_milli: u64,
    /// Tokens now (x1000).
    milli: u64,
    /// When `milli` was last brought up to date.
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `rate_per_s` and holding `burst` tokens.
    /// A rate of 0 means unlimited.
    pub fn new(rate_per_s: u32, burst: u32, now_ms: u64) -> Self {
        let cap_milli = u64::from(burst.max(1)) * 1000;
        Self {
            rate_per_s: u64::from(rate_per_s),
            cap_milli,
            milli: cap_milli,
            last_ms: now_ms,
        }
    }

    /// Spends one token if available.
    pub fn allow(&mut self, now_ms: u64) -> bool {
        if self.rate_per_s == 0 {
            return true;
        }
        self.refill(now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// The server did not read the connection for `paused_ms` (until
    /// `now_ms`; back-pressure, `shard::budget`): what the client may have
    /// sent at the rate meanwhile, now read all at once, must pass. Adds
    /// the pause's tokens on top of the burst; refills never go past the
    /// burst, so the extra is spent before they apply again.
    pub fn credit_pause(&mut self, paused_ms: u64, now_ms: u64) {
        if self.rate_per_s == 0 {
            return;
        }
        self.refill(now_ms);
        self.milli = self
            .milli
            .saturating_add(paused_ms.saturating_mul(self.rate_per_s));
    }

    /// Brings the tokens up to `now_ms`, up to the burst (a credit above it
    /// stays until spent).
    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if elapsed > 0 {
            if self.milli < self.cap_milli {
                let refilled = self.milli + elapsed.saturating_mul(self.rate_per_s);
                self.milli = refilled.min(self.cap_milli);
            }
            self.last_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let mut b = TokenBucket::new(10, 20, 0);
        assert_eq!((0..25).filter(|_| b.allow(0)).count(), 20);
        // 100 ms at 10/s refills one token.
        assert!(b.allow(100));
        assert!(!b.allow(100));
        // A long pause refills only up to the burst.
        assert_eq!((0..30).filter(|_| b.allow(100_000)).count(), 20);
    }

    #[test]
    fn a_pause_the_server_caused_is_credited_beyond_the_burst() {
        let mut b = TokenBucket::new(10, 20, 0);
        assert_eq!((0..20).filter(|_| b.allow(0)).count(), 20);
        // Not read for 5 s: the burst refilled (20), and the 50 commands
        // sent at the rate meanwhile, read at once at 5 s, pass on top.
        b.credit_pause(5_000, 5_000);
        assert_eq!((0..100).filter(|_| b.allow(5_000)).count(), 70);
        // Spent: the rate applies again, and refills stop at the burst.
        assert!(!b.allow(5_000));
        assert_eq!((0..30).filter(|_| b.allow(100_000)).count(), 20);
    }

    #[test]
    fn rate_zero_is_unlimited() {
        let mut b = TokenBucket::new(0, 0, 0);
        assert!((0..100_000).all(|_| b.allow(0)));
    }
}
