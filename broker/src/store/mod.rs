//! Message storage behind one interface. A queue's owner keeps its ready messages in a
//! `QueueStore`; the in-memory store here serves transient queues, and a disk-backed store
//! (sled) fills the same interface for durable ones.

pub mod disk;
mod durable;
pub mod faults;
pub mod kv;
mod memory;
pub mod paging;
mod priority;
pub mod queue_log;
pub mod ready;
pub mod record;
pub mod segments;

use std::sync::Arc;
use std::time::Instant;

use crate::message::Message;
use queue_log::WrittenRound;

pub use durable::DurableQueueStore;
pub use memory::MemoryQueueStore;
pub use priority::PriorityQueueStore;

/// Where a queue's committed writes become safe: `after_commit(done)` calls `done(ok)` once
/// everything the queue wrote before the call is durable (`ok`) or cannot be (`!ok`). The
/// durable store implements it with its group-commit flush; a replicated queue will wait for
/// a majority of its replicas too.
pub trait CommitBarrier: Send + Sync {
    fn after_commit(&self, done: Box<dyn FnOnce(bool) + Send>);
}

impl CommitBarrier for disk::Disk {
    fn after_commit(&self, done: Box<dyn FnOnce(bool) + Send>) {
        self.after_flush(done);
    }
}

/// A message waiting in a queue.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The queue's sequence number: delivery order, and the id acks refer to.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Delivered before (so the next delivery is flagged redelivered).
    pub redelivered: bool,
    /// Failed deliveries so far (`x-delivery-count`).
    pub delivery_count: u32,
    /// When it expires (queue TTL or its own expiration, the smaller); kept across requeues.
    pub expires_at: Option<Instant>,
}

impl StoredMessage {
    /// A message entering a queue.
    pub fn new(seq: u64, message: Arc<Message>, expires_at: Option<Instant>) -> Self {
        StoredMessage {
            seq,
            message,
            redelivered: false,
            delivery_count: 0,
            expires_at,
        }
    }
}

/// Puts `item` back into a deque ordered by sequence number. Requeued messages are usually
/// older than everything ready, so the common case is a push to the front.
pub(crate) fn insert_by_seq<T>(
    ready: &mut std::collections::VecDeque<T>,
    item: T,
    seq: impl Fn(&T) -> u64,
) {
    let s = seq(&item);
    match ready.front() {
        Some(first) if seq(first) < s => {
            let pos = ready.partition_point(|m| seq(m) < s);
            ready.insert(pos, item);
        }
        _ => ready.push_front(item),
    }
}

/// What a commit could not store: the messages of chunks whose write failed, or everything
/// when the store refused the round's records.
#[derive(Debug, Default)]
pub struct Unwritten {
    /// Sequence ranges (first, last) of chunks that did not reach the disk.
    ranges: Vec<(u64, u64)>,
    /// The round's records were refused: nothing of it is stored.
    all: bool,
}

impl Unwritten {
    /// Everything was stored.
    pub fn is_empty(&self) -> bool {
        !self.all && self.ranges.is_empty()
    }

    /// Message `seq`, written this round, did not reach the disk.
    pub fn contains(&self, seq: u64) -> bool {
        self.all || self.in_failed_chunk(seq)
    }

    /// Message `seq` was in a chunk that could not be written.
    pub fn in_failed_chunk(&self, seq: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&seq))
    }

    /// A chunk holding messages `first..=last` could not be written.
    pub(crate) fn add_range(&mut self, first: u64, last: u64) {
        self.ranges.push((first, last));
    }

    /// Nothing of the round is stored.
    pub(crate) fn set_all(&mut self) {
        self.all = true;
    }
}

/// The ready messages of one queue, in sequence order.
pub trait QueueStore: Send {
    /// Appends a newly published message. Returns true when it was written to disk, so a
    /// publisher confirm must wait for the next flush.
    fn push(&mut self, msg: StoredMessage) -> bool;
    /// Appends a dead-lettered message whose stored copy `from` (queue id, sequence) this queue
    /// takes over: writing it here and settling it there is one atomic step. Returns whether
    /// it was written, and the id of the source's ack record (for its `taken_over`).
    fn push_moved(&mut self, msg: StoredMessage, _from: (u64, u64)) -> (bool, Option<u64>) {
        (self.push(msg), None)
    }
    /// Refuses a dead-lettered message (length limit): its stored copy `from` is settled at
    /// the source all the same. Returns the id of the source's ack record.
    fn refuse_moved(&mut self, _from: (u64, u64)) -> Option<u64> {
        None
    }
    /// Another queue took over stored message `seq` and wrote ack record `ack` for it.
    fn taken_over(&mut self, _seq: u64, _ack: u64) {}
    /// Takes the oldest message (reading it back from disk if it was paged out).
    fn pop(&mut self) -> Option<StoredMessage>;
    /// Puts a delivered message back in its place by sequence (ahead of newer ones).
    fn requeue(&mut self, msg: StoredMessage);
    /// A message was handed to a consumer and awaits its ack.
    fn delivered(&mut self, msg: &StoredMessage);
    /// A delivered message was settled (acked, or rejected without requeue).
    fn settle(&mut self, msg: &StoredMessage);
    /// What this queue's writes must pass before they count as stored, if anything: the
    /// durable store's flush (publisher confirms wait for it). Replication will put the
    /// followers' acknowledgements behind the same interface.
    fn barrier(&self) -> Option<&dyn CommitBarrier> {
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
    /// Body bytes of the ready messages (`x-max-length-bytes`).
    fn bytes(&self) -> u64;
    /// Ready messages paged out to disk, and their body bytes (RabbitMQ's
    /// `messages_paged_out` and `message_bytes_paged_out`).
    fn paged(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Ready messages that are persistent (a durable queue's `messages_persistent` counts
    /// these and the unacked ones, as RabbitMQ's does).
    fn persistent(&self) -> u64 {
        0
    }
    /// When the next message to be delivered expires, if it does.
    fn head_expiry(&self) -> Option<Instant>;
    /// Rewrites a stored message after its content changed (delivery count header).
    fn rewrite(&mut self, _msg: &StoredMessage) {}
    /// Makes this round's writes durable-to-be: applies buffered writes so the next flush
    /// covers them. Called once per delivery round, before confirms are registered. Returns
    /// what could not be written: those of the messages `refused` (this round's publishes that
    /// owe a confirm) are nacked and taken out of the queue (a publisher retrying after a nack
    /// must not create a duplicate), the round's other unwritten messages stay, in memory
    /// only, and everything else is confirmed after the next flush. `awaits_flush`: the
    /// round's confirms wait for a flush, whose outcome [`flushed`](Self::flushed) reports;
    /// until then the round's messages keep their bodies in memory.
    fn commit(&mut self, _refused: &[u64], _awaits_flush: bool) -> Unwritten {
        Unwritten::default()
    }
    /// The flush of the oldest round committed with `awaits_flush` finished. If it failed, its
    /// publishes `refused` were nacked: they leave the queue, and are settled on disk in case
    /// their copy got there after all.
    fn flushed(&mut self, _ok: bool, _refused: &[u64]) {}
    /// The chunks the commits since the last call wrote to disk, if any, taken after each
    /// [`commit`](Self::commit): if the flush of a round fails, its chunks holding only
    /// refused publishes are voided before the nacks go out (see [`WrittenRound`]).
    fn written_round(&mut self) -> Option<WrittenRound> {
        None
    }
    /// Clean shutdown: remembers which messages were delivered before (`unacked`, and ready
    /// ones flagged redelivered), so a restart flags exactly those.
    fn snapshot_delivered(&mut self, _unacked: &[u64]) {}
    /// No ready messages.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
