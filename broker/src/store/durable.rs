//! The store of a durable queue: persistent messages are written to disk through the queue's
//! [`QueueLog`]; transient ones stay in memory (RabbitMQ's semantics). Past the head of a deep
//! queue only an index record per persistent message stays in RAM (see [`Ready`]); its body
//! is read back from disk when it reaches the head.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::disk::Disk;
use super::queue_log::{QueueLog, WrittenRound};
use super::ready::{Ready, Slot, HOT_MAX};
use super::record::{decode_message, record_meta};
use super::{QueueStore, StoredMessage, Unwritten};

/// Ready messages of a durable queue.
pub struct DurableQueueStore {
    log: QueueLog,
    ready: Ready,
    /// Rounds whose confirms wait for a flush, oldest first: the newest message staged when
    /// each was committed (its messages stay staged until [`QueueStore::flushed`]).
    flushes: VecDeque<u64>,
}

impl DurableQueueStore {
    /// An empty store for queue `id`.
    pub fn new(disk: Arc<Disk>, id: u64) -> Self {
        DurableQueueStore {
            ready: Ready::with_pages(disk.pager().page_file()),
            log: QueueLog::new(disk, id),
            flushes: VecDeque::new(),
        }
    }

    /// The store of queue `id` with the messages found on disk; returns the next sequence
    /// number to use. Only the first messages are decoded; the others stay on disk.
    pub fn recover(disk: Arc<Disk>, id: u64, unclean: bool) -> (Self, u64) {
        let mut ready = Ready::with_pages(disk.pager().page_file());
        let mut next = 1;
        let log = QueueLog::recover(disk, id, unclean, |found| {
            next = found.seq + 1;
            let meta = record_meta(found.record);
            let message = (ready.len() < HOT_MAX)
                .then(|| decode_message(found.record))
                .flatten()
                .map(Arc::new);
            let size = message
                .as_ref()
                .map_or_else(|| encoded_body_len(found.record), |m| m.body_len())
                as u32;
            ready.push(Slot {
                seq: found.seq,
                redelivered: found.redelivered,
                on_disk: true,
                delivery_count: meta.delivery_count,
                expires_at: meta.expires_at(),
                size,
                message,
            });
            // Already on disk: packed now, not held as a full slot until the end.
            ready.unstage();
        });
        (
            DurableQueueStore {
                log,
                ready,
                flushes: VecDeque::new(),
            },
            next,
        )
    }
}

impl QueueStore for DurableQueueStore {
    fn push(&mut self, msg: StoredMessage) -> bool {
        let written = self.log.write_persistent(&msg);
        self.ready.push(Slot::new(msg, written));
        written
    }

    fn push_moved(&mut self, msg: StoredMessage, from: (u64, u64)) -> (bool, Option<u64>) {
        let Some((written, ack)) = self.log.take_over(&msg, from) else {
            // The source keeps its copy (the message is back there after a restart) and this
            // one is in memory only.
            self.ready.push(Slot::new(msg, false));
            return (false, None);
        };
        self.ready.push(Slot::new(msg, written));
        if self.flushes.is_empty() {
            self.ready.unstage();
        }
        (written, Some(ack))
    }

    fn refuse_moved(&mut self, from: (u64, u64)) -> Option<u64> {
        self.log.refuse(from)
    }

    fn taken_over(&mut self, seq: u64, ack: u64) {
        self.log.taken_over(seq, ack);
    }

    fn pop(&mut self) -> Option<StoredMessage> {
        let log = &mut self.log;
        self.ready.pop(|seq| log.read(seq))
    }

    fn requeue(&mut self, msg: StoredMessage) {
        let on_disk = msg.message.is_persistent();
        self.ready.requeue(Slot::new(msg, on_disk));
    }

    fn delivered(&mut self, _msg: &StoredMessage) {
        // Recorded only at a clean shutdown (`snapshot_delivered`): after a crash every
        // recovered message is flagged redelivered anyway.
    }

    fn settle(&mut self, msg: &StoredMessage) {
        self.log.settle_persistent(msg);
    }

    fn commit(&mut self, refused: &[u64], awaits_flush: bool) -> Unwritten {
        let _ = self.log.commit();
        let unwritten = self.log.take_unwritten();
        if !unwritten.is_empty() {
            for &seq in refused {
                // A refused message whose chunk was written stays: its publish is confirmed.
                if unwritten.contains(seq) && self.ready.remove_recent(seq) {
                    // Settled, in case its chunk did reach the disk (sled refused the pointers).
                    self.log.remove(seq);
                }
            }
            self.ready.mark_unstored(|seq| unwritten.contains(seq));
        }
        if awaits_flush {
            // Staged (bodies in memory) until the flush says whether they are on disk.
            self.flushes
                .push_back(self.ready.last_staged().unwrap_or(0));
        } else if self.flushes.is_empty() {
            self.ready.unstage();
        }
        unwritten
    }

    fn flushed(&mut self, ok: bool, refused: &[u64]) {
        let upto = self.flushes.pop_front().unwrap_or(u64::MAX);
        if !ok {
            for &seq in refused {
                // Only if still ready: a consumer may have it already (then it is settled as
                // usual, and a retried publish is a duplicate: at least once).
                if self.ready.remove_recent(seq) {
                    self.log.remove(seq);
                }
            }
            // The rest of the round has no sure copy on disk: kept in memory.
            self.ready.mark_unstored(|seq| seq <= upto);
        }
        if self.flushes.is_empty() {
            self.ready.unstage();
        } else {
            self.ready.unstage_upto(upto);
        }
    }

    fn written_round(&mut self) -> Option<WrittenRound> {
        self.log.take_written()
    }

    fn snapshot_delivered(&mut self, unacked: &[u64]) {
        self.commit(&[], false);
        let mut seqs = unacked.to_vec();
        self.ready.for_each_on_disk(|seq, redelivered| {
            if redelivered {
                seqs.push(seq);
            }
        });
        self.log.disk().mark_delivered_many(self.log.id(), seqs);
    }

    fn purge(&mut self) -> usize {
        let log = &mut self.log;
        let n = self.ready.drain(|seq, _| log.remove(seq));
        self.commit(&[], false);
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

    fn rewrite(&mut self, msg: &StoredMessage) {
        if msg.message.is_persistent() {
            self.log.rewrite(msg);
        }
    }

    fn barrier(&self) -> Option<&dyn super::CommitBarrier> {
        Some(&**self.log.disk())
    }

    fn destroy(&mut self) {
        self.ready.clear();
        self.log.destroy();
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

    /// `burst` messages are published at a time (many: the queue gets deep, and packed).
    fn run(seed: u64, steps: usize, burst: u64) {
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
        let mut paged = false;
        for step in 0..steps {
            paged |= store.paged().0 > 0;
            match rng.below(10) {
                0..=3 => {
                    for _ in 0..burst {
                        let persistent = rng.below(4) != 0;
                        let m = message(next_seq, persistent);
                        model.insert(
                            next_seq,
                            Expect {
                                body: m.body_bytes(),
                                persistent,
                                delivered: false,
                            },
                        );
                        store.push(StoredMessage::new(next_seq, m, None));
                        next_seq += 1;
                    }
                }
                4 | 5 => {
                    if let Some(mut m) = store.pop() {
                        let oldest = model.keys().find(|k| !unacked.contains_key(k)).copied();
                        assert_eq!(Some(m.seq), oldest, "step {step}: delivery order");
                        let e = model
                            .get_mut(&m.seq)
                            .expect("popped a message the model lacks");
                        assert_eq!(m.message.body(), &e.body[..], "step {step}");
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
                9 if rng.below(3) == 0 => {
                    // A round during which the disk fills (after 0 to 2 chunks): the
                    // publishes whose chunk was not written are refused and taken out of the
                    // queue, the others stay; nothing else changes.
                    let faults = disk.as_ref().unwrap().faults().clone();
                    faults.fail_writes_after(rng.below(3));
                    let mut refused = Vec::new();
                    let mut bodies = HashMap::new();
                    for _ in 0..=rng.below(burst) {
                        let m = message(next_seq, true);
                        bodies.insert(next_seq, m.body_bytes());
                        store.push(StoredMessage::new(next_seq, m, None));
                        refused.push(next_seq);
                        next_seq += 1;
                    }
                    let unwritten = store.commit(&refused, false);
                    faults.fail_writes(false);
                    for seq in refused.into_iter().filter(|&seq| !unwritten.contains(seq)) {
                        model.insert(
                            seq,
                            Expect {
                                body: bodies.remove(&seq).unwrap(),
                                persistent: true,
                                delivered: false,
                            },
                        );
                    }
                }
                9 if rng.below(2) == 0 => {
                    // Unclean restart (a crash after the last flush): every recovered
                    // message is flagged redelivered; transient ones are gone.
                    let d = disk.take().unwrap();
                    assert!(d.flush().is_ok());
                    drop(store);
                    drop(d);
                    let (d, rec) = reopen(&dir);
                    assert!(rec.unclean, "step {step}: a crash is seen as unclean");
                    let (s, next) = DurableQueueStore::recover(d.clone(), 1, true);
                    disk = Some(d);
                    store = s;
                    unacked.clear();
                    model.retain(|_, e| e.persistent);
                    for e in model.values_mut() {
                        e.delivered = true;
                    }
                    next_seq = next_seq.max(next);
                    assert_eq!(store.len(), model.len(), "step {step}: recovered count");
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
            assert!(
                store.commit(&[], false).is_empty(),
                "step {step}: commit failed"
            );
            let ready = model.len() - unacked.len();
            assert_eq!(store.len(), ready, "step {step}: ready count");
        }
        assert!(
            paged || burst < 400,
            "a deep run pages (PAGE_AFTER is small in tests)"
        );
        // Delete: nothing of the queue is left on disk.
        store.destroy();
        let d = disk.take().unwrap();
        assert_eq!(d.msgs().scan_prefix(&1u64.to_be_bytes()).count(), 0);
        drop(store);
        drop(d);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Publishes `n` persistent messages from `first` and commits them.
    fn publish(store: &mut DurableQueueStore, first: u64, n: u64) {
        for seq in first..first + n {
            store.push(StoredMessage::new(seq, message(seq, true), None));
        }
        assert!(store.commit(&[], false).is_empty());
    }

    fn recovered_seqs(dir: &std::path::Path) -> Vec<u64> {
        let (d, rec) = reopen(dir);
        assert!(rec.unclean);
        let (mut s, _) = DurableQueueStore::recover(d.clone(), 1, true);
        let mut seqs = Vec::new();
        while let Some(m) = s.pop() {
            assert!(m.redelivered, "recovered after a crash: redelivered");
            assert_eq!(m.message.body_bytes(), message(m.seq, true).body_bytes());
            seqs.push(m.seq);
        }
        seqs
    }

    #[test]
    fn a_power_loss_loses_only_what_no_flush_confirmed() {
        let dir =
            std::env::temp_dir().join(format!("warren-power-{}", crate::util::random_token(10)));
        let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
        let mut store = DurableQueueStore::new(disk.clone(), 1);
        publish(&mut store, 1, 300);
        assert!(disk.flush().is_ok(), "the first 300 are confirmed");
        publish(&mut store, 301, 200);
        // Written to the OS, never synced: a power loss takes their bytes, while sled (which
        // writes in the background) may keep the pointers to them.
        disk.segments().drop_unsynced();
        assert!(disk.db_flush_for_tests());
        drop(store);
        drop(disk);
        let seqs = recovered_seqs(&dir);
        assert_eq!(
            seqs,
            (1..=300).collect::<Vec<_>>(),
            "every confirmed message, and none whose bytes were lost (CRC-checked pointers)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_is_refused_and_leaves_no_segment_behind() {
        let dir =
            std::env::temp_dir().join(format!("warren-full-{}", crate::util::random_token(10)));
        let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
        let mut store = DurableQueueStore::new(disk.clone(), 1);
        publish(&mut store, 1, 10);
        let segments = disk.segments().count();
        disk.faults().fail_writes(true);
        for seq in 11..=60 {
            store.push(StoredMessage::new(seq, message(seq, true), None));
            assert!(
                store.commit(&[seq], false).contains(seq),
                "a failed write does not commit"
            );
        }
        assert_eq!(store.len(), 10, "refused publishes are not in the queue");
        assert_eq!(
            disk.segments().count(),
            segments,
            "no new segment per failure"
        );
        disk.faults().fail_writes(false);
        publish(&mut store, 61, 10);
        assert!(disk.flush().is_ok());
        drop(store);
        drop(disk);
        let seqs = recovered_seqs(&dir);
        assert_eq!(
            seqs,
            (1..=10).chain(61..=70).collect::<Vec<_>>(),
            "the half-written chunks were cut off; the next writes read back"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_round_whose_disk_fills_midway_refuses_only_the_unwritten_chunks() {
        let dir =
            std::env::temp_dir().join(format!("warren-midway-{}", crate::util::random_token(10)));
        let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
        let mut store = DurableQueueStore::new(disk.clone(), 1);
        publish(&mut store, 1, 10);
        // One round of 100 messages (about 90 KB: three chunks); the disk fills after the first.
        let round: Vec<u64> = (11..=110).collect();
        for &seq in &round {
            store.push(StoredMessage::new(seq, message(seq, true), None));
        }
        disk.faults().fail_writes_after(1);
        let unwritten = store.commit(&round, false);
        disk.faults().fail_writes(false);
        let (refused, kept): (Vec<u64>, Vec<u64>) =
            round.iter().partition(|&&seq| unwritten.contains(seq));
        assert!(!refused.is_empty(), "the later chunks were not written");
        assert!(!kept.is_empty(), "the first chunk was written");
        assert_eq!(kept, (11..11 + kept.len() as u64).collect::<Vec<_>>());
        assert_eq!(
            store.len(),
            10 + kept.len(),
            "refused publishes are not in the queue, written ones are"
        );
        assert!(disk.flush().is_ok());
        drop(store);
        drop(disk);
        // What was refused (nacked) never comes back; what was written (confirmed) does.
        let seqs = recovered_seqs(&dir);
        assert_eq!(seqs, (1..=10).chain(kept).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_flush_takes_its_refused_publishes_out_for_good() {
        for flush_ok in [false, true] {
            let dir = std::env::temp_dir().join(format!(
                "warren-flushfail-{}",
                crate::util::random_token(10)
            ));
            let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
            let mut store = DurableQueueStore::new(disk.clone(), 1);
            publish(&mut store, 1, 10);
            assert!(disk.flush().is_ok());
            // A round deep enough that most of it is staged (packed once flushed).
            let last = 10 + HOT_MAX as u64 + 100;
            let round: Vec<u64> = (11..=last).collect();
            for &seq in &round {
                store.push(StoredMessage::new(seq, message(seq, true), None));
            }
            assert!(store.commit(&round, true).is_empty());
            assert_eq!(store.len(), last as usize);
            disk.faults().fail_syncs(!flush_ok);
            assert_eq!(disk.flush().is_ok(), flush_ok);
            disk.faults().fail_syncs(false);
            store.flushed(flush_ok, if flush_ok { &[] } else { &round });
            let expected: Vec<u64> = if flush_ok {
                (1..=last).collect()
            } else {
                (1..=10).collect()
            };
            assert_eq!(store.len(), expected.len(), "flush ok: {flush_ok}");
            // The refused ones are settled on disk too: they do not come back after a crash.
            assert!(store.commit(&[], false).is_empty());
            assert!(disk.flush().is_ok());
            drop(store);
            drop(disk);
            assert_eq!(recovered_seqs(&dir), expected, "flush ok: {flush_ok}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_failed_flush_voids_its_nacked_chunks_even_if_the_disk_stays_full() {
        // The flush of a round fails; the disk stays full, so the settling of its refused
        // publishes never reaches the disk, while sled writes the round's chunk pointers
        // anyway (here: a flush that works for sled alone). Only a chunk whose messages were
        // all refused is voided: a message published without a confirm keeps its chunk.
        for all_refused in [true, false] {
            let dir = std::env::temp_dir()
                .join(format!("warren-voided-{}", crate::util::random_token(10)));
            let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
            let mut store = DurableQueueStore::new(disk.clone(), 1);
            publish(&mut store, 1, 10);
            assert!(disk.flush().is_ok());
            let round: Vec<u64> = (11..=40).collect();
            for &seq in &round {
                store.push(StoredMessage::new(seq, message(seq, true), None));
            }
            let refused = if all_refused {
                &round[..]
            } else {
                &round[..round.len() - 1]
            };
            assert!(store.commit(refused, true).is_empty());
            let written = store.written_round().expect("the round wrote a chunk");
            assert!(store.written_round().is_none(), "taken once");
            disk.faults().fail_syncs(true);
            assert!(disk.flush().is_err());
            disk.faults().fail_syncs(false);
            written.void_refused(refused);
            store.flushed(false, refused);
            // What sled wrote before failing: the round's pointers, not the settling.
            assert!(disk.flush().is_ok());
            drop((written, store, disk));
            let back = recovered_seqs(&dir);
            if all_refused {
                assert_eq!(
                    back,
                    (1..=10).collect::<Vec<_>>(),
                    "no nacked message is back"
                );
            } else {
                assert!(
                    back.contains(&40),
                    "the unconfirmed publish keeps its chunk: {back:?}"
                );
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn store_matches_a_simple_model_across_restarts() {
        for seed in 1..=8 {
            run(seed * 7919, 400, 1);
        }
    }

    #[test]
    fn deep_store_matches_a_simple_model_across_restarts() {
        for seed in 1..=3 {
            run(seed * 104_729, 300, 60);
        }
    }

    #[test]
    fn a_paging_store_matches_a_simple_model_across_restarts() {
        for seed in 1..=2 {
            run(seed * 15_485_863, 200, 400);
        }
    }
}
