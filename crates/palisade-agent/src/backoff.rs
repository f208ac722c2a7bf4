//! Reconnect delays: exponential backoff with full jitter ("AWS architecture blog:
//! Exponential Backoff and Jitter"). Attempt `n` waits a uniformly random time in
//! `[MIN_DELAY, min(cap, base · 2ⁿ)]`, with the randomness from the operating system's
//! CSPRNG, so a fleet that lost its hub at the same moment does not come back in step
//! (no thundering herd) and no agent ever retries in a tight loop.

use std::time::Duration;

/// No delay is shorter than this, even when the jitter draws zero.
pub const MIN_DELAY: Duration = Duration::from_millis(100);

/// Exponential backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base: base.max(MIN_DELAY),
            cap: cap.max(base).max(MIN_DELAY),
            attempt: 0,
        }
    }

    /// How many delays have been handed out since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the delay for attempt `n` (0-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, and advance.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let drawn = random_below(millis.saturating_add(1));
        Duration::from_millis(drawn).max(MIN_DELAY)
    }

    /// Back to the first attempt (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random integer in `[0, bound)` (0 when `bound` is 0), from the OS CSPRNG.
fn random_below(bound: u64) -> u64 {
    if bound <= 1 {
        return 0;
    }
    // Rejection sampling: no modulo bias.
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: fall back to the full ceiling, never to zero.
            return bound - 1;
        }
        let value = u64::from_le_bytes(bytes);
        if value < zone {
            return value % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_base_up_to_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300];
        for (n, secs) in expected.iter().enumerate() {
            assert_eq!(
                b.ceiling(n as u32),
                Duration::from_secs(*secs),
                "attempt {n}"
            );
        }
        assert_eq!(b.ceiling(1000), Duration::from_secs(300));
    }

    #[test]
    fn delays_stay_within_bounds_and_are_spread() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for n in 0..40u32 {
            let ceiling = b.ceiling(n);
            let d = b.next_delay();
            assert!(d >= MIN_DELAY, "attempt {n}: {d:?} below the floor");
            assert!(
                d <= ceiling.max(MIN_DELAY),
                "attempt {n}: {d:?} above {ceiling:?}"
            );
        }
        assert_eq!(b.attempt(), 40);
        // Capped attempts: full jitter spreads them over [0.1 s, 300 s].
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        assert!(max <= Duration::from_secs(300));
        assert!(
            max - min > Duration::from_secs(150),
            "not spread: {min:?}..{max:?}"
        );
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn random_below_is_in_range() {
        for bound in [0u64, 1, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                let v = random_below(bound);
                assert!(v < bound.max(1));
            }
        }
    }
}
