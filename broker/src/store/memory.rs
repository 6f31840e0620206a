//! The in-memory queue store: ready messages in sequence order, packed once the queue is deep
//! (see [`Ready`]).

use std::time::Instant;

use super::ready::{Ready, Slot};
use super::{QueueStore, StoredMessage};

/// Ready messages kept in RAM.
#[derive(Default)]
pub struct MemoryQueueStore {
    ready: Ready,
}

impl QueueStore for MemoryQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        self.ready.push(Slot::new(msg, false));
        false
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        self.ready.pop(|_| None)
    }

    fn requeue(&mut self, msg: StoredMessage) {
        self.ready.requeue(Slot::new(msg, false));
    }

    fn delivered(&mut self, _msg: &StoredMessage) {}

    fn settle(&mut self, _msg: &StoredMessage) {}

    fn purge(&mut self) -> usize {
        self.ready.drain(|_, _, _| {})
    }

    fn len(&self) -> usize {
        self.ready.len()
    }

    fn bytes(&self) -> u64 {
        self.ready.bytes()
    }

    fn persistent(&self) -> u64 {
        self.ready.persistent()
    }

    fn head_expiry(&self) -> Option<Instant> {
        self.ready.head_expiry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::protocol::encode_properties;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};
    use std::sync::Arc;
    use std::time::Duration;

    fn msg(seq: u64) -> StoredMessage {
        msg_with_body(seq, bytes::Bytes::from_static(b"abc"))
    }

    fn msg_with_body(seq: u64, body: bytes::Bytes) -> StoredMessage {
        StoredMessage::new(
            seq,
            Arc::new(Message::new(
                "".into(),
                "q".into(),
                &BasicProperties::default(),
                Default::default(),
                body,
            )),
            None,
        )
    }

    #[test]
    fn requeued_messages_return_to_their_place() {
        let mut s = MemoryQueueStore::default();
        for seq in [2, 4, 6] {
            s.push(msg(seq));
        }
        s.requeue(msg(5));
        s.requeue(msg(1));
        s.requeue(msg(3));
        assert_eq!(s.bytes(), 18);
        let order: Vec<u64> = std::iter::from_fn(|| s.pop().map(|m| m.seq)).collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 6]);
        assert_eq!(s.bytes(), 0);
    }

    /// A message with everything a packed record carries.
    fn rich(seq: u64, base: Instant) -> StoredMessage {
        let mut headers = FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString(format!("v{seq}").into()));
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_priority((seq % 3) as u8)
            .with_expiration("60000".into())
            .with_delivery_mode(if seq.is_multiple_of(2) { 2 } else { 1 });
        let mut m = Message::new(
            if seq.is_multiple_of(5) { "x" } else { "" }.into(),
            format!("rk{}", seq / 7).into(),
            &props,
            encode_properties(&props),
            bytes::Bytes::from(vec![seq as u8; (seq % 9000) as usize]),
        );
        m.expiration_ms = Some(60_000);
        let mut s = StoredMessage::new(
            seq,
            Arc::new(m),
            seq.is_multiple_of(4)
                .then(|| base + Duration::from_secs(seq)),
        );
        s.redelivered = seq.is_multiple_of(3);
        s.delivery_count = (seq % 4) as u32;
        s
    }

    #[test]
    fn a_deep_queue_packs_messages_and_gives_them_back_unchanged() {
        let mut s = MemoryQueueStore::default();
        let base = Instant::now();
        let seqs: Vec<u64> = (1..6000).filter(|n| n % 11 != 0).collect();
        for &seq in &seqs {
            s.push(rich(seq, base));
        }
        assert!(s.ready.packed_capacity() > 0, "a deep queue packs");
        assert_eq!(s.len(), seqs.len());
        let mut seen = Vec::new();
        s.ready.for_each(|seq, _, _| seen.push(seq));
        assert_eq!(seen, seqs);
        for &seq in &seqs {
            let want = rich(seq, base);
            let got = s.pop().expect("a message");
            assert_eq!(got.seq, seq);
            assert_eq!(got.redelivered, want.redelivered, "seq {seq}");
            assert_eq!(got.delivery_count, want.delivery_count);
            assert_eq!(got.expires_at.is_some(), want.expires_at.is_some());
            if let (Some(a), Some(b)) = (got.expires_at, want.expires_at) {
                assert!(a.max(b) - a.min(b) < Duration::from_micros(1), "seq {seq}");
            }
            let (g, w) = (&got.message, &want.message);
            assert_eq!(g.exchange(), w.exchange());
            assert_eq!(g.routing_key(), w.routing_key());
            assert_eq!(g.raw_properties(), w.raw_properties());
            assert_eq!(g.body(), w.body());
            assert_eq!(g.is_persistent(), w.is_persistent());
            assert_eq!(g.priority(), w.priority());
            assert_eq!(g.expiration_ms, w.expiration_ms);
        }
        assert!(s.pop().is_none());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_deep_queue_keeps_large_bodies_shared_instead_of_copying_them() {
        let mut s = MemoryQueueStore::default();
        let big = |seq: u64| {
            msg_with_body(
                seq,
                bytes::Bytes::from(vec![seq as u8; crate::message::INLINE_BODY + 1]),
            )
        };
        let kept: Vec<StoredMessage> = (1..=3000).map(big).collect();
        for m in &kept {
            s.push(m.clone());
        }
        for seq in 3001..=3100 {
            s.push(msg(seq));
        }
        assert!(s.ready.packed_capacity() > 0, "a deep queue packs");
        for want in &kept {
            let got = s.pop().expect("a message");
            assert_eq!(got.seq, want.seq);
            assert_eq!(
                got.message.body().as_ptr(),
                want.message.body().as_ptr(),
                "seq {}: the body came back copied",
                want.seq
            );
        }
        assert_eq!(
            s.pop().map(|m| m.seq),
            Some(3001),
            "small ones follow in order"
        );
        for seq in 3101..=6000 {
            s.push(big(seq));
        }
        assert_eq!(s.purge(), 2999);
        s.push(msg(6001));
        assert_eq!(
            s.pop().map(|m| m.seq),
            Some(6001),
            "purge dropped every shared body"
        );
    }

    #[test]
    fn packed_queue_keeps_order_across_requeues_and_purge() {
        let mut s = MemoryQueueStore::default();
        for seq in 1..=5000 {
            s.push(msg(seq));
        }
        let a = s.pop().unwrap();
        let b = s.pop().unwrap();
        s.requeue(b);
        s.requeue(a);
        let order: Vec<u64> = (0..5000).map(|_| s.pop().unwrap().seq).collect();
        assert_eq!(order, (1..=5000).collect::<Vec<_>>());
        for seq in 5001..=9000 {
            s.push(msg(seq));
        }
        assert_eq!(s.purge(), 4000);
        assert!(s.is_empty());
        s.push(msg(9001));
        assert_eq!(s.pop().unwrap().seq, 9001);
    }
}
