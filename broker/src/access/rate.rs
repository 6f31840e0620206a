//! Publish rate limits (the design notes' token bucket): per vhost and per user, in messages
//! and in body bytes per second. A connection charges what it published in a read batch to
//! the buckets of its vhost and its user and, when one runs into debt, stops reading its
//! socket until the debt is paid: back-pressure through TCP, never a dropped message.
//!
//! The limits are set like RabbitMQ's vhost and user limits (`/api/vhost-limits`,
//! `/api/user-limits`, `warren limits set`, the config file); the names are Warren's own,
//! RabbitMQ has no rate limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages a second published to a vhost, or by a user.
pub const MAX_PUBLISH_RATE: &str = "max-publish-rate";
/// Body bytes a second published to a vhost, or by a user.
pub const MAX_PUBLISH_BYTES_RATE: &str = "max-publish-bytes-rate";

/// A token bucket: `rate` tokens a second, at most one second's worth saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    /// Tokens (negative: debt) as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` a second (at least 1).
    pub fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1);
        TokenBucket {
            rate,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// The refill rate, per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `n` tokens (the bucket may go into debt) and says how long the taker must wait
    /// before it takes more: zero while the bucket is not in debt.
    pub fn take(&self, n: u64) -> Duration {
        let rate = self.rate as f64;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, at) = *s;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(rate) - n as f64;
        *s = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / rate)
        }
    }
}

/// The publish limits of one vhost or one user, shared by all of its connections.
#[derive(Debug)]
pub struct PublishLimits {
    pub messages: Option<TokenBucket>,
    pub bytes: Option<TokenBucket>,
    /// Times a connection stopped reading because of these limits.
    pub throttles: AtomicU64,
    /// Microseconds connections spent not reading because of them.
    pub throttled_micros: AtomicU64,
}

impl PublishLimits {
    /// The limits a vhost's or a user's limits set (`None` when neither rate is).
    pub fn from_limits(messages: Option<u64>, bytes: Option<u64>) -> Option<PublishLimits> {
        (messages.is_some() || bytes.is_some()).then(|| PublishLimits {
            messages: messages.map(TokenBucket::new),
            bytes: bytes.map(TokenBucket::new),
            throttles: AtomicU64::new(0),
            throttled_micros: AtomicU64::new(0),
        })
    }

    fn rates(&self) -> (Option<u64>, Option<u64>) {
        (
            self.messages.as_ref().map(TokenBucket::rate),
            self.bytes.as_ref().map(TokenBucket::rate),
        )
    }

    /// Charges `messages` and `bytes`; how long to stop reading (zero: not at all).
    pub fn take(&self, messages: u64, bytes: u64) -> Duration {
        let m = self
            .messages
            .as_ref()
            .map_or(Duration::ZERO, |b| b.take(messages));
        let b = self
            .bytes
            .as_ref()
            .map_or(Duration::ZERO, |b| b.take(bytes));
        let wait = m.max(b);
        if !wait.is_zero() {
            self.throttles.fetch_add(1, Relaxed);
            self.throttled_micros
                .fetch_add(wait.as_micros() as u64, Relaxed);
        }
        wait
    }
}

/// Whose limits: a vhost's or a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Vhost,
    User,
}

impl Scope {
    /// The label value in the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Vhost => "vhost",
            Scope::User => "user",
        }
    }
}

/// The buckets of every vhost and user that has rate limits. A bucket is kept while its
/// rates stay the same, so that its connections share one budget across reconnects and
/// limit changes elsewhere.
#[derive(Debug, Default)]
pub struct Buckets {
    map: Mutex<HashMap<(Scope, String), Arc<PublishLimits>>>,
}

impl Buckets {
    /// The bucket of `name` for these rates (`None` when it has none; a bucket kept from
    /// before is dropped).
    pub fn get(
        &self,
        scope: Scope,
        name: &str,
        messages: Option<u64>,
        bytes: Option<u64>,
    ) -> Option<Arc<PublishLimits>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = (scope, name.to_owned());
        if messages.is_none() && bytes.is_none() {
            map.remove(&key);
            return None;
        }
        if let Some(b) = map.get(&key) {
            if b.rates() == (messages, bytes) {
                return Some(b.clone());
            }
        }
        let b = Arc::new(PublishLimits::from_limits(messages, bytes)?);
        map.insert(key, b.clone());
        Some(b)
    }

    /// Every bucket, for the metrics, in a stable order.
    pub fn all(&self) -> Vec<(Scope, String, Arc<PublishLimits>)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map
            .iter()
            .map(|((s, n), b)| (*s, n.clone(), b.clone()))
            .collect();
        v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_charges_debt() {
        let b = TokenBucket::new(100);
        assert_eq!(b.take(100), Duration::ZERO);
        let wait = b.take(50);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn limits_take_the_longer_wait_and_count_it() {
        assert!(PublishLimits::from_limits(None, None).is_none());
        let l = PublishLimits::from_limits(None, Some(1000)).unwrap();
        assert!(l.messages.is_none());
        assert_eq!(l.take(1_000_000, 500), Duration::ZERO);
        assert!(l.take(0, 1500) >= Duration::from_millis(900));
        assert_eq!(l.throttles.load(Relaxed), 1);
        assert!(l.throttled_micros.load(Relaxed) >= 900_000);
    }

    #[test]
    fn buckets_are_shared_until_their_rates_change() {
        let b = Buckets::default();
        let one = b.get(Scope::Vhost, "/", Some(10), None).unwrap();
        let same = b.get(Scope::Vhost, "/", Some(10), None).unwrap();
        assert!(Arc::ptr_eq(&one, &same));
        let changed = b.get(Scope::Vhost, "/", Some(20), None).unwrap();
        assert!(!Arc::ptr_eq(&one, &changed));
        assert!(b.get(Scope::User, "/", Some(10), None).is_some());
        assert_eq!(b.all().len(), 2);
        assert!(b.get(Scope::Vhost, "/", None, None).is_none());
        assert_eq!(b.all().len(), 1);
    }
}
