//! One durable queue's messages on disk, written in chunks.
//!
//! A delivery round's persistent publishes go to disk as one record (a *chunk*, up to
//! [`CHUNK_MAX`] bytes), not one sled key each, and a round's settlements as one *ack record*
//! listing their sequence numbers; a chunk whose messages are all settled is deleted, and an
//! ack record once every chunk it names is gone. sled then does a few operations per round
//! instead of two per message, and holds one key per chunk rather than per message. Keys, in
//! the shared `msgs` tree (big-endian, so each queue is one ordered key range):
//!
//! - `queue id, 0, first seq`: a chunk's [`Pointer`] into the segment files (see
//!   [`super::segments`]) that hold its bytes: format byte, then per message its sequence
//!   number (u64), record length (u32) and record (see [`super::record`]). Stores
//!   written before segments existed hold the chunk's bytes here instead (still read);
//! - `queue id, 1, ack id`: an ack record: format byte, then the settled sequence numbers as
//!   varint deltas. Ack ids are unique in the store; a queue that takes over a dead-lettered
//!   message writes the ack record of the source queue in the same batch as its own copy;
//! - `queue id, 2, seq`: a rewritten message (its delivery count changed), which replaces the
//!   chunk's copy.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::disk::Disk;
use super::kv::Batch;
use super::record::{
    chunk_entries, decode_acks, decode_message, encode_acks, encode_message, key_n, log_key,
    CHUNK_FORMAT, KIND_ACKS, KIND_CHUNK, KIND_OVERRIDE,
};
use super::segments::Pointer;
use crate::message::Message;
use crate::store::{StoredMessage, Unwritten};

/// A chunk is closed once it holds this many bytes (larger messages get a chunk each).
pub const CHUNK_MAX: usize = 32 * 1024;

/// A chunk on disk with messages not yet settled.
#[derive(Debug)]
struct Chunk {
    /// Its last sequence number.
    last: u64,
    /// Messages not yet settled.
    live: u32,
    /// Ack records that name some of its messages (deleted with it once nothing else needs
    /// them).
    acks: Vec<u64>,
    /// Where its bytes are.
    place: Place,
}

/// Where a chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Closed this round, in [`QueueLog::pending`]: written at commit unless it died by then.
    Pending,
    /// In a segment file, pointed at by its sled record.
    Segment(Pointer),
    /// In its sled record (stores written before segments existed).
    Inline,
}

/// A chunk a commit wrote to a segment file.
#[derive(Debug, Clone, Copy)]
struct WrittenChunk {
    ptr: Pointer,
    first: u64,
    last: u64,
    /// Messages in it.
    count: u32,
}

/// The chunks one round of a queue wrote, kept until the flush that confirms them.
///
/// When that flush fails, the round's publishes are nacked and taken out of the queue, and
/// the queue settles them on disk with its next commit. But a disk that stays full fails
/// that commit's flush too, while sled may already have written the round's chunk pointers
/// before failing (it writes its log in the background and in pieces): a crash then would
/// bring nacked messages back, and a publisher that retried them would see duplicates. So a
/// chunk holding only refused messages is voided in place before the nacks go out: one byte
/// of it is overwritten (no new space needed) and synced, and recovery, finding its CRC
/// wrong, skips it.
pub struct WrittenRound {
    disk: Arc<Disk>,
    chunks: Vec<WrittenChunk>,
}

impl WrittenRound {
    /// After a failed flush: voids each chunk of the round whose messages were all refused
    /// (`refused`: their sequence numbers, ascending). A chunk holding anything else (a
    /// publish without confirms, a dead-lettered copy whose source was settled in the same
    /// batch) is left alone: that message stays as durable as the disk lets it be.
    pub fn void_refused(&self, refused: &[u64]) {
        let mut sorted = Vec::new();
        let refused = if refused.is_sorted() {
            refused
        } else {
            sorted.extend_from_slice(refused);
            sorted.sort_unstable();
            &sorted
        };
        for c in &self.chunks {
            let from = refused.partition_point(|&s| s < c.first);
            let to = refused.partition_point(|&s| s <= c.last);
            if (to - from) as u64 != u64::from(c.count) {
                continue;
            }
            if let Err(e) = self.disk.segments().void(&c.ptr) {
                // Logged without the messages: the nack already tells their publisher.
                tracing::error!(chunk = c.first, error = %e,
                    "cannot void the chunk of nacked messages: they may come back after a crash");
            } else {
                tracing::warn!(
                    chunk = c.first,
                    messages = c.count,
                    "flush failed: the chunk of its nacked messages is voided on disk"
                );
            }
        }
    }
}

/// A message found at recovery.
pub struct Found<'a> {
    pub seq: u64,
    /// Delivered before the stop (or the stop was a crash).
    pub redelivered: bool,
    /// Its stored record.
    pub record: &'a [u8],
}

/// The disk side of one durable queue. Owned by the queue's task, like everything else of
/// the queue; writes are gathered into one sled batch per round and applied by `commit`.
pub struct QueueLog {
    disk: Arc<Disk>,
    id: u64,
    batch: Batch,
    /// `batch` holds something.
    dirty: bool,
    /// The chunk being filled this round, with its first sequence number and size.
    open: Vec<u8>,
    open_first: u64,
    open_last: u64,
    open_count: u32,
    /// Chunks with live messages, by first sequence number.
    chunks: BTreeMap<u64, Chunk>,
    /// Messages settled this round.
    settled: Vec<u64>,
    /// Messages taken over by other queues this round (their ack records are written).
    taken: Vec<u64>,
    /// For each ack record naming messages of this queue: how many live chunks it names.
    ack_refs: HashMap<u64, u32>,
    /// Messages with a rewritten copy.
    overrides: HashSet<u64>,
    /// The chunk last read back, with a cursor (offset, sequence number of the entry there),
    /// so a queue draining in order reads each chunk once and walks it once.
    cache: Option<(u64, Vec<u8>, usize)>,
    /// Chunks closed this round, by first sequence number, with their bytes and how many
    /// messages they hold.
    pending: Vec<(u64, Vec<u8>, u32)>,
    /// Chunks written to the segment files since the last [`take_written`](Self::take_written).
    written: Vec<WrittenChunk>,
    /// What the commits since the last [`take_unwritten`](Self::take_unwritten) could not
    /// store.
    unwritten: Unwritten,
    /// Ack records of other queues' messages written this round ([`settle_foreign`]), with
    /// the sequence number of this queue's copy: taken back out of the batch if that copy's
    /// chunk could not be written, so a source never settles a message whose new copy is not
    /// on disk.
    ///
    /// [`settle_foreign`]: Self::settle_foreign
    foreign: Vec<([u8; 17], Option<u64>)>,
}

/// What one [`QueueLog::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Commit {
    /// Every chunk of the round reached the segment files.
    pub chunks_written: bool,
    /// sled took the round's records (chunk pointers, ack records).
    pub records_applied: bool,
}

impl Commit {
    /// Everything was stored.
    pub fn ok(self) -> bool {
        self.chunks_written && self.records_applied
    }
}

impl QueueLog {
    /// The log of a new, empty queue.
    pub fn new(disk: Arc<Disk>, id: u64) -> Self {
        QueueLog {
            disk,
            id,
            batch: Batch::default(),
            dirty: false,
            open: Vec::new(),
            open_first: 0,
            open_last: 0,
            open_count: 0,
            chunks: BTreeMap::new(),
            settled: Vec::new(),
            taken: Vec::new(),
            ack_refs: HashMap::new(),
            overrides: HashSet::new(),
            cache: None,
            pending: Vec::new(),
            written: Vec::new(),
            unwritten: Unwritten::default(),
            foreign: Vec::new(),
        }
    }

    /// The store this log writes to.
    pub fn disk(&self) -> &Arc<Disk> {
        &self.disk
    }

    /// The queue's id in the store.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Writes a persistent message (to disk with this round's `commit`).
    pub fn write(&mut self, msg: &StoredMessage) {
        let rec = encode_message(msg);
        if self.open_count > 0 && self.open.len() + 12 + rec.len() > CHUNK_MAX {
            self.close_chunk();
        }
        if self.open_count == 0 {
            self.open.clear();
            self.open.push(CHUNK_FORMAT);
            self.open_first = msg.seq;
        }
        self.open.extend_from_slice(&msg.seq.to_be_bytes());
        self.open
            .extend_from_slice(&(rec.len() as u32).to_be_bytes());
        self.open.extend_from_slice(&rec);
        self.open_last = msg.seq;
        self.open_count += 1;
    }

    fn close_chunk(&mut self) {
        if self.open_count == 0 {
            return;
        }
        let count = std::mem::take(&mut self.open_count);
        self.pending
            .push((self.open_first, std::mem::take(&mut self.open), count));
        self.chunks.insert(
            self.open_first,
            Chunk {
                last: self.open_last,
                live: count,
                acks: Vec::new(),
                place: Place::Pending,
            },
        );
    }

    /// Writes the chunks closed this round that still hold live messages to the segment
    /// files, and their pointers to this round's batch.
    fn write_pending(&mut self) {
        for (first, mut bytes, count) in std::mem::take(&mut self.pending) {
            if let Some(chunk) = self.chunks.get_mut(&first) {
                match self.disk.segments().append(&bytes) {
                    Ok(ptr) => {
                        chunk.place = Place::Segment(ptr);
                        self.written.push(WrittenChunk {
                            ptr,
                            first,
                            last: chunk.last,
                            count,
                        });
                        self.batch
                            .insert(&log_key(self.id, KIND_CHUNK, first)[..], &ptr.encode()[..]);
                        self.dirty = true;
                    }
                    Err(e) => {
                        tracing::error!(queue = self.id, error = %e, "cannot write messages to disk");
                        self.unwritten.add_range(first, chunk.last);
                        self.forget_chunk(first);
                    }
                }
            } // else: settled before it was written
            if self.open.capacity() == 0 {
                // The next round's chunk fills this buffer again instead of growing a new one.
                bytes.clear();
                self.open = bytes;
            }
        }
    }

    /// Drops a chunk none of whose messages is needed any more, with its segment reference,
    /// its record and the ack records only it needed.
    fn forget_chunk(&mut self, first: u64) {
        let Some(c) = self.chunks.remove(&first) else {
            return;
        };
        if let Place::Segment(ptr) = c.place {
            self.disk.segments().release(&ptr);
        }
        if c.place != Place::Pending {
            self.batch.remove(&log_key(self.id, KIND_CHUNK, first)[..]);
            self.dirty = true;
        }
        for ack in c.acks {
            if let Some(n) = self.ack_refs.get_mut(&ack) {
                *n -= 1;
                if *n == 0 {
                    self.ack_refs.remove(&ack);
                    self.batch.remove(&log_key(self.id, KIND_ACKS, ack)[..]);
                    self.dirty = true;
                }
            }
        }
        if self.cache.as_ref().is_some_and(|(f, _, _)| *f == first) {
            self.cache = None;
        }
    }

    /// Writes `msg` if it is persistent (transient messages stay in memory, as RabbitMQ
    /// keeps them); whether it did.
    pub fn write_persistent(&mut self, msg: &StoredMessage) -> bool {
        let persistent = msg.message.is_persistent();
        if persistent {
            self.write(msg);
        }
        persistent
    }

    /// Settles `msg` on disk if it was written there (persistent).
    pub fn settle_persistent(&mut self, msg: &StoredMessage) {
        if msg.message.is_persistent() {
            self.remove(msg.seq);
        }
    }

    /// Takes over dead-lettered message `from` (queue id, sequence) of another queue as `msg`:
    /// this copy (if persistent) and the source's ack record are committed together. `None`
    /// if neither was stored (the source keeps its copy; this one is in memory only); else
    /// whether the copy was written, and the ack record's id for the source's `taken_over`.
    pub fn take_over(&mut self, msg: &StoredMessage, from: (u64, u64)) -> Option<(bool, u64)> {
        let written = self.write_persistent(msg);
        let ack = self.settle_foreign(from, written.then_some(msg.seq));
        let commit = self.commit();
        // (What else this commit could not store is the round's commit's to report.)
        let stored = commit.records_applied && !(written && self.chunk_failed(msg.seq));
        stored.then_some((written, ack))
    }

    /// Settles dead-lettered message `from` of another queue that this one refused (length
    /// limit); the ack record's id, if it was stored.
    pub fn refuse(&mut self, from: (u64, u64)) -> Option<u64> {
        let ack = self.settle_foreign(from, None);
        self.commit().records_applied.then_some(ack)
    }

    /// A stored message was settled (acked, dropped, dead-lettered without a durable taker).
    pub fn remove(&mut self, seq: u64) {
        self.settled.push(seq);
        if self.overrides.remove(&seq) {
            self.batch.remove(&log_key(self.id, KIND_OVERRIDE, seq)[..]);
            self.dirty = true;
        }
    }

    /// Rewrites a stored message whose content changed.
    pub fn rewrite(&mut self, msg: &StoredMessage) {
        self.batch.insert(
            &log_key(self.id, KIND_OVERRIDE, msg.seq)[..],
            encode_message(msg),
        );
        self.overrides.insert(msg.seq);
        self.dirty = true;
    }

    /// Another queue took over message `seq` of this queue and wrote ack record `ack` for it,
    /// atomically with its own copy.
    pub fn taken_over(&mut self, seq: u64, ack: u64) {
        if let Some(c) = self.chunk_of(seq) {
            c.acks.push(ack);
            *self.ack_refs.entry(ack).or_default() += 1;
            self.taken.push(seq);
        }
        if self.overrides.remove(&seq) {
            self.batch.remove(&log_key(self.id, KIND_OVERRIDE, seq)[..]);
            self.dirty = true;
        }
    }

    /// Writes, in this round's batch, the ack record of message `from` (queue id, sequence)
    /// of another queue, whose copy here is message `copy` (written this round), if it has
    /// one; returns the record's id, for that queue's [`taken_over`](Self::taken_over).
    pub fn settle_foreign(&mut self, from: (u64, u64), copy: Option<u64>) -> u64 {
        let ack = self.disk.new_id();
        let key = log_key(from.0, KIND_ACKS, ack);
        self.batch.insert(&key[..], encode_acks(&[from.1]));
        self.foreign.push((key, copy));
        self.dirty = true;
        ack
    }

    fn chunk_of(&mut self, seq: u64) -> Option<&mut Chunk> {
        self.chunks
            .range_mut(..=seq)
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| c.last >= seq)
    }

    /// Writes this round's chunks and applies its records to sled (the next flush makes them
    /// durable). What was not stored is kept for [`take_unwritten`](Self::take_unwritten).
    pub fn commit(&mut self) -> Commit {
        self.close_chunk();
        if !self.settled.is_empty() || !self.taken.is_empty() {
            self.settle_round();
        }
        let failed_before = self.unwritten.ranges.len();
        self.write_pending();
        let chunks_written = self.unwritten.ranges.len() == failed_before;
        if !chunks_written {
            for (key, copy) in &self.foreign {
                if copy.is_some_and(|seq| self.unwritten.in_failed_chunk(seq)) {
                    self.batch.forget(&key[..]);
                }
            }
        }
        self.foreign.clear();
        let mut records_applied = true;
        if self.dirty {
            self.dirty = false;
            let applied = self.disk.apply(std::mem::take(&mut self.batch));
            if let Err(e) = &applied {
                tracing::error!(queue = self.id, error = %e, "cannot write message records");
            }
            records_applied = applied.is_ok();
            if !records_applied {
                self.unwritten.set_all();
            }
        }
        Commit {
            chunks_written,
            records_applied,
        }
    }

    /// Whether message `seq`, written since the last [`take_unwritten`](Self::take_unwritten),
    /// was in a chunk that could not be written.
    pub fn chunk_failed(&self, seq: u64) -> bool {
        self.unwritten.in_failed_chunk(seq)
    }

    /// What the commits since the last call could not store.
    pub fn take_unwritten(&mut self) -> Unwritten {
        std::mem::take(&mut self.unwritten)
    }

    /// The chunks the commits since the last call wrote to the segment files, if any: what
    /// a failed flush of them must undo (see [`WrittenRound::void_refused`]).
    pub fn take_written(&mut self) -> Option<WrittenRound> {
        (!self.written.is_empty()).then(|| WrittenRound {
            disk: Arc::clone(&self.disk),
            chunks: std::mem::take(&mut self.written),
        })
    }

    fn settle_round(&mut self) {
        let mut settled = std::mem::take(&mut self.settled);
        settled.sort_unstable();
        settled.dedup();
        let mut acked = Vec::with_capacity(settled.len());
        let mut touched: Vec<u64> = Vec::new();
        let mut dead: Vec<u64> = Vec::new();
        for seq in std::mem::take(&mut self.taken) {
            if let Some((&first, c)) = self
                .chunks
                .range_mut(..=seq)
                .next_back()
                .filter(|(_, c)| c.last >= seq)
            {
                c.live = c.live.saturating_sub(1);
                if c.live == 0 {
                    dead.push(first);
                }
            }
        }
        for &seq in &settled {
            let Some((&first, c)) = self
                .chunks
                .range_mut(..=seq)
                .next_back()
                .filter(|(_, c)| c.last >= seq)
            else {
                continue;
            };
            c.live = c.live.saturating_sub(1);
            if c.live == 0 {
                dead.push(first);
            } else {
                acked.push(seq);
                if touched.last() != Some(&first) {
                    touched.push(first);
                }
            }
        }
        // Seqs whose chunk dies this round need no ack record.
        touched.retain(|f| !dead.contains(f));
        acked.retain(|&seq| {
            let first = self.chunks.range(..=seq).next_back().map(|(f, _)| *f);
            first.is_some_and(|f| touched.contains(&f))
        });
        if !acked.is_empty() {
            let ack = self.disk.new_id();
            self.batch
                .insert(&log_key(self.id, KIND_ACKS, ack)[..], encode_acks(&acked));
            self.dirty = true;
            self.ack_refs.insert(ack, touched.len() as u32);
            for f in &touched {
                if let Some(c) = self.chunks.get_mut(f) {
                    c.acks.push(ack);
                }
            }
        }
        for first in dead {
            self.forget_chunk(first);
        }
    }

    /// Reads a stored message back (one whose body is no longer in memory).
    pub fn read(&mut self, seq: u64) -> Option<Message> {
        if self.overrides.contains(&seq) {
            let v = self
                .disk
                .msgs()
                .get(&log_key(self.id, KIND_OVERRIDE, seq))
                .ok()??;
            return decode_message(&v);
        }
        let (&first, chunk) = self.chunks.range(..=seq).next_back()?;
        if self.cache.as_ref().is_none_or(|(f, _, _)| *f != first) {
            let v = match chunk.place {
                Place::Segment(ptr) => self.disk.segments().read(&ptr)?,
                Place::Inline => self
                    .disk
                    .msgs()
                    .get(&log_key(self.id, KIND_CHUNK, first))
                    .ok()??,
                // Not written yet: its messages are still in memory.
                Place::Pending => return None,
            };
            self.cache = Some((first, v, 1));
        }
        let (_, chunk, cursor) = self.cache.as_mut()?;
        // Usually the entry at the cursor; else walk the chunk from its start.
        for start in [*cursor, 1] {
            let mut at = start;
            while let Some(head) = chunk.get(at..at + 12) {
                let s = u64::from_be_bytes(head[..8].try_into().ok()?);
                let len = u32::from_be_bytes(head[8..].try_into().ok()?) as usize;
                let next = at + 12 + len;
                if s == seq {
                    let m = decode_message(chunk.get(at + 12..next)?);
                    *cursor = next;
                    return m;
                }
                if s > seq {
                    break;
                }
                at = next;
            }
        }
        None
    }

    /// Forgets every message of the queue, on disk too (the queue is deleted).
    pub fn destroy(&mut self) {
        for c in self.chunks.values() {
            if let Place::Segment(ptr) = c.place {
                self.disk.segments().release(&ptr);
            }
        }
        self.pending.clear();
        self.batch = Batch::default();
        self.dirty = false;
        self.open_count = 0;
        self.settled.clear();
        self.taken.clear();
        self.chunks.clear();
        self.ack_refs.clear();
        self.overrides.clear();
        self.cache = None;
        self.disk.purge(self.id);
    }

    /// Reads the queue's messages in order, for recovery, calling `f` for each live one, and
    /// deletes what is no longer needed (settled chunks, ack records, rewrites). After an
    /// unclean stop every message is flagged redelivered: a delivery may have happened whose
    /// mark never reached the disk.
    pub fn recover(disk: Arc<Disk>, id: u64, unclean: bool, mut f: impl FnMut(Found)) -> Self {
        let mut log = QueueLog::new(disk.clone(), id);
        let msgs = disk.msgs();
        let prefix = |kind: u8| {
            let mut p = [0u8; 9];
            p[..8].copy_from_slice(&id.to_be_bytes());
            p[8] = kind;
            p
        };
        // seq -> the ack record that settled it
        let mut acked: HashMap<u64, u64> = HashMap::new();
        let mut acks_seen: Vec<u64> = Vec::new();
        for (k, v) in msgs.scan_prefix(&prefix(KIND_ACKS)).flatten() {
            let Some(ack) = key_n(&k) else { continue };
            acks_seen.push(ack);
            for seq in decode_acks(&v) {
                acked.insert(seq, ack);
            }
        }
        let mut overrides: HashMap<u64, Vec<u8>> = HashMap::new();
        for (k, v) in msgs.scan_prefix(&prefix(KIND_OVERRIDE)).flatten() {
            if let Some(seq) = key_n(&k) {
                overrides.insert(seq, v);
            }
        }
        let delivered = disk.delivered_marks(id);
        let mut cleanup = Batch::default();
        for (k, v) in msgs.scan_prefix(&prefix(KIND_CHUNK)).flatten() {
            let Some(first) = key_n(&k) else { continue };
            // The bytes are read into a buffer of ours and dropped after the walk: scanning
            // them through sled would leave them in its memory.
            let (place, bytes) = match Pointer::decode(&v) {
                Some(ptr) => match disk.segments().read(&ptr) {
                    Some(bytes) => (Place::Segment(ptr), Cow::Owned(bytes)),
                    None => {
                        // Its segment is gone (every message in it was settled before a crash
                        // let the record outlive it) or, after a power loss, its bytes never
                        // reached the disk (then none of them was confirmed).
                        tracing::warn!(
                            queue = id,
                            chunk = first,
                            "message chunk unreadable, skipped"
                        );
                        cleanup.remove(k);
                        continue;
                    }
                },
                None => (Place::Inline, Cow::Borrowed(&v[..])),
            };
            let mut chunk = Chunk {
                last: first,
                live: 0,
                acks: Vec::new(),
                place,
            };
            for (seq, rec) in chunk_entries(&bytes) {
                chunk.last = seq;
                if let Some(&ack) = acked.get(&seq) {
                    if !chunk.acks.contains(&ack) {
                        chunk.acks.push(ack);
                    }
                    continue;
                }
                chunk.live += 1;
                let record = overrides.get(&seq).map_or(rec, |o| &o[..]);
                f(Found {
                    seq,
                    redelivered: unclean || delivered.contains(&seq),
                    record,
                });
            }
            if chunk.live == 0 {
                cleanup.remove(k);
                continue;
            }
            if let Place::Segment(ptr) = place {
                disk.segments().retain(&ptr);
            }
            for &ack in &chunk.acks {
                *log.ack_refs.entry(ack).or_default() += 1;
            }
            log.chunks.insert(first, chunk);
        }
        for ack in acks_seen {
            if !log.ack_refs.contains_key(&ack) {
                cleanup.remove(&log_key(id, KIND_ACKS, ack)[..]);
            }
        }
        for seq in overrides.into_keys() {
            if acked.contains_key(&seq) || !log.holds(seq) {
                cleanup.remove(&log_key(id, KIND_OVERRIDE, seq)[..]);
            } else {
                log.overrides.insert(seq);
            }
        }
        if let Err(e) = disk.apply(cleanup) {
            // Left for the next start to clean up: recovery reads the same either way.
            tracing::warn!(queue = id, error = %e, "cannot delete settled records");
        }
        disk.clear_delivered_marks(id);
        log
    }

    fn holds(&self, seq: u64) -> bool {
        self.chunks
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, c)| c.last >= seq)
    }

    /// Chunks on disk with live messages (for tests and figures).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_properties;
    use crate::store::record::record_meta;
    use amq_protocol::protocol::BasicProperties;
    use std::path::{Path, PathBuf};

    fn msg(seq: u64) -> StoredMessage {
        msg_with_body(seq, bytes::Bytes::from(format!("m{seq}")))
    }

    fn msg_with_body(seq: u64, body: bytes::Bytes) -> StoredMessage {
        let props = BasicProperties::default().with_delivery_mode(2);
        StoredMessage::new(
            seq,
            Arc::new(Message::new(
                "".into(),
                "q".into(),
                &props,
                encode_properties(&props),
                body,
            )),
            None,
        )
    }

    fn tempdir() -> PathBuf {
        std::env::temp_dir().join(format!("warren-log-{}", crate::util::random_token(10)))
    }

    /// Opens the store, waiting for a previous handle's background threads to let go.
    fn open(dir: &Path) -> Arc<Disk> {
        for _ in 0..100 {
            if let Ok((d, _)) = Disk::open(dir, 1 << 20) {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("cannot reopen {}", dir.display());
    }

    fn records_of(disk: &Disk, queue: u64) -> usize {
        disk.msgs().scan_prefix(&queue.to_be_bytes()).count()
    }

    fn recovered(disk: &Arc<Disk>, queue: u64) -> (QueueLog, Vec<u64>) {
        let mut seqs = Vec::new();
        let log = QueueLog::recover(disk.clone(), queue, false, |f| seqs.push(f.seq));
        (log, seqs)
    }

    #[test]
    fn settled_chunks_and_their_ack_records_are_deleted() {
        let dir = tempdir();
        let disk = open(&dir);
        let mut log = QueueLog::new(disk.clone(), 3);
        for seq in 1..=10 {
            log.write(&msg(seq));
        }
        assert!(log.commit().ok());
        assert_eq!(records_of(&disk, 3), 1, "one chunk for the round");
        for seq in 1..=5 {
            log.remove(seq);
        }
        assert!(log.commit().ok());
        assert_eq!(records_of(&disk, 3), 2, "the chunk and one ack record");
        for seq in 6..=10 {
            log.remove(seq);
        }
        assert!(log.commit().ok());
        assert_eq!(records_of(&disk, 3), 0);
        drop((log, disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_round_published_and_settled_writes_nothing() {
        let dir = tempdir();
        let disk = open(&dir);
        let mut log = QueueLog::new(disk.clone(), 4);
        for seq in 1..=3 {
            log.write(&msg(seq));
            log.remove(seq);
        }
        assert!(log.commit().ok());
        assert_eq!(records_of(&disk, 4), 0);
        assert_eq!(disk.segments().count(), 0, "no chunk bytes written either");
        drop((log, disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_written_before_segments_recovers_its_inline_chunks() {
        let dir = tempdir();
        {
            let disk = open(&dir);
            // A chunk as format-2 stores kept it: its bytes in the sled record.
            let mut chunk = vec![CHUNK_FORMAT];
            for seq in 1..=3 {
                let rec = encode_message(&msg(seq));
                chunk.extend_from_slice(&seq.to_be_bytes());
                chunk.extend_from_slice(&(rec.len() as u32).to_be_bytes());
                chunk.extend_from_slice(&rec);
            }
            disk.msgs()
                .insert(&log_key(8, KIND_CHUNK, 1), &chunk)
                .unwrap();
            disk.flush().unwrap();
        }
        let disk = open(&dir);
        let (mut log, seqs) = recovered(&disk, 8);
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(log.read(2).unwrap().body(), b"m2");
        log.remove(1);
        log.remove(2);
        log.remove(3);
        assert!(log.commit().ok());
        assert_eq!(
            records_of(&disk, 8),
            0,
            "the settled inline chunk is deleted"
        );
        drop((log, disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn segments_go_once_their_messages_are_settled_or_their_queue_deleted() {
        let big = |seq: u64| msg_with_body(seq, bytes::Bytes::from(vec![seq as u8; 60 * 1024]));
        let dir = tempdir();
        let disk = open(&dir);
        let segment_msgs = super::super::segments::SEGMENT_MAX / (60 * 1024) + 1;
        let mut a = QueueLog::new(disk.clone(), 9);
        for seq in 1..=segment_msgs * 2 {
            a.write(&big(seq));
            assert!(a.commit().ok());
        }
        assert!(
            disk.segments().count() >= 2,
            "more than one segment written"
        );
        for seq in 1..=segment_msgs * 2 {
            a.remove(seq);
        }
        assert!(a.commit().ok());
        assert_eq!(
            disk.segments().count(),
            1,
            "only the segment still appended to is kept"
        );
        let mut b = QueueLog::new(disk.clone(), 10);
        for seq in 1..=segment_msgs {
            b.write(&big(seq));
            assert!(b.commit().ok());
        }
        let before = disk.segments().count();
        assert!(before >= 2);
        b.destroy();
        assert_eq!(
            disk.segments().count(),
            1,
            "a deleted queue lets its segments go"
        );
        drop((a, b, disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn partly_settled_chunks_recover_their_live_messages_in_order() {
        let dir = tempdir();
        {
            let disk = open(&dir);
            let mut log = QueueLog::new(disk.clone(), 5);
            // Enough bytes for several chunks.
            for seq in 1..=3000 {
                log.write(&msg(seq));
            }
            assert!(log.commit().ok());
            for seq in (1..=3000).filter(|s| s % 3 != 0 && *s > 50) {
                log.remove(seq);
            }
            assert!(log.commit().ok());
            assert!(log.chunk_count() > 1);
            disk.flush().unwrap();
        }
        let disk = open(&dir);
        let (mut log, seqs) = recovered(&disk, 5);
        let want: Vec<u64> = (1..=3000).filter(|s| s % 3 == 0 || *s <= 50).collect();
        assert_eq!(seqs, want);
        for &seq in &want {
            assert_eq!(log.read(seq).unwrap().body(), format!("m{seq}").as_bytes());
        }
        drop((log, disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_taken_over_message_is_in_exactly_one_queue_whenever_the_broker_stops() {
        for notified in [false, true] {
            let dir = tempdir();
            {
                let disk = open(&dir);
                let (mut a, mut b) = (
                    QueueLog::new(disk.clone(), 1),
                    QueueLog::new(disk.clone(), 2),
                );
                a.write(&msg(7));
                assert!(a.commit().ok());
                // B takes it over: its copy and A's ack record in one batch.
                b.write(&msg(1));
                let ack = b.settle_foreign((1, 7), Some(1));
                assert!(b.commit().ok());
                if notified {
                    a.taken_over(7, ack);
                    assert!(a.commit().ok());
                    assert_eq!(
                        records_of(&disk, 1),
                        0,
                        "A's chunk and the ack record are gone"
                    );
                }
                disk.flush().unwrap();
            }
            let disk = open(&dir);
            assert_eq!(
                recovered(&disk, 1).1,
                Vec::<u64>::new(),
                "notified: {notified}"
            );
            assert_eq!(recovered(&disk, 2).1, [1]);
            assert_eq!(records_of(&disk, 1), 0, "recovery deletes what is settled");
            drop(disk);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_rewritten_message_recovers_as_rewritten_and_goes_with_its_ack() {
        let dir = tempdir();
        {
            let disk = open(&dir);
            let mut log = QueueLog::new(disk.clone(), 9);
            log.write(&msg(1));
            log.write(&msg(2));
            assert!(log.commit().ok());
            let mut m = msg(1);
            m.delivery_count = 3;
            log.rewrite(&m);
            assert!(log.commit().ok());
            assert_eq!(log.read(1).map(|m| m.body().to_vec()), Some(b"m1".to_vec()));
            disk.flush().unwrap();
        }
        let disk = open(&dir);
        let mut counts = Vec::new();
        let mut log = QueueLog::recover(disk.clone(), 9, false, |f| {
            counts.push((f.seq, record_meta(f.record).delivery_count))
        });
        assert_eq!(counts, [(1, 3), (2, 0)]);
        log.remove(1);
        log.remove(2);
        assert!(log.commit().ok());
        assert_eq!(records_of(&disk, 9), 0);
        drop((log, disk));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ack_records_round_trip() {
        let seqs = [1, 2, 3, 200, 70_000, u64::MAX / 2];
        assert_eq!(decode_acks(&encode_acks(&seqs)), seqs);
        assert!(decode_acks(&[9, 1, 2]).is_empty());
    }
}
