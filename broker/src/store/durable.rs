//! The store of a durable queue: persistent messages are written to the `Disk`; transient ones
//! stay in memory (RabbitMQ's semantics). Only an index entry per message is kept in RAM once
//! the queue's in-memory bodies pass a budget; paged-out bodies are read back on delivery.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::disk::{decode_message, encode_message, record_meta, Disk};
use super::{QueueStore, StoredMessage};

/// Body bytes a durable queue keeps in memory before new persistent messages live on disk only.
const MEMORY_BUDGET: usize = 16 * 1024 * 1024;

struct Entry {
    seq: u64,
    redelivered: bool,
    persistent: bool,
    delivery_count: u32,
    expires_at: Option<Instant>,
    /// Body bytes (for `x-max-length-bytes` without reading paged-out bodies).
    size: u32,
    /// `None` when paged out: the body is on disk only.
    message: Option<Arc<crate::message::Message>>,
}

impl Entry {
    /// The entry of a message held in memory; `persistent` when it is (or will be) on disk.
    fn new(msg: StoredMessage, persistent: bool) -> Self {
        Entry {
            seq: msg.seq,
            redelivered: msg.redelivered,
            persistent,
            delivery_count: msg.delivery_count,
            expires_at: msg.expires_at,
            size: msg.message.body_len() as u32,
            message: Some(msg.message),
        }
    }
}

/// Ready messages of a durable queue.
pub struct DurableQueueStore {
    disk: Arc<Disk>,
    id: u64,
    ready: VecDeque<Entry>,
    mem_bytes: usize,
    /// Body bytes of all ready messages, in memory or not.
    bytes: u64,
    /// Writes and removals of this delivery round, applied by `commit` as one sled batch.
    batch: sled::Batch,
    /// Whether `batch` holds anything.
    dirty: bool,
    /// Entries written this round whose bodies go out of memory once the batch is applied.
    page_out: Vec<u64>,
}

impl DurableQueueStore {
    /// An empty store for queue `id`.
    pub fn new(disk: Arc<Disk>, id: u64) -> Self {
        DurableQueueStore {
            disk,
            id,
            ready: VecDeque::new(),
            mem_bytes: 0,
            bytes: 0,
            batch: sled::Batch::default(),
            dirty: false,
            page_out: Vec::new(),
        }
    }

    /// The store of queue `id` with the messages found on disk; returns the next sequence
    /// number to use.
    pub fn recover(disk: Arc<Disk>, id: u64, unclean: bool) -> (Self, u64) {
        let mut store = DurableQueueStore::new(disk.clone(), id);
        let mut next = 1;
        disk.load_queue(id, unclean, |seq, redelivered, value| {
            next = seq + 1;
            let meta = record_meta(value);
            let message = if store.mem_bytes < MEMORY_BUDGET {
                decode_message(value).map(|m| {
                    store.mem_bytes += m.body_len();
                    Arc::new(m)
                })
            } else {
                None
            };
            let size = message
                .as_ref()
                .map_or_else(|| encoded_body_len(value), |m| m.body_len())
                as u32;
            store.bytes += u64::from(size);
            store.ready.push_back(Entry {
                seq,
                redelivered,
                persistent: true,
                delivery_count: meta.delivery_count,
                expires_at: meta.expires_at(),
                size,
                message,
            });
        });
        (store, next)
    }
}

impl QueueStore for DurableQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        let written = msg.message.is_persistent();
        if written {
            self.batch
                .insert(&Disk::key(self.id, msg.seq)[..], encode_message(&msg));
            self.dirty = true;
        }
        if written && self.mem_bytes >= MEMORY_BUDGET {
            // Keep the body until the batch is on its way to disk, then let it go.
            self.page_out.push(msg.seq);
        } else {
            self.mem_bytes += msg.message.body_len();
        }
        self.bytes += msg.message.body_len() as u64;
        self.ready.push_back(Entry::new(msg, written));
        written
    }

    fn push_moved(&mut self, msg: StoredMessage, from: (u64, u64)) -> bool {
        self.commit();
        let written = self.disk.move_message(from, self.id, &msg);
        self.mem_bytes += msg.message.body_len();
        self.bytes += msg.message.body_len() as u64;
        self.ready.push_back(Entry::new(msg, written));
        written
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        while let Some(e) = self.ready.pop_front() {
            self.bytes -= u64::from(e.size).min(self.bytes);
            let delivery_count = e.delivery_count;
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
                delivery_count,
                expires_at: e.expires_at,
            });
        }
        None
    }

    fn requeue(&mut self, msg: StoredMessage) {
        self.mem_bytes += msg.message.body_len();
        self.bytes += msg.message.body_len() as u64;
        let persistent = msg.message.is_persistent();
        super::insert_by_seq(&mut self.ready, Entry::new(msg, persistent), |e| e.seq);
    }

    fn delivered(&mut self, _msg: &StoredMessage) {
        // Recorded only at a clean shutdown (`snapshot_delivered`): after a crash every
        // recovered message is flagged redelivered anyway.
    }

    fn settle(&mut self, msg: &StoredMessage) {
        if msg.message.is_persistent() {
            self.batch.remove(&Disk::key(self.id, msg.seq)[..]);
            self.dirty = true;
        }
    }

    fn commit(&mut self) -> bool {
        let mut ok = true;
        if self.dirty {
            ok = self.disk.apply(std::mem::take(&mut self.batch));
            self.dirty = false;
        }
        if !self.page_out.is_empty() {
            let from = self.page_out[0];
            for e in self.ready.iter_mut().rev() {
                if e.seq < from {
                    break;
                }
                if e.message.is_some() && self.page_out.binary_search(&e.seq).is_ok() {
                    e.message = None;
                }
            }
            self.page_out.clear();
        }
        ok
    }

    fn snapshot_delivered(&mut self, unacked: &[u64]) {
        self.commit();
        let ready = self
            .ready
            .iter()
            .filter(|e| e.persistent && e.redelivered)
            .map(|e| e.seq);
        self.disk
            .mark_delivered_many(self.id, unacked.iter().copied().chain(ready));
    }

    fn purge(&mut self) -> usize {
        self.commit();
        let n = self.ready.len();
        let seqs: Vec<u64> = self
            .ready
            .iter()
            .filter(|e| e.persistent)
            .map(|e| e.seq)
            .collect();
        self.disk.remove_messages(self.id, &seqs);
        self.ready.clear();
        self.mem_bytes = 0;
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
        self.ready.front().and_then(|e| e.expires_at)
    }

    fn rewrite(&mut self, msg: &StoredMessage) {
        if msg.message.is_persistent() {
            self.batch
                .insert(&Disk::key(self.id, msg.seq)[..], encode_message(msg));
            self.dirty = true;
        }
    }

    fn disk(&self) -> Option<&Arc<Disk>> {
        Some(&self.disk)
    }

    fn destroy(&mut self) {
        self.batch = sled::Batch::default();
        self.dirty = false;
        self.ready.clear();
        self.mem_bytes = 0;
        self.bytes = 0;
        self.disk.purge(self.id);
    }
}

/// The body length of an encoded message without decoding its properties.
fn encoded_body_len(v: &[u8]) -> usize {
    (|| {
        let base = if v.first() == Some(&3) { 14 } else { 1 };
        let xl = *v.get(base)? as usize;
        let rl = *v.get(base + 1 + xl)? as usize;
        let at = base + 2 + xl + rl;
        let pl = u32::from_be_bytes(v.get(at..at + 4)?.try_into().ok()?) as usize;
        Some(v.len().saturating_sub(at + 4 + pl))
    })()
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    //! Model-based test: random publish, deliver, ack, nack, requeue, purge, delete and restart
    //! applied to the real store and to a `BTreeMap`, compared after every step.

    use std::collections::{BTreeMap, HashMap};

    use amq_protocol::protocol::BasicProperties;
    use bytes::Bytes;

    use super::*;
    use crate::message::Message;
    use crate::protocol::encode_properties;

    fn message(id: u64, persistent: bool) -> Arc<Message> {
        let props = if persistent {
            BasicProperties::default().with_delivery_mode(2)
        } else {
            BasicProperties::default()
        };
        Arc::new(Message::new(
            "".into(),
            "q".into(),
            &props,
            encode_properties(&props),
            Bytes::from(format!("body-{id}-{}", "x".repeat((id % 7) as usize * 300))),
        ))
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// What the model expects of one message.
    #[derive(Clone, Debug, PartialEq)]
    struct Expect {
        body: Bytes,
        persistent: bool,
        delivered: bool,
    }

    /// sled's background threads may hold the database file for a moment after the last
    /// handle is dropped; a reopen in the same process waits for them.
    fn reopen(dir: &std::path::Path) -> (Arc<Disk>, crate::store::disk::Recovered) {
        for _ in 0..100 {
            match Disk::open(dir, 1 << 20) {
                Ok(x) => return x,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        Disk::open(dir, 1 << 20).expect("reopening the store")
    }

    fn run(seed: u64, steps: usize) {
        let dir =
            std::env::temp_dir().join(format!("warren-model-{}", crate::util::random_token(10)));
        let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
        let mut disk = Some(disk);
        let mut store = DurableQueueStore::new(disk.clone().unwrap(), 1);
        let mut next_seq = 1;
        let mut rng = Rng(seed | 1);
        // seq -> expectation, for messages that are ready or unacked.
        let mut model: BTreeMap<u64, Expect> = BTreeMap::new();
        let mut unacked: HashMap<u64, StoredMessage> = HashMap::new();
        for step in 0..steps {
            match rng.below(10) {
                0..=3 => {
                    let persistent = rng.below(4) != 0;
                    let m = message(next_seq, persistent);
                    model.insert(
                        next_seq,
                        Expect {
                            body: m.body.clone(),
                            persistent,
                            delivered: false,
                        },
                    );
                    store.push(StoredMessage::new(next_seq, m, None));
                    next_seq += 1;
                }
                4 | 5 => {
                    if let Some(mut m) = store.pop() {
                        let oldest = model.keys().find(|k| !unacked.contains_key(k)).copied();
                        assert_eq!(Some(m.seq), oldest, "step {step}: delivery order");
                        let e = model
                            .get_mut(&m.seq)
                            .expect("popped a message the model lacks");
                        assert_eq!(m.message.body, e.body, "step {step}");
                        assert_eq!(m.redelivered, e.delivered, "step {step}: redelivered flag");
                        store.delivered(&m);
                        e.delivered = true;
                        m.redelivered = true;
                        unacked.insert(m.seq, m);
                    } else {
                        assert!(
                            model.keys().all(|k| unacked.contains_key(k)),
                            "step {step}: pop found nothing"
                        );
                    }
                }
                6 => {
                    if let Some(&seq) = unacked.keys().next() {
                        let m = unacked.remove(&seq).unwrap();
                        store.settle(&m);
                        model.remove(&seq);
                    }
                }
                7 => {
                    if let Some(&seq) = unacked.keys().next() {
                        store.requeue(unacked.remove(&seq).unwrap());
                    }
                }
                8 => {
                    if rng.below(5) == 0 {
                        let ready: Vec<u64> = model
                            .keys()
                            .filter(|k| !unacked.contains_key(k))
                            .copied()
                            .collect();
                        assert_eq!(store.purge(), ready.len(), "step {step}: purge count");
                        for k in ready {
                            model.remove(&k);
                        }
                    }
                }
                _ => {
                    // Restart: unacked messages return to the queue; transient ones are gone.
                    let delivered: Vec<u64> = unacked.keys().copied().collect();
                    store.snapshot_delivered(&delivered);
                    drop(store);
                    if let Some(d) = disk.take() {
                        d.close_cleanly();
                        drop(d);
                    }
                    let (d, rec) = reopen(&dir);
                    assert!(!rec.unclean);
                    let (s, next) = DurableQueueStore::recover(d.clone(), 1, false);
                    disk = Some(d);
                    store = s;
                    unacked.clear();
                    model.retain(|_, e| e.persistent);
                    next_seq = next_seq.max(next);
                    assert_eq!(store.len(), model.len(), "step {step}: recovered count");
                }
            }
            store.commit();
            let ready = model.len() - unacked.len();
            assert_eq!(store.len(), ready, "step {step}: ready count");
        }
        // Delete: nothing of the queue is left on disk.
        store.destroy();
        let d = disk.take().unwrap();
        let mut left = 0;
        d.load_queue(1, false, |_, _, _| left += 1);
        assert_eq!(left, 0);
        drop(store);
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_matches_a_simple_model_across_restarts() {
        for seed in 1..=8 {
            run(seed * 7919, 400);
        }
    }
}
