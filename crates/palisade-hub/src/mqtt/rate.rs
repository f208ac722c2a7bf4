//! Per-device publish rate (RES-2): a token bucket of `mqtt_publishes_per_minute`
//! tokens (a burst of one minute's worth, refilled continuously). The bucket belongs to
//! the device, not to the connection, so reconnecting — or opening a second connection
//! that replaces the first — does not refill it. A device's bucket is forgotten once it
//! is full again and no connection holds it (a full bucket is the same as none).

use crate::ids::DeviceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Sweep forgotten full buckets after this many new ones.
const SWEEP_EVERY: usize = 1024;

/// Tokens for messages; one taken per PUBLISH.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            tokens: capacity,
            capacity,
            per_second: capacity / 60.0,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
    }

    /// Take a token if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self) -> bool {
        self.refill(Instant::now());
        self.tokens >= self.capacity
    }
}

/// A device's bucket, shared by its connections.
pub type SharedBucket = Arc<Mutex<TokenBucket>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a few arithmetic steps; a panic in one leaves a usable
    // value behind.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Take a token from a shared bucket.
pub fn take(bucket: &SharedBucket) -> bool {
    lock(bucket).take()
}

/// The buckets of devices that are connected or were recently.
#[derive(Default)]
pub struct Budgets {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    buckets: HashMap<DeviceId, SharedBucket>,
    created: usize,
}

impl Budgets {
    /// The device's bucket (a full new one if it has none).
    pub fn bucket(&self, device: &DeviceId, per_minute: u32) -> SharedBucket {
        let mut inner = lock(&self.inner);
        if let Some(existing) = inner.buckets.get(device) {
            return existing.clone();
        }
        inner.created += 1;
        if inner.created.is_multiple_of(SWEEP_EVERY) {
            inner
                .buckets
                .retain(|_, b| Arc::strong_count(b) > 1 || !lock(b).is_full());
        }
        let bucket = Arc::new(Mutex::new(TokenBucket::new(per_minute)));
        inner.buckets.insert(device.clone(), bucket.clone());
        bucket
    }

    /// A connection is done with the device's bucket.
    pub fn release(&self, device: &DeviceId, bucket: SharedBucket) {
        drop(bucket);
        let mut inner = lock(&self.inner);
        if let Some(b) = inner.buckets.get(device)
            && Arc::strong_count(b) == 1
            && lock(b).is_full()
        {
            inner.buckets.remove(device);
        }
    }

    /// Devices with a bucket kept (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner).buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn res2_a_burst_of_a_minute_then_the_steady_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(60);
        b.last = start;
        for _ in 0..60 {
            assert!(b.take_at(start));
        }
        assert!(!b.take_at(start), "the minute's burst is spent");
        assert!(!b.take_at(start + Duration::from_millis(500)));
        assert!(
            b.take_at(start + Duration::from_millis(1600)),
            "one per second"
        );
        assert!(!b.take_at(start + Duration::from_millis(1700)));
    }

    #[test]
    fn res2_reconnecting_does_not_refill_the_bucket() {
        let budgets = Budgets::default();
        let device = DeviceId::generate();
        let first = budgets.bucket(&device, 3);
        for _ in 0..3 {
            assert!(take(&first));
        }
        // A second connection while the first is live shares the bucket.
        let second = budgets.bucket(&device, 3);
        assert!(!take(&second));
        budgets.release(&device, first);
        budgets.release(&device, second);
        // Reconnecting after both ended: still empty (kept because not full).
        let third = budgets.bucket(&device, 3);
        assert!(!take(&third));
        budgets.release(&device, third);
        assert_eq!(budgets.len(), 1);

        // A full bucket is forgotten when released.
        let other = DeviceId::generate();
        let b = budgets.bucket(&other, 3);
        budgets.release(&other, b);
        assert_eq!(budgets.len(), 1);
    }
}
