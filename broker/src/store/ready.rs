//! A queue's ready messages in sequence order, packed once the queue is deep.
//!
//! The oldest messages (up to [`HOT_MAX`] of them) are entries that hold their `Arc<Message>`:
//! what consumers that keep up take from, at no cost. Behind them, messages are packed into
//! byte blocks: about 20 bytes for a 16-byte message with the same routing key as the one
//! before it, instead of ~250 bytes of entry, message and allocations. A durable queue's
//! persistent messages are packed as index records only (their bodies are on disk and read
//! back when they reach the head). Requeued messages are always older than every packed one
//! (a queue hands out its oldest message first), so they go back among the entries.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::paging::{Page, PageFile};
use crate::message::{Message, INLINE_BODY};
use crate::store::StoredMessage;

/// Entries kept unpacked at the head of a queue.
pub const HOT_MAX: usize = 2048;
/// Body bytes kept unpacked at the head of a queue.
pub const HOT_BYTES: usize = 4 << 20;
/// Size of a packing block (a larger record gets a block of its own).
const BLOCK: usize = 64 * 1024;
/// Packed bytes a queue keeps in memory (blocks, and the large bodies it shares) before it
/// pages the blocks it fills next out to its page file, when it has one (see
/// [`paging`](super::paging)). With [`HOT_BYTES`], a deep queue holds about 12 MiB of RAM
/// however deep it is.
#[cfg(not(test))]
pub const PAGE_AFTER: usize = 8 << 20;
/// Small in unit tests, so that the stores' model tests page.
#[cfg(test)]
pub const PAGE_AFTER: usize = 256 << 10;

/// A ready message as its queue holds it at the head.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The queue's sequence number.
    pub seq: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// A copy is in the durable store (the body can be read back from there).
    pub on_disk: bool,
    /// Failed deliveries so far.
    pub delivery_count: u32,
    /// When it expires.
    pub expires_at: Option<Instant>,
    /// Body bytes.
    pub size: u32,
    /// The message; `None` when only the durable store has it.
    pub message: Option<Arc<Message>>,
}

impl Slot {
    /// A persistent message: its copy is on disk, or it is in memory marked persistent (its
    /// write failed).
    fn persistent(&self) -> bool {
        self.on_disk || self.message.as_ref().is_some_and(|m| m.is_persistent())
    }

    /// The slot of a message in memory; `on_disk` when the durable store has a copy.
    pub fn new(msg: StoredMessage, on_disk: bool) -> Slot {
        Slot {
            seq: msg.seq,
            redelivered: msg.redelivered,
            on_disk,
            delivery_count: msg.delivery_count,
            expires_at: msg.expires_at,
            size: msg.message.body_len() as u32,
            message: Some(msg.message),
        }
    }
}

const F_REDELIVERED: u16 = 1;
const F_ON_DISK: u16 = 1 << 1;
const F_CONTENT: u16 = 1 << 2;
const F_SEQ_GAP: u16 = 1 << 3;
const F_COUNT: u16 = 1 << 4;
const F_EXPIRES: u16 = 1 << 5;
const F_ROUTE: u16 = 1 << 6;
const F_DEATH: u16 = 1 << 7;
const F_PERSISTENT: u16 = 1 << 8;
const F_PRIORITY: u16 = 1 << 9;
const F_EXPIRATION: u16 = 1 << 10;
/// The message is not in the block: it is the next one in [`Packed::shared`].
const F_SHARED: u16 = 1 << 11;

/// Instants are packed as nanoseconds since this one.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| Instant::now() - Duration::from_secs(1 << 20))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`. Records are only ever read back from what `put_varint` wrote.
fn get_varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// The fields of a packed record before its content.
struct Header {
    flags: u16,
    seq: u64,
    delivery_count: u32,
    expires_at: Option<Instant>,
    size: u32,
}

/// A block of packed records, in memory or paged out.
#[derive(Default)]
struct Block {
    /// The records; empty while the block is paged out.
    data: Vec<u8>,
    /// Where the block is in the page file, while it is paged out.
    page: Option<Page>,
    /// Records written to it.
    records: u32,
    /// Of those, the ones with a copy in the durable store.
    on_disk: u32,
    /// Of those, the `F_SHARED` ones.
    shared: u32,
    /// Of those, the persistent ones.
    persistent: u32,
    /// Body bytes of its records.
    bytes: u64,
    /// Sequence number of its last record.
    last_seq: u64,
}

/// Records lost with a paged block that could not be read back.
#[derive(Debug, Default, Clone, Copy)]
struct Lost {
    bytes: u64,
    persistent: u64,
}

/// Packed records in blocks, read from the front, written at the back. The front block is
/// always in memory; blocks behind it may be paged out.
#[derive(Default)]
struct Packed {
    blocks: VecDeque<Block>,
    /// Read position in the front block.
    read_at: usize,
    /// Records held.
    len: usize,
    /// Sequence number of the last record written (and, once all are read, of the last read).
    write_seq: u64,
    /// Sequence number of the last record read.
    read_seq: u64,
    /// Exchange and routing key of the last record written, and the exchange's length.
    write_route: (Vec<u8>, usize),
    /// The same for the last record read.
    read_route: (Vec<u8>, usize),
    /// Messages of `F_SHARED` records, in record order: those whose body is larger than
    /// [`INLINE_BODY`] and so already a slice shared with the read buffer (and with every
    /// queue it was routed to). Copying such a body into a block and back out would cost
    /// two copies of it to save a few dozen bytes of entry.
    shared: VecDeque<Arc<Message>>,
    /// Body bytes of `shared`.
    shared_bytes: usize,
    /// Where blocks are paged out to, if anywhere.
    pages: Option<PageFile>,
    /// Bytes held in memory: blocks in memory, and `shared`.
    mem: usize,
    /// Records and body bytes paged out.
    paged: (u64, u64),
    /// Not yet reported to [`Ready`].
    lost: Lost,
}

impl Packed {
    fn push(&mut self, s: &Slot) {
        let in_memory = s.message.as_ref().filter(|_| !s.on_disk);
        // Once the queue pages, large bodies are packed too: shared ones would stay in RAM.
        let may_share = self.pages.is_none() || self.mem < PAGE_AFTER;
        let shared = in_memory.filter(|m| may_share && m.body_len() > INLINE_BODY);
        let m = in_memory.filter(|_| shared.is_none()).map(|m| &**m);
        let mut flags = 0;
        if let Some(arc) = shared {
            flags |= F_SHARED;
            self.shared_bytes += arc.body_len();
            self.mem += arc.body_len();
            self.shared.push_back(Arc::clone(arc));
        }
        let mut set = |on: bool, f: u16| {
            if on {
                flags |= f;
            }
        };
        set(s.redelivered, F_REDELIVERED);
        set(s.on_disk, F_ON_DISK);
        set(s.seq != self.write_seq + 1, F_SEQ_GAP);
        set(s.delivery_count != 0, F_COUNT);
        set(s.expires_at.is_some(), F_EXPIRES);
        let mut bound = 48;
        if let Some(m) = m {
            set(true, F_CONTENT);
            let (x, rk) = (m.exchange_bytes(), m.routing_key_bytes());
            let (route, xl) = &self.write_route;
            let same = *xl == x.len() && route[..*xl] == *x && route[*xl..] == *rk;
            set(!same, F_ROUTE);
            set(m.death.is_some(), F_DEATH);
            set(m.is_persistent(), F_PERSISTENT);
            set(m.priority() != 0, F_PRIORITY);
            set(m.expiration_ms.is_some(), F_EXPIRATION);
            bound += 2 + x.len() + rk.len() + m.raw_properties().len() + m.body_len();
        }
        if self
            .blocks
            .back()
            .is_none_or(|b| b.data.capacity() - b.data.len() < bound)
        {
            self.page_out_back();
            let data = Vec::with_capacity(bound.max(BLOCK));
            self.mem += data.capacity();
            self.blocks.push_back(Block {
                data,
                ..Block::default()
            });
            // A block's first record names its route, so a block can be read without the
            // one before it.
            self.write_route.0.clear();
            self.write_route.1 = usize::MAX;
            if m.is_some() {
                flags |= F_ROUTE;
            }
        }
        let block = self.blocks.back_mut().expect("a block with room");
        block.records += 1;
        block.on_disk += u32::from(s.on_disk);
        block.shared += u32::from(flags & F_SHARED != 0);
        block.persistent += u32::from(s.persistent());
        block.bytes += u64::from(s.size);
        block.last_seq = s.seq;
        let out = &mut block.data;
        out.extend_from_slice(&flags.to_le_bytes());
        if flags & F_SEQ_GAP != 0 {
            put_varint(out, s.seq.wrapping_sub(self.write_seq + 1));
        }
        if flags & F_COUNT != 0 {
            put_varint(out, u64::from(s.delivery_count));
        }
        if let Some(t) = s.expires_at {
            put_varint(out, t.saturating_duration_since(epoch()).as_nanos() as u64);
        }
        put_varint(out, u64::from(s.size));
        if let Some(m) = m {
            if flags & F_ROUTE != 0 {
                let (x, rk) = (m.exchange_bytes(), m.routing_key_bytes());
                out.push(x.len() as u8);
                out.extend_from_slice(x);
                out.push(rk.len() as u8);
                out.extend_from_slice(rk);
                let r = &mut self.write_route;
                r.0.clear();
                r.0.extend_from_slice(x);
                r.0.extend_from_slice(rk);
                r.1 = x.len();
            }
            let props = m.raw_properties();
            put_varint(out, props.len() as u64);
            out.extend_from_slice(props);
            if flags & F_PRIORITY != 0 {
                out.push(m.priority());
            }
            if let Some(ms) = m.expiration_ms {
                put_varint(out, ms);
            }
            out.extend_from_slice(m.body());
        }
        self.write_seq = s.seq;
        self.len += 1;
    }

    fn header(&self, at: &mut usize) -> Header {
        header_in(&self.blocks[0].data, at, self.read_seq)
    }

    /// Pages the back block out, if the queue pages, holds more than [`PAGE_AFTER`] in memory,
    /// and the back block is not the front one (which is being read).
    fn page_out_back(&mut self) {
        if self.mem <= PAGE_AFTER || self.blocks.len() < 2 {
            return;
        }
        let Some(pages) = self.pages.as_mut() else {
            return;
        };
        let Some(b) = self.blocks.back_mut().filter(|b| b.page.is_none()) else {
            return;
        };
        if let Some(page) = pages.write(&b.data) {
            self.mem -= b.data.capacity();
            b.data = Vec::new();
            b.page = Some(page);
            self.paged.0 += u64::from(b.records);
            self.paged.1 += b.bytes;
        }
    }

    /// The front block was read: drops it (or keeps the last one for reuse) and reads the
    /// next one back if it is paged out.
    fn next_block(&mut self) {
        self.read_at = 0;
        if self.blocks.len() == 1 {
            // The last block: reuse it.
            let b = &mut self.blocks[0];
            b.data.clear();
            let data = std::mem::take(&mut b.data);
            *b = Block {
                data,
                ..Block::default()
            };
            return;
        }
        if let Some(b) = self.blocks.pop_front() {
            self.mem -= b.data.capacity();
        }
        self.load_front();
    }

    /// Reads the front block back if it is paged out. A block that cannot be read (its file
    /// damaged or deleted behind Warren's back) is dropped with its records, and logged.
    fn load_front(&mut self) {
        while let Some(b) = self.blocks.front_mut() {
            let Some(page) = b.page else {
                return;
            };
            let pages = self.pages.as_mut().expect("a paged block has a page file");
            let read = pages.read(page);
            pages.read_up_to(page);
            self.paged.0 -= u64::from(b.records).min(self.paged.0);
            self.paged.1 -= b.bytes.min(self.paged.1);
            match read {
                Ok(data) => {
                    self.mem += data.capacity();
                    b.data = data;
                    b.page = None;
                    if self.paged.0 == 0 {
                        // Nothing left out there: the last file goes too.
                        pages.clear();
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        messages = b.records,
                        "a paged-out block of queued transient messages cannot be read back; they are lost"
                    );
                    self.len -= b.records as usize;
                    self.read_seq = b.last_seq;
                    self.lost.bytes += b.bytes;
                    self.lost.persistent += u64::from(b.persistent);
                    for _ in 0..b.shared {
                        if let Some(m) = self.shared.pop_front() {
                            self.shared_bytes -= m.body_len();
                            self.mem -= m.body_len();
                        }
                    }
                    self.blocks.pop_front();
                    if self.paged.0 == 0 {
                        pages.clear();
                    }
                }
            }
        }
    }

    /// The expiry of the first record.
    fn head_expiry(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.read_at;
        self.header(&mut at).expires_at
    }

    fn pop(&mut self) -> Option<Slot> {
        if self.len == 0 {
            return None;
        }
        let mut at = self.read_at;
        let h = self.header(&mut at);
        let message = if h.flags & F_SHARED != 0 {
            let m = self.shared.pop_front();
            if let Some(m) = &m {
                self.shared_bytes -= m.body_len();
                self.mem -= m.body_len();
            }
            m
        } else if h.flags & F_CONTENT != 0 {
            Some(self.unpack(&h, &mut at))
        } else {
            None
        };
        self.read_seq = h.seq;
        self.len -= 1;
        if at >= self.blocks[0].data.len() {
            self.next_block();
        } else {
            self.read_at = at;
        }
        Some(Slot {
            seq: h.seq,
            redelivered: h.flags & F_REDELIVERED != 0,
            on_disk: h.flags & F_ON_DISK != 0,
            delivery_count: h.delivery_count,
            expires_at: h.expires_at,
            size: h.size,
            message,
        })
    }

    /// Decodes the message of the record whose header was just read, its content at `*at`.
    fn unpack(&mut self, h: &Header, at: &mut usize) -> Arc<Message> {
        let buf = &self.blocks[0].data;
        if h.flags & F_ROUTE != 0 {
            let xl = buf[*at] as usize;
            let x = *at + 1;
            let rl = buf[x + xl] as usize;
            let rk = x + xl + 1;
            let r = &mut self.read_route;
            r.0.clear();
            r.0.extend_from_slice(&buf[x..x + xl]);
            r.0.extend_from_slice(&buf[rk..rk + rl]);
            r.1 = xl;
            *at = rk + rl;
        }
        let pl = get_varint(buf, at) as usize;
        let props = &buf[*at..*at + pl];
        *at += pl;
        let priority = if h.flags & F_PRIORITY != 0 {
            *at += 1;
            buf[*at - 1]
        } else {
            0
        };
        let expiration_ms = (h.flags & F_EXPIRATION != 0).then(|| get_varint(buf, at));
        let body = &buf[*at..*at + h.size as usize];
        *at += h.size as usize;
        let (route, xl) = &self.read_route;
        let mut m = Message::from_slices(
            &route[..*xl],
            &route[*xl..],
            h.flags & F_PERSISTENT != 0,
            priority,
            expiration_ms,
            props,
            body,
        );
        if h.flags & F_DEATH != 0 {
            m.restore_death();
        }
        Arc::new(m)
    }

    fn clear(&mut self) {
        let mut pages = self.pages.take();
        if let Some(p) = &mut pages {
            p.clear();
        }
        *self = Packed {
            write_seq: self.write_seq,
            read_seq: self.write_seq,
            pages,
            ..Packed::default()
        };
    }

    /// Bytes held by the blocks in memory.
    fn capacity(&self) -> usize {
        self.blocks.iter().map(|b| b.data.capacity()).sum()
    }
}

/// The ready messages of one queue.
#[derive(Default)]
pub struct Ready {
    /// The oldest messages, unpacked.
    hot: VecDeque<Slot>,
    /// Body bytes of `hot` held in memory.
    hot_bytes: usize,
    /// Newer messages, packed.
    packed: Packed,
    /// Durable messages written this round, packed (as index records) once their write is
    /// applied: until then their bodies are in memory only.
    staged: VecDeque<Slot>,
    /// Body bytes of every ready message, in memory or not.
    bytes: u64,
    /// Persistent messages among them.
    persistent: u64,
}

impl Ready {
    /// Ready messages that page their packed blocks out to `pages` once the queue holds more
    /// than [`PAGE_AFTER`] of them in memory.
    pub fn with_pages(pages: PageFile) -> Ready {
        Ready {
            packed: Packed {
                pages: Some(pages),
                ..Packed::default()
            },
            ..Ready::default()
        }
    }

    /// Messages paged out to disk, and their body bytes.
    pub fn paged(&self) -> (u64, u64) {
        self.packed.paged
    }

    /// Counts out the messages of a paged block that could not be read back.
    fn count_lost(&mut self) {
        let lost = std::mem::take(&mut self.packed.lost);
        self.bytes -= lost.bytes.min(self.bytes);
        self.persistent -= lost.persistent.min(self.persistent);
    }

    /// Ready messages.
    pub fn len(&self) -> usize {
        self.hot.len() + self.packed.len + self.staged.len()
    }

    /// No ready messages.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Body bytes of the ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Persistent ready messages.
    pub fn persistent(&self) -> u64 {
        self.persistent
    }

    /// Appends a newly arrived message. A message with a copy on disk that has to be packed is
    /// staged until [`unstage`](Self::unstage) says the copy can be read back.
    pub fn push(&mut self, s: Slot) {
        self.bytes += u64::from(s.size);
        self.persistent += u64::from(s.persistent());
        if self.packed.len == 0
            && self.staged.is_empty()
            && self.hot.len() < HOT_MAX
            && self.hot_bytes < HOT_BYTES
        {
            self.hot_bytes += s.size as usize;
            self.hot.push_back(s);
        } else if s.on_disk || !self.staged.is_empty() {
            // Behind staged messages, even without a copy on disk: delivery order is
            // hot, packed, staged.
            self.staged.push_back(s);
        } else {
            self.packed.push(&s);
        }
    }

    /// The durable store applied this round's writes: staged messages are packed as index
    /// records, their bodies let go.
    pub fn unstage(&mut self) {
        while let Some(s) = self.staged.pop_front() {
            self.packed.push(&s);
        }
    }

    /// Takes out message `seq`, pushed this round and still ready (its write failed and its
    /// publish is nacked); false if it is no longer here (a consumer took it).
    pub fn remove_recent(&mut self, seq: u64) -> bool {
        let slot = match self.staged.iter().rposition(|s| s.seq == seq) {
            Some(pos) => self.staged.remove(pos),
            None => match self.hot.iter().rposition(|s| s.seq == seq) {
                Some(pos) => {
                    let s = self.hot.remove(pos);
                    if let Some(s) = &s {
                        if s.message.is_some() {
                            self.hot_bytes -= (s.size as usize).min(self.hot_bytes);
                        }
                    }
                    s
                }
                None => None,
            },
        };
        match slot {
            Some(s) => {
                self.bytes -= u64::from(s.size).min(self.bytes);
                self.persistent -= u64::from(s.persistent()).min(self.persistent);
                true
            }
            None => false,
        }
    }

    /// Staged messages for which `unstored(seq)` is true have no copy on disk after all (their
    /// write or its flush failed): they keep their bodies when packed.
    pub fn mark_unstored(&mut self, unstored: impl Fn(u64) -> bool) {
        for s in self.staged.iter_mut().filter(|s| unstored(s.seq)) {
            s.on_disk = false;
        }
    }

    /// Packs the staged messages up to sequence `upto`: their write was flushed.
    pub fn unstage_upto(&mut self, upto: u64) {
        while self.staged.front().is_some_and(|s| s.seq <= upto) {
            if let Some(s) = self.staged.pop_front() {
                self.packed.push(&s);
            }
        }
    }

    /// The newest staged message's sequence number.
    pub fn last_staged(&self) -> Option<u64> {
        self.staged.back().map(|s| s.seq)
    }

    /// Puts a delivered message back in its place by sequence.
    pub fn requeue(&mut self, s: Slot) {
        self.bytes += u64::from(s.size);
        self.persistent += u64::from(s.persistent());
        self.hot_bytes += s.message.as_ref().map_or(0, |_| s.size as usize);
        super::insert_by_seq(&mut self.hot, s, |s| s.seq);
    }

    /// Takes the oldest message; `load` reads back one that only the durable store holds
    /// (an unreadable one is skipped).
    pub fn pop(&mut self, mut load: impl FnMut(u64) -> Option<Message>) -> Option<StoredMessage> {
        loop {
            let s = match self.hot.pop_front() {
                Some(s) => {
                    if s.message.is_some() {
                        self.hot_bytes -= (s.size as usize).min(self.hot_bytes);
                    }
                    s
                }
                None => {
                    let s = self.packed.pop();
                    self.count_lost();
                    match s {
                        Some(s) => s,
                        None => self.staged.pop_front()?,
                    }
                }
            };
            self.bytes -= u64::from(s.size).min(self.bytes);
            self.persistent -= u64::from(s.persistent()).min(self.persistent);
            let message = match s.message {
                Some(m) => m,
                None => match load(s.seq) {
                    Some(m) => Arc::new(m),
                    None => continue,
                },
            };
            return Some(StoredMessage {
                seq: s.seq,
                message,
                redelivered: s.redelivered,
                delivery_count: s.delivery_count,
                expires_at: s.expires_at,
            });
        }
    }

    /// When the next message expires, if it does.
    pub fn head_expiry(&self) -> Option<Instant> {
        match self.hot.front() {
            Some(s) => s.expires_at,
            None if self.packed.len > 0 => self.packed.head_expiry(),
            None => self.staged.front().and_then(|s| s.expires_at),
        }
    }

    /// Removes every message; calls `f(seq, redelivered)` for each that has a copy in the
    /// durable store, in order.
    pub fn drain(&mut self, f: impl FnMut(u64, bool)) -> usize {
        self.for_each_on_disk(f);
        let n = self.len();
        self.clear();
        n
    }

    /// Removes every message.
    pub fn clear(&mut self) {
        self.hot.clear();
        self.staged.clear();
        self.packed.clear();
        self.hot_bytes = 0;
        self.bytes = 0;
        self.persistent = 0;
    }

    /// Calls `f(seq, redelivered)` for each message that has a copy in the durable store, in
    /// order, keeping them.
    pub fn for_each_on_disk(&self, mut f: impl FnMut(u64, bool)) {
        for s in self.hot.iter().filter(|s| s.on_disk) {
            f(s.seq, s.redelivered);
        }
        self.packed.for_each_on_disk(&mut f);
        for s in self.staged.iter().filter(|s| s.on_disk) {
            f(s.seq, s.redelivered);
        }
    }

    /// Memory held by packed records (for tests and figures).
    pub fn packed_capacity(&self) -> usize {
        self.packed.capacity()
    }
}

impl Packed {
    /// Calls `f(seq, redelivered)` for every record with a copy in the durable store, in
    /// order. Paged blocks without such records are not read back.
    fn for_each_on_disk(&self, f: &mut impl FnMut(u64, bool)) {
        let mut seq = self.read_seq;
        for (i, b) in self.blocks.iter().enumerate() {
            if b.on_disk == 0 {
                seq = b.last_seq;
                continue;
            }
            let read;
            let buf = match (b.page, &self.pages) {
                (Some(page), Some(pages)) => match pages.read(page) {
                    Ok(data) => {
                        read = data;
                        &read[..]
                    }
                    Err(_) => {
                        seq = b.last_seq;
                        continue;
                    }
                },
                _ => &b.data[..],
            };
            let mut at = if i == 0 { self.read_at } else { 0 };
            while at < buf.len() {
                let h = header_in(buf, &mut at, seq);
                skip_content_in(buf, &h, &mut at);
                if h.flags & F_ON_DISK != 0 {
                    f(h.seq, h.flags & F_REDELIVERED != 0);
                }
                seq = h.seq;
            }
        }
    }
}

/// Reads a record's header at `*at` of a block; `read_seq` is the record before it.
fn header_in(buf: &[u8], at: &mut usize, read_seq: u64) -> Header {
    let flags = u16::from_le_bytes([buf[*at], buf[*at + 1]]);
    *at += 2;
    let gap = if flags & F_SEQ_GAP != 0 {
        get_varint(buf, at)
    } else {
        0
    };
    let delivery_count = if flags & F_COUNT != 0 {
        get_varint(buf, at) as u32
    } else {
        0
    };
    let expires_at =
        (flags & F_EXPIRES != 0).then(|| epoch() + Duration::from_nanos(get_varint(buf, at)));
    let size = get_varint(buf, at) as u32;
    Header {
        flags,
        seq: read_seq.wrapping_add(1).wrapping_add(gap),
        delivery_count,
        expires_at,
        size,
    }
}

/// Skips the content of a record whose header was just read.
fn skip_content_in(buf: &[u8], h: &Header, at: &mut usize) {
    if h.flags & F_CONTENT == 0 {
        return;
    }
    if h.flags & F_ROUTE != 0 {
        let xl = buf[*at] as usize;
        let rl = buf[*at + 1 + xl] as usize;
        *at += 2 + xl + rl;
    }
    let pl = get_varint(buf, at) as usize;
    *at += pl;
    if h.flags & F_PRIORITY != 0 {
        *at += 1;
    }
    if h.flags & F_EXPIRATION != 0 {
        get_varint(buf, at);
    }
    *at += h.size as usize;
}
