//! The store of a priority queue (`x-max-priority`): one deque per priority level, delivered
//! highest level first and in sequence order within a level. Persistent messages of a durable
//! priority queue are also written to the `Disk` (all bodies stay in memory: priority queues
//! are meant to be short).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::disk::Disk;
use super::queue_log::{QueueLog, WrittenRound};
use super::record::{decode_message, record_meta};
use super::{QueueStore, StoredMessage, Unwritten};

/// Ready messages by priority level.
pub struct PriorityQueueStore {
    levels: Vec<VecDeque<StoredMessage>>,
    /// The disk side of a durable queue.
    log: Option<QueueLog>,
    len: usize,
    bytes: u64,
    /// Persistent messages held.
    persistent: u64,
}

impl PriorityQueueStore {
    /// An empty store for priorities 0..=max; `disk` for a durable queue.
    pub fn new(max: u8, disk: Option<(Arc<Disk>, u64)>) -> Self {
        PriorityQueueStore {
            levels: (0..=max).map(|_| VecDeque::new()).collect(),
            log: disk.map(|(disk, id)| QueueLog::new(disk, id)),
            len: 0,
            bytes: 0,
            persistent: 0,
        }
    }

    /// 1 if `m` is persistent (the queue counts them; only a durable queue reports them).
    fn counts_persistent(&self, m: &StoredMessage) -> u64 {
        u64::from(m.message.is_persistent())
    }

    /// The store of a durable priority queue with the messages found on disk; returns the next
    /// sequence number to use.
    pub fn recover(max: u8, disk: Arc<Disk>, id: u64, unclean: bool) -> (Self, u64) {
        let mut store = PriorityQueueStore::new(max, None);
        let mut next = 1;
        let log = QueueLog::recover(disk, id, unclean, |found| {
            next = found.seq + 1;
            if let Some(m) = decode_message(found.record) {
                let meta = record_meta(found.record);
                let mut msg = StoredMessage::new(found.seq, Arc::new(m), meta.expires_at());
                msg.redelivered = found.redelivered;
                msg.delivery_count = meta.delivery_count;
                store.insert(msg, false);
            }
        });
        store.log = Some(log);
        (store, next)
    }

    fn level(&self, msg: &StoredMessage) -> usize {
        usize::from(msg.message.priority()).min(self.levels.len() - 1)
    }

    /// Takes out message `seq`, a refused publish, if it is still ready (and settles its copy
    /// on disk, in case it got there).
    fn take_back(&mut self, seq: u64) {
        // Recently pushed: near the back of its level.
        let found = self.levels.iter_mut().find_map(|q| {
            let pos = q.iter().rposition(|m| m.seq == seq)?;
            q.remove(pos)
        });
        if let Some(m) = found {
            self.len -= 1;
            self.bytes -= m.message.body_len() as u64;
            self.persistent -= self.counts_persistent(&m);
            if let Some(log) = self.log.as_mut() {
                log.remove(seq);
            }
        }
    }

    fn insert(&mut self, msg: StoredMessage, at_back: bool) {
        self.len += 1;
        self.bytes += msg.message.body_len() as u64;
        self.persistent += self.counts_persistent(&msg);
        let level = self.level(&msg);
        let q = &mut self.levels[level];
        if at_back {
            q.push_back(msg);
        } else {
            let pos = q.partition_point(|m| m.seq < msg.seq);
            q.insert(pos, msg);
        }
    }

    fn front(&self) -> Option<&StoredMessage> {
        self.levels.iter().rev().find_map(|q| q.front())
    }
}

impl QueueStore for PriorityQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        let written = self
            .log
            .as_mut()
            .is_some_and(|log| log.write_persistent(&msg));
        self.insert(msg, true);
        written
    }

    fn push_moved(&mut self, msg: StoredMessage, from: (u64, u64)) -> (bool, Option<u64>) {
        let Some(log) = &mut self.log else {
            return (self.push(msg), None);
        };
        // Not stored: the source keeps its copy, this one is in memory only.
        let stored = log.take_over(&msg, from);
        self.insert(msg, true);
        (
            stored.is_some_and(|(written, _)| written),
            stored.map(|(_, ack)| ack),
        )
    }

    fn refuse_moved(&mut self, from: (u64, u64)) -> Option<u64> {
        self.log.as_mut()?.refuse(from)
    }

    fn taken_over(&mut self, seq: u64, ack: u64) {
        if let Some(log) = &mut self.log {
            log.taken_over(seq, ack);
        }
    }

    fn commit(&mut self, refused: &[u64], _awaits_flush: bool) -> Unwritten {
        let Some(log) = self.log.as_mut() else {
            return Unwritten::default();
        };
        let _ = log.commit();
        let unwritten = log.take_unwritten();
        for &seq in refused.iter().filter(|&&seq| unwritten.contains(seq)) {
            self.take_back(seq);
        }
        unwritten
    }

    fn written_round(&mut self) -> Option<WrittenRound> {
        self.log.as_mut()?.take_written()
    }

    fn flushed(&mut self, ok: bool, refused: &[u64]) {
        if !ok {
            for &seq in refused {
                self.take_back(seq);
            }
        }
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        let m = self.levels.iter_mut().rev().find_map(|q| q.pop_front())?;
        self.len -= 1;
        self.bytes -= m.message.body_len() as u64;
        self.persistent -= self.counts_persistent(&m);
        Some(m)
    }

    fn requeue(&mut self, msg: StoredMessage) {
        self.insert(msg, false);
    }

    fn delivered(&mut self, _msg: &StoredMessage) {}

    fn snapshot_delivered(&mut self, unacked: &[u64]) {
        self.commit(&[], false);
        if let Some(log) = &self.log {
            let ready = self
                .levels
                .iter()
                .flatten()
                .filter(|m| m.redelivered && m.message.is_persistent())
                .map(|m| m.seq);
            log.disk()
                .mark_delivered_many(log.id(), unacked.iter().copied().chain(ready));
        }
    }

    fn settle(&mut self, msg: &StoredMessage) {
        if let Some(log) = &mut self.log {
            log.settle_persistent(msg);
        }
    }

    fn purge(&mut self) -> usize {
        if let Some(log) = &mut self.log {
            for m in self.levels.iter().flatten() {
                if m.message.is_persistent() {
                    log.remove(m.seq);
                }
            }
            let _ = log.commit();
        }
        self.levels.iter_mut().for_each(VecDeque::clear);
        let n = self.len;
        self.len = 0;
        self.bytes = 0;
        self.persistent = 0;
        n
    }

    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn persistent(&self) -> u64 {
        self.persistent
    }

    fn head_expiry(&self) -> Option<Instant> {
        self.front().and_then(|m| m.expires_at)
    }

    fn rewrite(&mut self, msg: &StoredMessage) {
        if let (Some(log), true) = (&mut self.log, msg.message.is_persistent()) {
            log.rewrite(msg);
        }
    }

    fn barrier(&self) -> Option<&dyn super::CommitBarrier> {
        self.log
            .as_ref()
            .map(|l| &**l.disk() as &dyn super::CommitBarrier)
    }

    fn destroy(&mut self) {
        if let Some(log) = &mut self.log {
            log.destroy();
        }
        self.levels.iter_mut().for_each(VecDeque::clear);
        self.len = 0;
        self.bytes = 0;
        self.persistent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::protocol::encode_properties;
    use amq_protocol::protocol::BasicProperties;

    fn msg(seq: u64, priority: u8) -> StoredMessage {
        let props = BasicProperties::default().with_priority(priority);
        StoredMessage::new(
            seq,
            Arc::new(Message::new(
                "".into(),
                "q".into(),
                &props,
                encode_properties(&props),
                Default::default(),
            )),
            None,
        )
    }

    #[test]
    fn higher_priority_first_then_sequence() {
        let mut s = PriorityQueueStore::new(5, None);
        for (seq, p) in [(1, 0), (2, 3), (3, 9), (4, 3), (5, 0)] {
            s.push(msg(seq, p));
        }
        let first = s.pop().unwrap();
        s.requeue(first);
        let order: Vec<u64> = std::iter::from_fn(|| s.pop().map(|m| m.seq)).collect();
        // priority 9 is capped at 5 and still goes first
        assert_eq!(order, [3, 2, 4, 1, 5]);
    }
}
