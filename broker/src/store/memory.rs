//! The in-memory queue store: a deque in sequence order.

use std::collections::VecDeque;

use super::{QueueStore, StoredMessage};

/// Ready messages kept in RAM.
#[derive(Default)]
pub struct MemoryQueueStore {
    ready: VecDeque<StoredMessage>,
}

impl QueueStore for MemoryQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        self.ready.push_back(msg);
        false
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        self.ready.pop_front()
    }

    fn requeue(&mut self, msg: StoredMessage) {
        // Requeued messages are usually older than everything ready: the common case is O(1).
        match self.ready.front() {
            None => self.ready.push_front(msg),
            Some(first) if first.seq > msg.seq => self.ready.push_front(msg),
            _ => {
                let pos = self.ready.partition_point(|m| m.seq < msg.seq);
                self.ready.insert(pos, msg);
            }
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use amq_protocol::protocol::BasicProperties;
    use std::sync::Arc;

    fn msg(seq: u64) -> StoredMessage {
        StoredMessage {
            seq,
            message: Arc::new(Message {
                exchange: "".into(),
                routing_key: "q".into(),
                properties: BasicProperties::default(),
                raw_properties: Default::default(),
                body: Default::default(),
            }),
            redelivered: false,
        }
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
        let order: Vec<u64> = std::iter::from_fn(|| s.pop().map(|m| m.seq)).collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 6]);
    }
}
