//! Message deduplication, with LavinMQ's arguments (which the `rabbitmq-message-deduplication`
//! plugin also uses): an exchange or a queue declared with `x-message-deduplication: true` drops a
//! message whose id it has seen, so a publisher that retries after losing a confirm does not
//! create a duplicate. The id is the value of the header named by `x-deduplication-header`
//! (default: the `x-deduplication-header` header itself); a message without it always passes.
//! `x-cache-size` bounds the entries kept (the oldest goes first); `x-cache-ttl` (milliseconds)
//! makes an entry expire, and a message's own `x-cache-ttl` header sets its entry's.
//!
//! A dropped duplicate is still confirmed: its first copy was accepted. Entries are keyed by the
//! first 128 bits of the id's SHA-256, so an entry costs the same whatever the id's length. The
//! cache of a durable exchange or queue is kept in the store's `dedup` tree, written before the
//! message is routed, so the group commit that confirms a persistent message also makes its id
//! durable: after a restart, or a crash, a retried publish is still recognised.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::store::kv::{Batch, Tree};

/// The header that holds a message's id unless `x-deduplication-header` names another.
pub const DEFAULT_HEADER: &str = "x-deduplication-header";
/// Entries kept when `x-cache-size` is not given (a bound, so a cache cannot grow without one).
pub const DEFAULT_CACHE_SIZE: u64 = 100_000;
/// The largest `x-cache-size` accepted: about 600 MB of entries.
pub const MAX_CACHE_SIZE: u64 = 10_000_000;

/// A deduplicating exchange's or queue's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupArgs {
    /// The header holding the id.
    pub header: String,
    /// Entries kept.
    pub cache_size: u64,
    /// How long an entry lasts, in milliseconds (`None`: until evicted).
    pub ttl_ms: Option<u64>,
}

fn int(v: &AMQPValue) -> Option<i128> {
    crate::queue::args::as_int(v)
}

impl DedupArgs {
    /// Reads the arguments of `what` (an exchange's or a queue's, for the error texts);
    /// `None` unless `x-message-deduplication` is true. Wrong types are 406.
    pub fn parse(args: &FieldTable, what: &dyn std::fmt::Display) -> AmqpResult<Option<Self>> {
        let bad = |arg: &str, want: &str| {
            AmqpError::precondition(format_args!("invalid arg '{arg}' for {what}: {want}"))
        };
        match args.inner().get("x-message-deduplication") {
            None | Some(AMQPValue::Boolean(false)) => return Ok(None),
            Some(AMQPValue::Boolean(true)) => {}
            Some(_) => return Err(bad("x-message-deduplication", "a boolean is expected")),
        }
        let header = match args.inner().get("x-deduplication-header") {
            None => DEFAULT_HEADER.to_owned(),
            Some(v) => crate::queue::args::as_str(v)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("x-deduplication-header", "a header name is expected"))?,
        };
        let cache_size = match args.inner().get("x-cache-size") {
            None => DEFAULT_CACHE_SIZE,
            Some(v) => match int(v) {
                Some(n) if (1..=i128::from(MAX_CACHE_SIZE)).contains(&n) => n as u64,
                _ => {
                    return Err(bad(
                        "x-cache-size",
                        &format!("an integer from 1 to {MAX_CACHE_SIZE} is expected"),
                    ))
                }
            },
        };
        let ttl_ms = match args.inner().get("x-cache-ttl") {
            None => None,
            Some(v) => match int(v) {
                Some(n) if n >= 0 && n <= i128::from(u64::MAX) => Some(n as u64),
                _ => {
                    return Err(bad(
                        "x-cache-ttl",
                        "a non-negative number of milliseconds is expected",
                    ))
                }
            },
        };
        Ok(Some(DedupArgs {
            header,
            cache_size,
            ttl_ms,
        }))
    }
}

/// Where a durable exchange's cache lives in the `dedup` tree.
pub fn exchange_prefix(vhost: &str, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(vhost.len() + name.len() + 3);
    p.push(b'x');
    p.extend_from_slice(vhost.as_bytes());
    p.push(0xff);
    p.extend_from_slice(name.as_bytes());
    p.push(0xff);
    p
}

/// Where a durable queue's cache lives (by the queue's store id).
pub fn queue_prefix(queue: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(9);
    p.push(b'q');
    p.extend_from_slice(&queue.to_be_bytes());
    p
}

/// A cache's place in the store.
pub struct Persist {
    pub tree: Arc<dyn Tree>,
    pub prefix: Vec<u8>,
}

impl Persist {
    fn key(&self, id: u128) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(&id.to_be_bytes());
        k
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Insertion order (entries are evicted oldest first).
    seq: u64,
    /// Unix milliseconds after which the entry no longer counts.
    expires: Option<u64>,
}

/// One exchange's or queue's cache of message ids.
pub struct Cache {
    args: DedupArgs,
    entries: HashMap<u128, Entry>,
    /// Ids in insertion order, with the `seq` they had then (a re-inserted id leaves a stale
    /// pair behind, skipped when it reaches the front).
    order: VecDeque<(u128, u64)>,
    next_seq: u64,
    persist: Option<Persist>,
    /// Duplicates dropped.
    duplicates: u64,
}

/// What a cache made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It has no id: it passes.
    Pass,
    /// Its id is new and now remembered (forget it if the message is refused after all).
    First(u128),
    /// Its id was seen: drop it.
    Duplicate,
}

/// A remembered id, held until its message is confirmed: a message refused after all (a
/// reject-publish queue full, a store that failed) must not make its retry a duplicate.
#[derive(Clone)]
pub struct Mark {
    pub cache: Arc<std::sync::Mutex<Cache>>,
    pub id: u128,
}

impl std::fmt::Debug for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mark({:x})", self.id)
    }
}

impl Mark {
    /// The message was refused: its id no longer counts.
    pub fn forget(&self) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(self.id);
    }
}

/// The first 128 bits of the SHA-256 of an id: fixed size, fixed forever (persisted caches
/// stay valid across versions).
fn id_key(id: &[u8]) -> u128 {
    let d = ring::digest::digest(&ring::digest::SHA256, id);
    u128::from_be_bytes(d.as_ref()[..16].try_into().expect("32-byte digest"))
}

impl Cache {
    /// A cache with `args`, loading the entries kept in `persist` (a durable exchange's or
    /// queue's).
    pub fn new(args: DedupArgs, persist: Option<Persist>) -> Cache {
        let mut cache = Cache {
            args,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            persist: None,
            duplicates: 0,
        };
        if let Some(p) = &persist {
            let mut loaded: Vec<(u64, u128, Option<u64>)> = Vec::new();
            for item in p.tree.scan_prefix(&p.prefix) {
                let Ok((k, v)) = item else { continue };
                let (Some(id), Some(seq), Some(exp)) = (
                    k.get(p.prefix.len()..)
                        .and_then(|b| b.try_into().ok())
                        .map(u128::from_be_bytes),
                    v.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes),
                    v.get(8..16)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_be_bytes),
                ) else {
                    continue;
                };
                loaded.push((seq, id, (exp != 0).then_some(exp)));
            }
            loaded.sort_unstable();
            for (seq, id, expires) in loaded {
                cache.entries.insert(id, Entry { seq, expires });
                cache.order.push_back((id, seq));
                cache.next_seq = seq + 1;
            }
        }
        cache.persist = persist;
        cache.evict();
        cache
    }

    /// The settings.
    pub fn args(&self) -> &DedupArgs {
        &self.args
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Duplicates dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Whether a message with these headers is a duplicate (to be dropped).
    pub fn is_duplicate(&mut self, headers: Option<&FieldTable>, now_ms: u64) -> bool {
        self.check(headers, now_ms) == Check::Duplicate
    }

    /// Checks a message with these headers: a new id is remembered. `now_ms` is Unix time in
    /// milliseconds.
    pub fn check(&mut self, headers: Option<&FieldTable>, now_ms: u64) -> Check {
        let Some(headers) = headers else {
            return Check::Pass;
        };
        let Some(v) = headers.inner().get(self.args.header.as_str()) else {
            return Check::Pass;
        };
        let id = id_key(&crate::util::field_bytes(v));
        if let Some(e) = self.entries.get(&id) {
            if e.expires.is_none_or(|t| now_ms < t) {
                self.duplicates += 1;
                return Check::Duplicate;
            }
        }
        let ttl = headers
            .inner()
            .get("x-cache-ttl")
            .and_then(int)
            .and_then(|n| u64::try_from(n).ok())
            .or(self.args.ttl_ms);
        let entry = Entry {
            seq: self.next_seq,
            expires: ttl.map(|t| now_ms.saturating_add(t).max(1)),
        };
        self.next_seq += 1;
        self.entries.insert(id, entry);
        self.order.push_back((id, entry.seq));
        if let Some(p) = &self.persist {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&entry.seq.to_be_bytes());
            v[8..].copy_from_slice(&entry.expires.unwrap_or(0).to_be_bytes());
            if let Err(e) = p.tree.insert(&p.key(id), &v) {
                tracing::error!(error = %e, "cannot store a deduplication id");
            }
        }
        self.evict();
        Check::First(id)
    }

    /// Forgets an id (its message was refused after all).
    pub fn forget(&mut self, id: u128) {
        if self.entries.remove(&id).is_some() {
            if let Some(p) = &self.persist {
                if let Err(e) = p.tree.remove(&p.key(id)) {
                    tracing::error!(error = %e, "cannot forget a deduplication id");
                }
            }
        }
    }

    /// Drops the oldest entries beyond the cache size, and stale order pairs once they are
    /// more than the entries.
    fn evict(&mut self) {
        let mut removed = Batch::default();
        while self.entries.len() as u64 > self.args.cache_size {
            let Some((id, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&id).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&id);
                if let Some(p) = &self.persist {
                    removed.remove(p.key(id));
                }
            }
        }
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(id, seq)| entries.get(id).is_some_and(|e| e.seq == *seq));
        }
        if let (Some(p), false) = (&self.persist, removed.is_empty()) {
            if let Err(e) = p.tree.apply(removed) {
                tracing::error!(error = %e, "cannot remove evicted deduplication ids");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(DEFAULT_HEADER.into(), AMQPValue::LongString(id.into()));
        t
    }

    fn args(size: u64, ttl: Option<u64>) -> DedupArgs {
        DedupArgs {
            header: DEFAULT_HEADER.into(),
            cache_size: size,
            ttl_ms: ttl,
        }
    }

    #[test]
    fn the_second_copy_is_a_duplicate_and_no_id_always_passes() {
        let mut c = Cache::new(args(10, None), None);
        assert!(!c.is_duplicate(Some(&headers("a")), 0));
        assert!(c.is_duplicate(Some(&headers("a")), 0));
        assert!(!c.is_duplicate(Some(&headers("b")), 0));
        assert!(!c.is_duplicate(None, 0));
        assert!(!c.is_duplicate(Some(&FieldTable::default()), 0));
        assert_eq!(c.duplicates(), 1);
    }

    #[test]
    fn the_oldest_entry_goes_first_when_the_cache_is_full() {
        let mut c = Cache::new(args(2, None), None);
        for id in ["a", "b", "c"] {
            assert!(!c.is_duplicate(Some(&headers(id)), 0));
        }
        assert_eq!(c.len(), 2);
        assert!(!c.is_duplicate(Some(&headers("a")), 0), "a was evicted");
        assert!(c.is_duplicate(Some(&headers("c")), 0));
    }

    #[test]
    fn a_forgotten_id_passes_again() {
        let mut c = Cache::new(args(10, None), None);
        let Check::First(id) = c.check(Some(&headers("a")), 0) else {
            panic!("a new id");
        };
        c.forget(id);
        assert_eq!(c.len(), 0);
        assert!(matches!(c.check(Some(&headers("a")), 0), Check::First(_)));
        assert_eq!(c.check(Some(&headers("a")), 0), Check::Duplicate);
    }

    #[test]
    fn entries_expire_after_their_ttl_and_a_header_sets_its_own() {
        let mut c = Cache::new(args(10, Some(100)), None);
        assert!(!c.is_duplicate(Some(&headers("a")), 1000));
        assert!(c.is_duplicate(Some(&headers("a")), 1099));
        assert!(!c.is_duplicate(Some(&headers("a")), 1100), "expired");
        let mut h = headers("b");
        h.insert("x-cache-ttl".into(), AMQPValue::LongLongInt(10_000));
        assert!(!c.is_duplicate(Some(&h), 1000));
        assert!(c.is_duplicate(Some(&headers("b")), 5000));
    }

    #[test]
    fn arguments_are_checked() {
        let t = |pairs: &[(&str, AMQPValue)]| {
            let mut t = FieldTable::default();
            for (k, v) in pairs {
                t.insert((*k).into(), v.clone());
            }
            t
        };
        let on = ("x-message-deduplication", AMQPValue::Boolean(true));
        assert_eq!(DedupArgs::parse(&t(&[]), &"q").unwrap(), None);
        let a = DedupArgs::parse(&t(std::slice::from_ref(&on)), &"q")
            .unwrap()
            .unwrap();
        assert_eq!(a.header, DEFAULT_HEADER);
        assert_eq!(a.cache_size, DEFAULT_CACHE_SIZE);
        for bad in [
            t(&[on.clone(), ("x-cache-size", AMQPValue::LongLongInt(0))]),
            t(&[on.clone(), ("x-cache-ttl", AMQPValue::LongLongInt(-1))]),
            t(&[(
                "x-message-deduplication",
                AMQPValue::LongString("yes".into()),
            )]),
            t(&[on, ("x-deduplication-header", AMQPValue::LongLongInt(1))]),
        ] {
            assert_eq!(DedupArgs::parse(&bad, &"q").unwrap_err().code.code(), 406);
        }
    }
}
