//! The store of a durable queue: persistent messages are written to the `Disk`; transient ones
//! stay in memory (RabbitMQ's semantics). Only an index entry per message is kept in RAM once
//! the queue's in-memory bodies pass a budget; paged-out bodies are read back on delivery.

use std::collections::VecDeque;
use std::sync::Arc;

use super::disk::{decode_message, Disk};
use super::{QueueStore, StoredMessage};

/// Body bytes a durable queue keeps in memory before new persistent messages live on disk only.
const MEMORY_BUDGET: usize = 16 * 1024 * 1024;

struct Entry {
    seq: u64,
    redelivered: bool,
    persistent: bool,
    /// `None` when paged out: the body is on disk only.
    message: Option<Arc<crate::message::Message>>,
}

/// Ready messages of a durable queue.
pub struct DurableQueueStore {
    disk: Arc<Disk>,
    id: u64,
    ready: VecDeque<Entry>,
    mem_bytes: usize,
}

impl DurableQueueStore {
    /// An empty store for queue `id`.
    pub fn new(disk: Arc<Disk>, id: u64) -> Self {
        DurableQueueStore {
            disk,
            id,
            ready: VecDeque::new(),
            mem_bytes: 0,
        }
    }

    /// The store of queue `id` with the messages found on disk; returns the next sequence
    /// number to use.
    pub fn recover(disk: Arc<Disk>, id: u64, unclean: bool) -> (Self, u64) {
        let mut store = DurableQueueStore::new(disk.clone(), id);
        let mut next = 1;
        disk.load_queue(id, unclean, |seq, redelivered, value| {
            next = seq + 1;
            let message = if store.mem_bytes < MEMORY_BUDGET {
                decode_message(value).map(|m| {
                    store.mem_bytes += m.body_len();
                    Arc::new(m)
                })
            } else {
                None
            };
            store.ready.push_back(Entry {
                seq,
                redelivered,
                persistent: true,
                message,
            });
        });
        (store, next)
    }
}

impl QueueStore for DurableQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        let persistent = msg.message.is_persistent();
        let mut written = false;
        if persistent {
            written = self.disk.put_message(self.id, msg.seq, &msg.message);
        }
        let keep = !persistent || !written || self.mem_bytes < MEMORY_BUDGET;
        if keep {
            self.mem_bytes += msg.message.body_len();
        }
        self.ready.push_back(Entry {
            seq: msg.seq,
            redelivered: msg.redelivered,
            persistent: written,
            message: keep.then_some(msg.message),
        });
        written
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        while let Some(e) = self.ready.pop_front() {
            let message = match e.message {
                Some(m) => {
                    self.mem_bytes -= m.body_len().min(self.mem_bytes);
                    m
                }
                None => match self.disk.get_message(self.id, e.seq) {
                    Some(m) => Arc::new(m),
                    // Unreadable on disk: nothing to deliver; skip it rather than stall.
                    None => continue,
                },
            };
            return Some(StoredMessage {
                seq: e.seq,
                message,
                redelivered: e.redelivered,
            });
        }
        None
    }

    fn requeue(&mut self, msg: StoredMessage) {
        self.mem_bytes += msg.message.body_len();
        let entry = Entry {
            seq: msg.seq,
            redelivered: msg.redelivered,
            persistent: msg.message.is_persistent(),
            message: Some(msg.message),
        };
        match self.ready.front() {
            Some(first) if first.seq < entry.seq => {
                let pos = self.ready.partition_point(|m| m.seq < entry.seq);
                self.ready.insert(pos, entry);
            }
            _ => self.ready.push_front(entry),
        }
    }

    fn delivered(&mut self, msg: &StoredMessage) {
        if msg.message.is_persistent() {
            self.disk.mark_delivered(self.id, msg.seq);
        }
    }

    fn settle(&mut self, msg: &StoredMessage) {
        if msg.message.is_persistent() {
            self.disk.remove_message(self.id, msg.seq);
        }
    }

    fn purge(&mut self) -> usize {
        let n = self.ready.len();
        let seqs: Vec<u64> = self.ready.iter().filter(|e| e.persistent).map(|e| e.seq).collect();
        self.disk.remove_messages(self.id, &seqs);
        self.ready.clear();
        self.mem_bytes = 0;
        n
    }

    fn len(&self) -> usize {
        self.ready.len()
    }

    fn disk(&self) -> Option<&Arc<Disk>> {
        Some(&self.disk)
    }

    fn destroy(&mut self) {
        self.ready.clear();
        self.mem_bytes = 0;
        self.disk.purge(self.id);
    }
}
