//! Message storage behind one interface. A queue's owner keeps its ready messages in a
//! `QueueStore`; the in-memory store here serves transient queues, and a disk-backed store
//! (sled) fills the same interface for durable ones.

pub mod disk;
mod durable;
mod memory;

use std::sync::Arc;

use crate::message::Message;

pub use durable::DurableQueueStore;
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
    /// Appends a newly published message. Returns true when it was written to disk, so a
    /// publisher confirm must wait for the next flush.
    fn push(&mut self, msg: StoredMessage) -> bool;
    /// Takes the oldest message (reading it back from disk if it was paged out).
    fn pop(&mut self) -> Option<StoredMessage>;
    /// Puts a delivered message back in its place by sequence (ahead of newer ones).
    fn requeue(&mut self, msg: StoredMessage);
    /// A message was handed to a consumer and awaits its ack.
    fn delivered(&mut self, msg: &StoredMessage);
    /// A delivered message was settled (acked, or rejected without requeue).
    fn settle(&mut self, msg: &StoredMessage);
    /// The durable store behind this queue, if any (publisher confirms wait for its flush).
    fn disk(&self) -> Option<&Arc<disk::Disk>> {
        None
    }
    /// The queue is being deleted: forget everything, on disk too.
    fn destroy(&mut self) {
        self.purge();
    }
    /// Drops every ready message; returns how many.
    fn purge(&mut self) -> usize;
    /// Ready messages.
    fn len(&self) -> usize;
    /// No ready messages.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
