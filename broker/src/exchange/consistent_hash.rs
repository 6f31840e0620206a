//! `x-consistent-hash` exchange, as RabbitMQ's `rabbitmq_consistent_hash_exchange` plugin: each
//! message goes to exactly one bound destination, picked by a hash of its routing key (or of the
//! header named by the `hash-header` argument, or of the property named by `hash-property`:
//! `message_id`, `correlation_id` or `timestamp`). A binding's key is its weight: a destination
//! bound with `"2"` gets twice the share of one bound with `"1"`.
//!
//! Where Warren differs from the plugin: the plugin numbers buckets in the order bindings were
//! made and picks one by jump consistent hashing, so a key's queue depends on that order, which
//! the plugin does not keep across a restart, and removing a binding renumbers every later
//! bucket. Warren uses weighted rendezvous hashing (highest random weight): each destination
//! scores `weight / -ln(u)` where `u` is a hash of (key, destination name) mapped to (0, 1), and
//! the highest score wins. So a key's destination depends only on the set of bindings: it is the
//! same after a restart, adding a destination moves only the keys the new one wins (about
//! `w / total` of them), and removing one moves only its own keys. The hash (FNV-1a, then
//! MurmurHash3's 64-bit finaliser) is fixed and documented, so it does not change between
//! versions either. Routing costs one hash of the key and one multiply-xor mix per destination.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::{Destination, Envelope, Router};
use crate::error::{AmqpError, AmqpResult};

/// The message properties `hash-property` may name (RabbitMQ's list).
const PROPERTIES: [&str; 3] = ["correlation_id", "message_id", "timestamp"];

/// What a message is hashed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HashOn {
    RoutingKey,
    Header(String),
    Property(Property),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Property {
    MessageId,
    CorrelationId,
    Timestamp,
}

fn string_arg(args: &FieldTable, name: &str) -> AmqpResult<Option<String>> {
    match args.inner().get(name) {
        None => Ok(None),
        Some(AMQPValue::LongString(s)) => Ok(Some(String::from_utf8_lossy(s.as_bytes()).into())),
        Some(AMQPValue::ShortString(s)) => Ok(Some(s.as_str().to_owned())),
        Some(other) => Err(AmqpError::precondition(format_args!(
            "{name} must be a string, not {other:?}"
        ))),
    }
}

impl HashOn {
    /// Reads `hash-header` and `hash-property` from an exchange's arguments, with the plugin's
    /// errors (406) for an unknown property or both at once.
    pub(super) fn parse(args: &FieldTable) -> AmqpResult<HashOn> {
        let header = string_arg(args, "hash-header")?;
        let property = string_arg(args, "hash-property")?;
        match (header, property) {
            (None, None) => Ok(HashOn::RoutingKey),
            (Some(h), None) => Ok(HashOn::Header(h)),
            (None, Some(p)) => match p.as_str() {
                "message_id" => Ok(HashOn::Property(Property::MessageId)),
                "correlation_id" => Ok(HashOn::Property(Property::CorrelationId)),
                "timestamp" => Ok(HashOn::Property(Property::Timestamp)),
                other => Err(AmqpError::precondition(format_args!(
                    "Unsupported property: {other} (supported: {})",
                    PROPERTIES.join(", ")
                ))),
            },
            (Some(_), Some(_)) => Err(AmqpError::precondition(
                "hash-header and hash-property are mutually exclusive",
            )),
        }
    }
}

/// FNV-1a (64-bit) of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The hash of a key's bytes.
pub fn key_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(bytes))
}

/// The hash of a message that lacks the header or property it is hashed on: all such
/// messages go to one destination, as with the plugin (which hashes `undefined`).
const ABSENT: u64 = 0x5bd1_e995_7a3c_9e41;

/// A destination's seed: the hash of its kind and name.
fn seed(dest: &Destination) -> u64 {
    let (tag, name): (&[u8], &str) = match dest {
        Destination::Queue(q) => (b"queue:", q.name()),
        Destination::Exchange(x) => (b"exchange:", x),
    };
    let mut bytes = Vec::with_capacity(tag.len() + name.len());
    bytes.extend_from_slice(tag);
    bytes.extend_from_slice(name.as_bytes());
    key_hash(&bytes)
}

/// A binding key as a weight: a positive integer, as the plugin requires.
fn weight(key: &str) -> AmqpResult<u64> {
    match key.trim().parse::<i64>() {
        Ok(w) if w < 1 => Err(AmqpError::precondition(
            "The binding key must be greater than 0",
        )),
        Ok(w) if w > i64::from(u32::MAX) => Err(AmqpError::precondition(format_args!(
            "The binding key must be at most {}",
            u32::MAX
        ))),
        Ok(w) => Ok(w as u64),
        Err(_) => Err(AmqpError::precondition(format_args!(
            "The binding key must be an integer: {key:?}"
        ))),
    }
}

struct Member {
    dest: Destination,
    seed: u64,
    /// The sum of the weights of its bindings.
    weight: u64,
}

/// The bound destinations with their weights.
pub struct ConsistentHashRouter {
    on: HashOn,
    members: Vec<Member>,
    /// Every weight is the same: the highest hash wins, no logarithm needed.
    uniform: bool,
}

impl ConsistentHashRouter {
    /// A router for an exchange declared with these arguments (checked at declare; arguments
    /// that fail the check, from an older definition, hash on the routing key).
    pub fn new(arguments: &FieldTable) -> Self {
        ConsistentHashRouter {
            on: HashOn::parse(arguments).unwrap_or(HashOn::RoutingKey),
            members: Vec::new(),
            uniform: true,
        }
    }

    fn reweigh(&mut self) {
        self.uniform = self.members.windows(2).all(|w| w[0].weight == w[1].weight);
    }

    /// The hash of what a message is routed on.
    fn message_hash(&self, m: &Envelope<'_>) -> u64 {
        match &self.on {
            HashOn::RoutingKey => key_hash(m.routing_key.as_bytes()),
            HashOn::Header(name) => match m.headers.and_then(|h| h.inner().get(name.as_str())) {
                Some(v) => value_hash(v),
                None => ABSENT,
            },
            HashOn::Property(p) => property_hash(m.raw_properties, *p).unwrap_or(ABSENT),
        }
    }

    /// The destination a hash goes to: the highest weighted rendezvous score.
    fn pick(&self, hash: u64) -> Option<&Destination> {
        if self.uniform {
            return self
                .members
                .iter()
                .max_by_key(|m| fmix64(hash ^ m.seed))
                .map(|m| &m.dest);
        }
        let mut best: Option<(f64, &Destination)> = None;
        for m in &self.members {
            let h = fmix64(hash ^ m.seed);
            // Uniform in (0, 1): the top 53 bits, offset by half a step.
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = m.weight as f64 / -u.ln();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, &m.dest));
            }
        }
        best.map(|(_, d)| d)
    }
}

/// The hash of a header's value (see [`crate::util::field_bytes`]).
fn value_hash(v: &AMQPValue) -> u64 {
    key_hash(&crate::util::field_bytes(v))
}

/// The hash of a message property (`None`: the message does not have it).
fn property_hash(raw: &[u8], p: Property) -> Option<u64> {
    crate::protocol::nesting::check_properties(raw).ok()?;
    let (_, props) = amq_protocol::protocol::basic::parse_properties(raw).ok()?;
    match p {
        Property::MessageId => props
            .message_id()
            .as_ref()
            .map(|s| key_hash(s.as_str().as_bytes())),
        Property::CorrelationId => props
            .correlation_id()
            .as_ref()
            .map(|s| key_hash(s.as_str().as_bytes())),
        Property::Timestamp => props
            .timestamp()
            .map(|t| key_hash(t.to_string().as_bytes())),
    }
}

impl Router for ConsistentHashRouter {
    fn validate(&self, key: &str, _args: &FieldTable) -> AmqpResult<()> {
        weight(key).map(|_| ())
    }

    fn bind(&mut self, dest: &Destination, key: &str, _args: &FieldTable) {
        let w = weight(key).unwrap_or(1);
        match self.members.iter_mut().find(|m| m.dest == *dest) {
            Some(m) => m.weight += w,
            None => self.members.push(Member {
                dest: dest.clone(),
                seed: seed(dest),
                weight: w,
            }),
        }
        self.reweigh();
    }

    fn unbind(&mut self, dest: &Destination, key: &str, _args: &FieldTable) {
        let w = weight(key).unwrap_or(1);
        if let Some(pos) = self.members.iter().position(|m| m.dest == *dest) {
            let m = &mut self.members[pos];
            m.weight = m.weight.saturating_sub(w);
            if m.weight == 0 {
                self.members.swap_remove(pos);
            }
        }
        self.reweigh();
    }

    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        self.route_envelope(
            &Envelope {
                routing_key,
                headers,
                raw_properties: &[],
            },
            out,
        );
    }

    fn route_envelope(&self, message: &Envelope<'_>, out: &mut Vec<Destination>) {
        if let Some(d) = self.pick(self.message_hash(message)) {
            out.push(d.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueHandle;

    fn queue(name: &str) -> Destination {
        Destination::Queue(QueueHandle::detached(name))
    }

    fn router(queues: &[(&str, &str)]) -> ConsistentHashRouter {
        let mut r = ConsistentHashRouter::new(&FieldTable::default());
        for (q, w) in queues {
            r.bind(&queue(q), w, &FieldTable::default());
        }
        r
    }

    fn route(r: &ConsistentHashRouter, key: &str) -> String {
        let mut out = Vec::new();
        r.route(key, None, &mut out);
        assert_eq!(out.len(), 1);
        out[0].name().to_string()
    }

    #[test]
    fn the_hash_is_fixed() {
        // These values are part of the routing contract: a key must land on the same queue
        // after an upgrade.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"order-1"), fmix64(fnv1a(b"order-1")));
    }

    #[test]
    fn equal_weights_spread_evenly_and_an_added_queue_takes_only_its_share() {
        let names: Vec<String> = (0..11).map(|i| format!("q{i}")).collect();
        let ten: Vec<(&str, &str)> = names[..10].iter().map(|n| (n.as_str(), "1")).collect();
        let r10 = router(&ten);
        let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| route(&r10, k)).collect();
        let mut counts = std::collections::HashMap::new();
        for q in &before {
            *counts.entry(q.clone()).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 10);
        for (q, n) in &counts {
            assert!((9_500..=10_500).contains(n), "{q} got {n} of 100000");
        }
        let mut eleven = ten.clone();
        eleven.push((names[10].as_str(), "1"));
        let r11 = router(&eleven);
        let mut moved = 0;
        for (k, was) in keys.iter().zip(&before) {
            let now = route(&r11, k);
            if now != *was {
                assert_eq!(now, "q10", "{k} moved from {was} to {now}");
                moved += 1;
            }
        }
        assert!((8_600..=9_600).contains(&moved), "{moved} keys moved");
    }

    #[test]
    fn weights_shift_the_share() {
        let r = router(&[("a", "1"), ("b", "3")]);
        let b = (0..40_000)
            .filter(|i| route(&r, &format!("k{i}")) == "b")
            .count();
        assert!((29_000..=31_000).contains(&b), "b got {b} of 40000");
    }

    #[test]
    fn binding_keys_and_arguments_are_checked_as_the_plugin_does() {
        let r = router(&[]);
        let t = FieldTable::default();
        assert!(r.validate("3", &t).is_ok());
        for bad in ["0", "-1", "abc", "", "4294967296"] {
            assert_eq!(r.validate(bad, &t).unwrap_err().code.code(), 406, "{bad}");
        }
        let mut args = FieldTable::default();
        args.insert("hash-header".into(), AMQPValue::LongString("h".into()));
        assert_eq!(HashOn::parse(&args).unwrap(), HashOn::Header("h".into()));
        args.insert(
            "hash-property".into(),
            AMQPValue::LongString("message_id".into()),
        );
        assert_eq!(HashOn::parse(&args).unwrap_err().code.code(), 406);
        let mut args = FieldTable::default();
        args.insert(
            "hash-property".into(),
            AMQPValue::LongString("app_id".into()),
        );
        assert_eq!(HashOn::parse(&args).unwrap_err().code.code(), 406);
    }

    #[test]
    fn messages_without_the_hashed_header_all_go_to_one_queue() {
        let mut args = FieldTable::default();
        args.insert("hash-header".into(), AMQPValue::LongString("h".into()));
        let mut r = ConsistentHashRouter::new(&args);
        for q in ["a", "b", "c", "d"] {
            r.bind(&queue(q), "1", &FieldTable::default());
        }
        let dest = |headers: Option<&FieldTable>, key: &str| {
            let mut out = Vec::new();
            r.route(key, headers, &mut out);
            out[0].name().to_string()
        };
        let none: std::collections::HashSet<String> =
            (0..50).map(|i| dest(None, &format!("k{i}"))).collect();
        assert_eq!(none.len(), 1, "the routing key was hashed instead");
        let spread: std::collections::HashSet<String> = (0..50)
            .map(|i| {
                let mut h = FieldTable::default();
                h.insert("h".into(), AMQPValue::LongLongInt(i));
                dest(Some(&h), "same")
            })
            .collect();
        assert!(spread.len() > 1);
    }

    #[test]
    fn removing_a_queue_moves_only_its_keys() {
        let mut r = router(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let before: Vec<String> = keys.iter().map(|k| route(&r, k)).collect();
        r.unbind(&queue("b"), "1", &FieldTable::default());
        for (k, was) in keys.iter().zip(&before) {
            if was != "b" {
                assert_eq!(&route(&r, k), was);
            }
        }
    }
}
