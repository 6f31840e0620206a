//! Message storage behind one interface. A queue's owner keeps its ready messages in a
//! `QueueStore`; the in-memory store here serves transient queues, and a disk-backed store
//! (sled) fills the same interface for durable ones.

mod memory;

use std::sync::Arc;

use crate::message::Message;

pub use memory::MemoryQueueStore;

/// A message waiting in a queue.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The queue's sequence number: delivery order, and the id acks refer to.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before (so the next delivery is flagged redelivered).
    pub redelivered: bool,
}

/// The ready messages of one queue, in sequence order.
pub trait QueueStore: Send {
    /// Appends a newly published message.
    fn push(&mut self, msg: StoredMessage);
    /// Takes the oldest message.
    fn pop(&mut self) -> Option<StoredMessage>;
    /// Puts a delivered message back in its place by sequence (ahead of newer ones).
    fn requeue(&mut self, msg: StoredMessage);
    /// A delivered message was settled (acked, or rejected without requeue).
    fn settle(&mut self, seq: u64);
    /// Drops every ready message; returns how many.
    fn purge(&mut self) -> usize;
    /// Ready messages.
    fn len(&self) -> usize;
    /// No ready messages.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
