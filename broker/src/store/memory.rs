//! The in-memory queue store: a deque in sequence order.

use std::collections::VecDeque;
use std::time::Instant;

use super::{QueueStore, StoredMessage};

/// Ready messages kept in RAM.
#[derive(Default)]
pub struct MemoryQueueStore {
    ready: VecDeque<StoredMessage>,
    bytes: u64,
}

impl QueueStore for MemoryQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        self.bytes += msg.message.body_len() as u64;
        self.ready.push_back(msg);
        false
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        let m = self.ready.pop_front()?;
        self.bytes -= m.message.body_len() as u64;
        Some(m)
    }

    fn requeue(&mut self, msg: StoredMessage) {
        self.bytes += msg.message.body_len() as u64;
        super::insert_by_seq(&mut self.ready, msg, |m| m.seq);
    }

    fn delivered(&mut self, _msg: &StoredMessage) {}

    fn settle(&mut self, _msg: &StoredMessage) {}

    fn purge(&mut self) -> usize {
        let n = self.ready.len();
        self.ready.clear();
        self.bytes = 0;
        n
    }

    fn len(&self) -> usize {
        self.ready.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn head_expiry(&self) -> Option<Instant> {
        self.ready.front().and_then(|m| m.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use amq_protocol::protocol::BasicProperties;
    use std::sync::Arc;

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage::new(
            seq,
            Arc::new(Message::new(
                "".into(),
                "q".into(),
                &BasicProperties::default(),
                Default::default(),
                bytes::Bytes::from_static(b"abc"),
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
}
