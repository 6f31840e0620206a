//! The byte formats of the message journal: message records, the chunks that hold them, ack
//! records, and the keys they are stored under (see [`super::queue_log`] for how they are
//! used). Pure functions, no I/O: the journal and recovery share them.

use crate::message::Message;
use crate::protocol::scan_properties;
use crate::store::StoredMessage;

/// What a stored record says about its message besides the message itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// When it expires, in Unix milliseconds (TTLs keep counting across restarts).
    pub expires_unix_ms: Option<u64>,
    /// Failed deliveries so far, as the broker counted them.
    pub delivery_count: u32,
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RecordMeta {
    /// The meta of a message held in memory.
    pub fn of(msg: &StoredMessage) -> Self {
        let now = std::time::Instant::now();
        RecordMeta {
            expires_unix_ms: msg
                .expires_at
                .map(|t| unix_ms_now() + t.saturating_duration_since(now).as_millis() as u64),
            delivery_count: msg.delivery_count,
        }
    }

    /// The expiry as an instant of this process (in the past if it already passed).
    pub fn expires_at(&self) -> Option<std::time::Instant> {
        self.expires_unix_ms.map(|ms| {
            let now_ms = unix_ms_now();
            let now = std::time::Instant::now();
            if ms > now_ms {
                now + std::time::Duration::from_millis(ms - now_ms)
            } else {
                now.checked_sub(std::time::Duration::from_millis(now_ms - ms))
                    .unwrap_or(now)
            }
        })
    }
}

/// Encodes a message for `msgs`: version 3, flags (bit 0: the x-death history is the broker's),
/// expiry, delivery count, exchange, routing key, properties as the publisher encoded them,
/// body.
pub fn encode_message(msg: &StoredMessage) -> Vec<u8> {
    let m = &msg.message;
    let meta = RecordMeta::of(msg);
    let (x, rk) = (m.exchange_bytes(), m.routing_key_bytes());
    let mut v =
        Vec::with_capacity(22 + x.len() + rk.len() + m.raw_properties().len() + m.body().len());
    v.push(3);
    v.push(u8::from(m.death.is_some()));
    v.extend_from_slice(&meta.expires_unix_ms.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(&meta.delivery_count.to_be_bytes());
    v.push(x.len() as u8);
    v.extend_from_slice(x);
    v.push(rk.len() as u8);
    v.extend_from_slice(rk);
    v.extend_from_slice(&(m.raw_properties().len() as u32).to_be_bytes());
    v.extend_from_slice(m.raw_properties());
    v.extend_from_slice(m.body());
    v
}

/// The meta of an encoded record, without decoding the message.
pub fn record_meta(v: &[u8]) -> RecordMeta {
    match v.first() {
        Some(3) if v.len() >= 14 => {
            let exp = u64::from_be_bytes(v[2..10].try_into().unwrap_or_default());
            RecordMeta {
                expires_unix_ms: (exp != 0).then_some(exp),
                delivery_count: u32::from_be_bytes(v[10..14].try_into().unwrap_or_default()),
            }
        }
        _ => RecordMeta::default(),
    }
}

/// Decodes what `encode_message` wrote; `None` if it is not a message.
pub fn decode_message(v: &[u8]) -> Option<Message> {
    let (trusted_death, mut at) = match v.first() {
        Some(1) => (false, 1),
        Some(2) => (true, 1),
        Some(3) => (v.get(1)? & 1 == 1, 14),
        _ => return None,
    };
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = v.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let xl = take(1)?[0] as usize;
    let x = take(xl)?;
    let rl = take(1)?[0] as usize;
    let rk = take(rl)?;
    let pl = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
    let raw_properties = take(pl)?;
    let body = v.get(at..)?;
    let props = scan_properties(raw_properties)?;
    let mut m = Message::from_slices(
        x,
        rk,
        props.delivery_mode == Some(2),
        props.priority.unwrap_or(0),
        props
            .expiration
            .as_ref()
            .and_then(|e| e.as_str().parse().ok()),
        raw_properties,
        body,
    );
    // Only the broker writes the store, so a stored x-death history is the broker's own.
    if trusted_death {
        m.restore_death();
    }
    Some(m)
}

pub const KIND_CHUNK: u8 = 0;
pub const KIND_ACKS: u8 = 1;
pub const KIND_OVERRIDE: u8 = 2;
pub const CHUNK_FORMAT: u8 = 4;
const ACKS_FORMAT: u8 = 1;

/// The key of record `n` of kind `kind` of `queue`.
pub fn log_key(queue: u64, kind: u8, n: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k[8] = kind;
    k[9..].copy_from_slice(&n.to_be_bytes());
    k
}

pub fn key_n(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(9..17)?.try_into().ok()?))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// An ack record listing `seqs` (sorted).
pub fn encode_acks(seqs: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + seqs.len() * 2);
    v.push(ACKS_FORMAT);
    let mut prev = 0;
    for &s in seqs {
        put_varint(&mut v, s - prev);
        prev = s;
    }
    v
}

pub fn decode_acks(v: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    if v.first() != Some(&ACKS_FORMAT) {
        return out;
    }
    let (mut at, mut prev) = (1, 0u64);
    while let Some(d) = get_varint(v, &mut at) {
        prev += d;
        out.push(prev);
    }
    out
}

/// The messages of a chunk: (seq, record).
pub fn chunk_entries(v: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut at = usize::from(v.first() == Some(&CHUNK_FORMAT));
    let valid = at == 1;
    std::iter::from_fn(move || {
        if !valid {
            return None;
        }
        let seq = u64::from_be_bytes(v.get(at..at + 8)?.try_into().ok()?);
        let len = u32::from_be_bytes(v.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let rec = v.get(at + 12..at + 12 + len)?;
        at += 12 + len;
        Some((seq, rec))
    })
}
