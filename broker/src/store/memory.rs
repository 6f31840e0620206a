//! The in-memory queue store: ready messages in sequence order, packed once the queue is deep
//! (see [`Ready`]).

use std::time::Instant;

use super::ready::{Ready, Slot};
use super::{QueueStore, StoredMessage};

/// Ready messages kept in RAM, those of a deep queue paged out to disk when there is a data
/// directory (see [`paging`](super::paging)).
#[derive(Default)]
pub struct MemoryQueueStore {
    ready: Ready,
}

impl MemoryQueueStore {
    /// A store that pages a deep queue's messages out through `pager`, if given.
    pub fn new(pager: Option<&std::sync::Arc<super::paging::Pager>>) -> Self {
        MemoryQueueStore {
            ready: pager.map_or_else(Ready::default, |p| Ready::with_pages(p.page_file())),
        }
    }
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
        let n = self.ready.len();
        self.ready.clear();
        n
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

    fn paged(&self) -> (u64, u64) {
        self.ready.paged()
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

    /// A store that pages to a fresh directory.
    fn paging_store() -> (
        MemoryQueueStore,
        std::sync::Arc<crate::store::paging::Pager>,
        std::path::PathBuf,
    ) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "warren-memory-paging-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let pager = crate::store::paging::Pager::open(&dir).unwrap();
        (MemoryQueueStore::new(Some(&pager)), pager, dir)
    }

    #[test]
    fn a_deep_queue_pages_out_and_gives_every_message_back_in_order() {
        let (mut s, pager, dir) = paging_store();
        let base = Instant::now();
        // 64 MiB of bodies, some larger than INLINE_BODY, some with everything a record carries.
        let n = 40_000u64;
        let make = |seq: u64| {
            if seq.is_multiple_of(10) {
                rich(seq, base)
            } else {
                let size = if seq.is_multiple_of(7) { 9000 } else { 1500 };
                msg_with_body(seq, bytes::Bytes::from(vec![seq as u8; size]))
            }
        };
        let mut most_in_memory = 0;
        for seq in 1..=n {
            s.push(make(seq));
            most_in_memory = most_in_memory.max(s.ready.packed_capacity());
        }
        let (paged, paged_bytes) = s.paged();
        assert!(
            paged > n / 2 && paged_bytes > 32 << 20,
            "{paged} {paged_bytes}"
        );
        assert!(pager.bytes() >= paged_bytes);
        assert!(
            most_in_memory < super::super::ready::PAGE_AFTER + (1 << 20),
            "{most_in_memory} bytes of blocks in memory"
        );
        // A requeue in the middle keeps its place.
        let first = s.pop().unwrap();
        s.requeue(first);
        for seq in 1..=n {
            let want = make(seq);
            let got = s
                .pop()
                .unwrap_or_else(|| panic!("message {seq} is missing"));
            assert_eq!(got.seq, seq);
            assert_eq!(got.message.body(), want.message.body(), "seq {seq}");
            assert_eq!(got.message.raw_properties(), want.message.raw_properties());
            assert_eq!(got.message.routing_key(), want.message.routing_key());
            assert_eq!(got.redelivered, want.redelivered);
            assert_eq!(got.delivery_count, want.delivery_count);
        }
        assert!(s.pop().is_none());
        assert_eq!((s.len(), s.bytes(), s.paged()), (0, 0, (0, 0)));
        assert_eq!(pager.bytes(), 0, "every page file read is deleted");
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_purged_paged_queue_deletes_its_files_and_a_lost_page_loses_only_its_messages() {
        let (mut s, pager, dir) = paging_store();
        let body = |seq: u64| bytes::Bytes::from(vec![seq as u8; 2000]);
        for seq in 1..=20_000 {
            s.push(msg_with_body(seq, body(seq)));
        }
        assert!(pager.bytes() > 0);
        assert_eq!(s.purge(), 20_000);
        assert_eq!(pager.bytes(), 0);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

        for seq in 20_001..=40_000 {
            s.push(msg_with_body(seq, body(seq)));
        }
        // Page files emptied behind Warren's back: those blocks are lost, nothing else.
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = std::fs::File::options().write(true).open(f.unwrap().path());
            f.unwrap().set_len(0).unwrap();
        }
        let before = s.len();
        let mut popped = 0;
        let mut last = 0;
        while let Some(m) = s.pop() {
            assert!(m.seq > last, "in order");
            assert_eq!(m.message.body(), &body(m.seq)[..]);
            last = m.seq;
            popped += 1;
        }
        assert!(popped < before, "the paged messages were lost");
        assert!(popped > 0, "the ones in memory were not");
        assert_eq!((s.len(), s.bytes()), (0, 0), "the counts follow the loss");
        drop(s);
        let _ = std::fs::remove_dir_all(dir);
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
