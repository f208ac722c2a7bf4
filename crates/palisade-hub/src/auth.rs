//! Authentication policy shared by console and API: bounded Argon2id work off the async
//! threads, per-source attempt limits, and per-account lockout with increasing delays
//! (AUTH-7, AUTH-9).

use crate::config::Limits;
use crate::db::sessions::SessionTimes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use palisade_crypto::password::{self, Password};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Consecutive failures allowed before delays start.
pub const FREE_FAILURES: i64 = 4;
/// Longest delay between attempts once delays apply (seconds).
pub const MAX_DELAY_SECS: i64 = 15 * 60;
/// After this many consecutive failures the account stays locked until its owner uses
/// an e-mailed recovery link or an administrator unlocks it. Below AUTH-7's ceiling of 100.
pub const HARD_LOCK_AT: i64 = 50;

/// How long the account is locked after `failures` consecutive failures, and whether
/// the lock is hard (needs recovery or an administrator).
pub fn lock_for(failures: i64) -> (i64, bool) {
    if failures >= HARD_LOCK_AT {
        return (0, true);
    }
    if failures <= FREE_FAILURES {
        return (0, false);
    }
    let exponent = (failures - FREE_FAILURES).min(20) as u32;
    ((1_i64 << exponent).min(MAX_DELAY_SECS), false)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the hub is busy hashing passwords")]
    Busy,
    #[error(transparent)]
    Internal(#[from] crate::error::Error),
}

/// Shared authentication machinery; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    hashing: Arc<Semaphore>,
    queue_timeout: Duration,
    per_source: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    pub session_times: SessionTimes,
}

impl Auth {
    pub fn new(limits: &Limits) -> Self {
        let per_minute =
            NonZeroU32::new(limits.auth_attempts_per_minute_per_source).unwrap_or(NonZeroU32::MIN);
        Self {
            hashing: Arc::new(Semaphore::new(limits.hashing_concurrency.max(1))),
            queue_timeout: Duration::from_secs(limits.hashing_queue_timeout_secs),
            per_source: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            session_times: SessionTimes {
                idle_secs: limits.session_idle_minutes * 60,
                absolute_secs: limits.session_absolute_hours * 3600,
            },
        }
    }

    /// Count one authentication attempt from `source`; `Err(seconds)` when over the limit.
    /// IPv6 sources are grouped by /64, since one host usually holds a whole /64.
    pub fn attempt_from(&self, source: IpAddr) -> Result<(), u64> {
        let key = match source {
            IpAddr::V6(v6) => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
            v4 => v4,
        };
        self.per_source.check_key(&key).map_err(|not_until| {
            let clock = governor::clock::DefaultClock::default();
            not_until
                .wait_time_from(governor::clock::Clock::now(&clock))
                .as_secs()
                .max(1)
        })
    }

    /// Forget idle per-source counters (bounded memory under address-spraying floods).
    pub fn forget_idle_sources(&self) {
        self.per_source.retain_recent();
        self.per_source.shrink_to_fit();
    }

    async fn with_hashing_slot<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = tokio::time::timeout(self.queue_timeout, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| AuthError::Busy)?
            .map_err(|_| AuthError::Busy)?;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AuthError::Internal(crate::error::Error::Task(e.to_string())))?;
        Ok(result)
    }

    /// Hash a new password (Argon2id), bounded and off the async threads.
    pub async fn hash(&self, password: Password) -> Result<String, AuthError> {
        self.with_hashing_slot(move || password::hash(&password))
            .await?
            .map_err(|e| AuthError::Internal(e.into()))
    }

    /// Verify a password against a stored hash, or against a dummy hash when there is
    /// no account (so both cost the same time).
    pub async fn verify(&self, password: Password, phc: Option<String>) -> Result<bool, AuthError> {
        let known = phc.is_some();
        let phc = phc.unwrap_or_else(|| password::dummy_hash().to_owned());
        let ok = self
            .with_hashing_slot(move || password::verify(&password, &phc).unwrap_or(false))
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth7_delays_grow_and_hard_lock_comes_before_100() {
        assert_eq!(lock_for(1), (0, false));
        assert_eq!(lock_for(FREE_FAILURES), (0, false));
        assert_eq!(lock_for(FREE_FAILURES + 1), (2, false));
        assert_eq!(lock_for(FREE_FAILURES + 2), (4, false));
        assert_eq!(lock_for(30), (MAX_DELAY_SECS, false));
        assert_eq!(lock_for(HARD_LOCK_AT), (0, true));
        const { assert!(HARD_LOCK_AT < 100) };
    }

    #[tokio::test]
    async fn per_source_limit_is_per_address() {
        let limits = Limits {
            auth_attempts_per_minute_per_source: 3,
            ..Limits::default()
        };
        let auth = Auth::new(&limits);
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "127.0.0.3".parse().expect("ip");
        for _ in 0..3 {
            assert!(auth.attempt_from(a).is_ok());
        }
        assert!(auth.attempt_from(a).is_err());
        assert!(auth.attempt_from(b).is_ok());
    }
}
