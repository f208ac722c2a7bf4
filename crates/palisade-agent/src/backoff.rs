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

/// The largest share (0.0–1.0) of `times` that falls within any one interval of
/// length `window`: 1.0 means they all came in one burst (a thundering herd), 1/n
/// that they are perfectly spread. The reconnect-storm test applies it to the times at
/// which a fleet reconnected after a hub restart; the unit test below shows it tells
/// jittered from un-jittered schedules.
pub fn busiest_window_share(times: &[Duration], window: Duration) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let (mut start, mut best) = (0usize, 0usize);
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] > window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as f64 / sorted.len() as f64
}

/// How long the middle 80 % of `times` took to arrive (10th to 90th percentile,
/// nearest rank): zero for a fleet that came back in one burst, and robust to a few
/// stragglers or a short stall of whoever measures.
pub fn middle_spread(times: &[Duration]) -> Duration {
    if times.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let at = |p: usize| sorted[(sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1];
    at(90) - at(10)
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

    /// When each of `fleet` agents, all disconnected at t = 0, first retries at or after
    /// `outage` (the hub is back), measured from `outage`; `delay(backoff)` gives each
    /// successive wait.
    fn reconnect_times(
        fleet: usize,
        outage: Duration,
        mut delay: impl FnMut(&mut Backoff) -> Duration,
    ) -> Vec<Duration> {
        (0..fleet)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
                let mut t = Duration::ZERO;
                // Bounded: the cap (8 s) passes any outage used here within 20 attempts.
                for _ in 0..20 {
                    t += delay(&mut b);
                    if t >= outage {
                        break;
                    }
                }
                t.saturating_sub(outage)
            })
            .collect()
    }

    /// The properties `tests/reconnect_storm_spreads_out.rs` (crate `palisade`) checks
    /// on a real fleet, here on the schedule alone: with full jitter no second holds
    /// more than 2/3 of 300 reconnections (about 0.35–0.45 is typical) and the middle
    /// 80 % of them take at least 2 s; without jitter (every agent waiting exactly the
    /// ceiling) all of them arrive in the same instant, and both checks fail.
    #[test]
    fn jitter_spreads_a_fleet_and_its_absence_is_caught() {
        let window = Duration::from_secs(1);
        let outage = Duration::from_millis(2500);
        let jittered = reconnect_times(300, outage, Backoff::next_delay);
        let share = busiest_window_share(&jittered, window);
        assert!(share <= 0.6, "jittered schedule bunched: {share:.2}");
        let spread = middle_spread(&jittered);
        assert!(spread >= Duration::from_secs(2), "not spread: {spread:?}");
        let last = jittered.iter().max().copied().unwrap_or_default();
        assert!(last <= Duration::from_secs(8), "beyond the cap: {last:?}");

        let lockstep = reconnect_times(300, outage, |b| {
            let ceiling = b.ceiling(b.attempt());
            let _ = b.next_delay();
            ceiling
        });
        assert_eq!(busiest_window_share(&lockstep, window), 1.0);
        assert_eq!(middle_spread(&lockstep), Duration::ZERO);
    }

    #[test]
    fn busiest_window_share_counts_the_densest_interval() {
        let ms =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|m| Duration::from_millis(*m)).collect() };
        let w = Duration::from_millis(100);
        assert_eq!(busiest_window_share(&[], w), 0.0);
        assert_eq!(busiest_window_share(&ms(&[5, 5, 5, 5]), w), 1.0);
        assert_eq!(busiest_window_share(&ms(&[0, 200, 400, 600]), w), 0.25);
        assert_eq!(busiest_window_share(&ms(&[900, 0, 50, 100, 500]), w), 0.6);
        let ten: Vec<u64> = (0..10).map(|i| i * 100).collect();
        assert_eq!(middle_spread(&ms(&ten)), Duration::from_millis(800));
        assert_eq!(middle_spread(&[]), Duration::ZERO);
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
