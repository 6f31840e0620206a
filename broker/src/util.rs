//! Small helpers with no better home.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A random-looking token of `len` URL-safe characters, for server-named queues (`amq.gen-…`)
/// and consumer tags (`amq.ctag-…`). Unique per process thanks to a counter mixed into the
/// randomly keyed hash; not meant to be secret.
pub fn random_token(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut bits = h.finish();
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(bits & 63) as usize] as char);
            bits >>= 6;
        }
    }
    out
}

/// A header value as bytes, for hashing and comparing ids: strings by their bytes, numbers and
/// timestamps by their decimal text, booleans as `true`/`false`, anything else by its debug
/// text.
pub fn field_bytes(v: &amq_protocol::types::AMQPValue) -> std::borrow::Cow<'_, [u8]> {
    use amq_protocol::types::AMQPValue as V;
    use std::borrow::Cow;
    let text = match v {
        V::LongString(s) => return Cow::Borrowed(s.as_bytes()),
        V::ShortString(s) => return Cow::Borrowed(s.as_str().as_bytes()),
        V::Boolean(b) => return Cow::Borrowed(if *b { b"true" } else { b"false" }),
        V::ShortShortInt(n) => n.to_string(),
        V::ShortShortUInt(n) => n.to_string(),
        V::ShortInt(n) => n.to_string(),
        V::ShortUInt(n) => n.to_string(),
        V::LongInt(n) => n.to_string(),
        V::LongUInt(n) => n.to_string(),
        V::LongLongInt(n) => n.to_string(),
        V::Timestamp(n) => n.to_string(),
        other => format!("{other:?}"),
    };
    Cow::Owned(text.into_bytes())
}
