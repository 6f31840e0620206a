//! A stream's append-only log: segment files of chunks, one chunk per round of publishes.
//!
//! A stream lives in its own directory (`data_dir/streams/<queue id>/`), as files named by the
//! offset of their first message (`00000000000000000000.seg`). A chunk is a 36-byte header
//! (magic `WSC1`, first offset, message count, timestamp in Unix milliseconds, data length,
//! CRC-32 of the data, length of the chunk's filter) and its data: the filter (empty when no
//! message has an `x-stream-filter-value`; else a flags byte and a 128-bit Bloom filter of the
//! values), then each message as a length-prefixed record (its filter value, exchange, routing
//! key, encoded properties, body). Nothing per message stays in memory:
//! the log keeps one entry per segment file, and readers seek by reading chunk headers.
//! Retention drops whole segments from the head.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::message::Message;
use crate::protocol::scan_properties;

const MAGIC: &[u8; 4] = b"WSC1";
/// Bytes of a chunk header.
pub const HEADER: usize = 36;
/// RabbitMQ's default `x-stream-max-segment-size-bytes`: 500 MB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;

/// A chunk's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub first_offset: u64,
    pub count: u32,
    pub timestamp_ms: i64,
    pub data_len: u32,
    pub crc: u32,
    /// Bytes of filter at the start of the data.
    pub filter_len: u32,
}

impl ChunkHeader {
    fn encode(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(MAGIC);
        h[4..12].copy_from_slice(&self.first_offset.to_le_bytes());
        h[12..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..24].copy_from_slice(&self.timestamp_ms.to_le_bytes());
        h[24..28].copy_from_slice(&self.data_len.to_le_bytes());
        h[28..32].copy_from_slice(&self.crc.to_le_bytes());
        h[32..36].copy_from_slice(&self.filter_len.to_le_bytes());
        h
    }

    /// A header as written, or `None`: a damaged one (whose filter would not fit in its data)
    /// is never trusted with an allocation.
    fn decode(h: &[u8]) -> Option<ChunkHeader> {
        if h.len() < HEADER || &h[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap_or_default());
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
        let h = ChunkHeader {
            first_offset: u64_at(4),
            count: u32_at(12),
            timestamp_ms: u64_at(16) as i64,
            data_len: u32_at(24),
            crc: u32_at(28),
            filter_len: u32_at(32),
        };
        (h.filter_len <= h.data_len).then_some(h)
    }

    /// The offset after its last message.
    pub fn end(&self) -> u64 {
        self.first_offset + u64::from(self.count)
    }

    fn size(&self) -> u64 {
        HEADER as u64 + u64::from(self.data_len)
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first_offset: u64,
    /// The offset after its last message.
    end: u64,
    /// Timestamp of its last chunk (retention by age).
    last_ts_ms: i64,
    /// Bytes of whole chunks in it.
    len: u64,
    path: PathBuf,
    file: Arc<File>,
}

/// Retention: how much of the stream is kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// `x-max-length-bytes`.
    pub max_bytes: Option<u64>,
    /// `x-max-age`, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub segment_bytes: u64,
}

/// A stream's log.
#[derive(Debug)]
pub struct StreamLog {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    next_offset: u64,
    /// First offset of the last chunk (`x-stream-offset: last`).
    last_chunk: u64,
    retention: Retention,
    /// Files whose data a confirm must see synced besides the last one (a rolled segment).
    unsynced: Vec<Arc<File>>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Reads the chunk header at `pos`, if a whole and valid chunk is there.
fn header_at(file: &File, pos: u64, file_len: u64) -> Option<ChunkHeader> {
    if pos + HEADER as u64 > file_len {
        return None;
    }
    let mut h = [0u8; HEADER];
    file.read_exact_at(&mut h, pos).ok()?;
    let h = ChunkHeader::decode(&h)?;
    (pos + h.size() <= file_len).then_some(h)
}

impl StreamLog {
    /// Opens (or creates) the log in `dir`: scans its segments, drops a torn last chunk (a
    /// crash during a write: it was never confirmed), and applies retention.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<StreamLog> {
        std::fs::create_dir_all(dir)?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                let first = name.strip_suffix(".seg")?.parse().ok()?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();
        let mut log = StreamLog {
            dir: dir.to_owned(),
            segments: VecDeque::new(),
            next_offset: 0,
            last_chunk: 0,
            retention,
            unsynced: Vec::new(),
        };
        for (first, path) in names {
            let file = File::options().read(true).append(true).open(&path)?;
            let file_len = file.metadata()?.len();
            let (mut pos, mut end, mut last_ts) = (0, first, 0);
            while let Some(h) = header_at(&file, pos, file_len) {
                let mut data = vec![0; h.data_len as usize];
                if h.first_offset != end
                    || file.read_exact_at(&mut data, pos + HEADER as u64).is_err()
                    || crc32fast::hash(&data) != h.crc
                {
                    break;
                }
                log.last_chunk = h.first_offset;
                end = h.end();
                last_ts = h.timestamp_ms;
                pos += h.size();
            }
            if pos < file_len {
                tracing::warn!(
                    path = %path.display(),
                    kept = pos,
                    dropped = file_len - pos,
                    "a stream segment ends in a torn or damaged chunk; it is cut there"
                );
                file.set_len(pos)?;
                file.sync_all()?;
            }
            log.next_offset = end;
            log.segments.push_back(Segment {
                first_offset: first,
                end,
                last_ts_ms: last_ts,
                len: pos,
                path,
                file: Arc::new(file),
            });
        }
        log.apply_retention();
        Ok(log)
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next message gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The first offset still in the log.
    pub fn first_offset(&self) -> u64 {
        self.segments
            .front()
            .map_or(self.next_offset, |s| s.first_offset.min(self.next_offset))
    }

    /// First offset of the last chunk written.
    pub fn last_chunk(&self) -> u64 {
        self.last_chunk.max(self.first_offset())
    }

    /// Messages in the log.
    pub fn len(&self) -> u64 {
        self.next_offset - self.first_offset()
    }

    /// No messages.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in the log's segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Appends one chunk holding `messages`; returns its first offset. The data is written
    /// (to the page cache), not synced: see [`to_sync`](Self::to_sync).
    pub fn append(&mut self, messages: &[Arc<Message>]) -> io::Result<u64> {
        let values: Vec<Option<Vec<u8>>> = messages.iter().map(|m| filter_value(m)).collect();
        let filter = ChunkFilter::of(&values);
        let mut data = Vec::with_capacity(
            filter.len()
                + messages
                    .iter()
                    .map(|m| 10 + m.raw_properties().len() + m.body_len() + 64)
                    .sum::<usize>(),
        );
        filter.write(&mut data);
        for (m, fv) in messages.iter().zip(&values) {
            let (x, rk, p, b) = (
                m.exchange_bytes(),
                m.routing_key_bytes(),
                m.raw_properties(),
                m.body(),
            );
            let fv = fv.as_deref().unwrap_or_default();
            let len = 3 + fv.len() + x.len() + rk.len() + 4 + p.len() + b.len();
            data.extend_from_slice(&(len as u32).to_le_bytes());
            data.push(fv.len() as u8);
            data.extend_from_slice(fv);
            data.push(x.len() as u8);
            data.extend_from_slice(x);
            data.push(rk.len() as u8);
            data.extend_from_slice(rk);
            data.extend_from_slice(&(p.len() as u32).to_le_bytes());
            data.extend_from_slice(p);
            data.extend_from_slice(b);
        }
        let h = ChunkHeader {
            first_offset: self.next_offset,
            count: messages.len() as u32,
            timestamp_ms: now_ms(),
            data_len: data.len() as u32,
            crc: crc32fast::hash(&data),
            filter_len: filter.len() as u32,
        };
        if self
            .segments
            .back()
            .is_none_or(|s| s.len > 0 && s.len + h.size() > self.retention.segment_bytes)
        {
            self.roll()?;
        }
        let seg = self.segments.back_mut().expect("a segment to write to");
        let mut f = &*seg.file;
        let written = f.write_all(&h.encode()).and_then(|()| f.write_all(&data));
        if let Err(e) = written {
            // Cut what was written of the chunk: the log stays whole.
            let _ = seg.file.set_len(seg.len);
            return Err(e);
        }
        seg.len += h.size();
        seg.end = h.end();
        seg.last_ts_ms = h.timestamp_ms;
        self.last_chunk = h.first_offset;
        self.next_offset = h.end();
        Ok(h.first_offset)
    }

    /// Starts a new segment file (its directory entry synced), and applies retention.
    fn roll(&mut self) -> io::Result<()> {
        let path = segment_path(&self.dir, self.next_offset);
        let file = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        // Left by an earlier roll that failed after creating it: nothing in it counts.
        file.set_len(0)?;
        File::open(&self.dir)?.sync_all()?;
        if let Some(prev) = self.segments.back() {
            self.unsynced.push(prev.file.clone());
        }
        self.segments.push_back(Segment {
            first_offset: self.next_offset,
            end: self.next_offset,
            last_ts_ms: now_ms(),
            len: 0,
            path,
            file: Arc::new(file),
        });
        self.apply_retention();
        Ok(())
    }

    /// Changes the retention (a policy changed), applying it at once.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
        self.apply_retention();
    }

    /// Drops whole segments from the head while the log is over `x-max-length-bytes` or a
    /// segment's newest message is older than `x-max-age`; the segment being written stays.
    pub fn apply_retention(&mut self) {
        let now = now_ms();
        while self.segments.len() > 1 {
            let total = self.bytes();
            let front = &self.segments[0];
            let too_big = self.retention.max_bytes.is_some_and(|max| total > max);
            let too_old = self
                .retention
                .max_age_ms
                .is_some_and(|age| front.last_ts_ms < now - age as i64);
            if !(too_big || too_old) {
                break;
            }
            if let Some(s) = self.segments.pop_front() {
                if let Err(e) = std::fs::remove_file(&s.path) {
                    tracing::warn!(path = %s.path.display(), error = %e, "cannot delete a stream segment");
                }
            }
        }
    }

    /// The files a confirm of what was appended so far waits for: synced, they hold it.
    pub fn to_sync(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.unsynced);
        if let Some(s) = self.segments.back() {
            files.push(s.file.clone());
        }
        files
    }

    /// Deletes the log and its directory.
    pub fn destroy(&mut self) {
        self.segments.clear();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot delete a stream's files");
        }
    }

    /// The first offset of the first chunk whose timestamp is at or after `ts_ms` (the next
    /// offset if none is).
    pub fn offset_at_time(&self, ts_ms: i64) -> u64 {
        let Some(seg) = self
            .segments
            .iter()
            .find(|s| s.last_ts_ms >= ts_ms && s.len > 0)
        else {
            return self.next_offset;
        };
        let mut pos = 0;
        while let Some(h) = header_at(&seg.file, pos, seg.len) {
            if h.timestamp_ms >= ts_ms {
                return h.first_offset;
            }
            pos += h.size();
        }
        seg.end
    }

    /// A reader positioned at `offset` (clamped to the log).
    pub fn reader(&self, offset: u64) -> Reader {
        Reader {
            next: offset.clamp(self.first_offset(), self.next_offset),
            at: None,
            chunk: None,
            skipped_chunks: 0,
        }
    }

    /// The segment holding `offset`, by index.
    fn segment_of(&self, offset: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.end <= offset);
        self.segments
            .get(i)
            .filter(|s| s.first_offset <= offset || s.len > 0)
    }
}

/// Where a reader is in a segment file.
#[derive(Debug)]
struct Position {
    file: Arc<File>,
    /// The segment's first offset (tells segments apart).
    segment: u64,
    /// Byte position of the next chunk.
    pos: u64,
}

/// One consumer's place in a log. It holds no messages: each [`read`](Reader::read) reads
/// whole chunks from the file and hands out what the consumer may take.
#[derive(Debug)]
pub struct Reader {
    /// The next offset to hand out.
    next: u64,
    at: Option<Position>,
    /// The chunk last read, while the reader is inside it (a consumer with little credit
    /// takes a chunk in several reads).
    chunk: Option<(ChunkHeader, Bytes)>,
    /// Chunks passed over whole by the filter, without reading their messages.
    pub skipped_chunks: u64,
}

/// A message read back, with its offset.
pub struct ReadMessage {
    pub offset: u64,
    pub message: Message,
}

impl Reader {
    /// The offset this reader hands out next.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Goes back to `offset` (read, and not handed out after all): the next read starts there.
    pub fn seek(&mut self, offset: u64) {
        if offset < self.next {
            self.next = offset;
            self.at = None;
            self.chunk = None;
        }
    }

    /// Reads up to `max` messages from the reader's position (fewer at the end of the log),
    /// those `filter` takes if there is one: a chunk whose filter says none of its messages
    /// can match is skipped without reading its messages. A chunk that cannot be read is
    /// skipped, logged.
    pub fn read(
        &mut self,
        log: &StreamLog,
        max: usize,
        filter: Option<&StreamFilter>,
        out: &mut Vec<ReadMessage>,
    ) -> bool {
        let start = out.len();
        // Chunks examined in one call: a selective filter over a long log must not hold the
        // stream's task for long. Returns true when it stopped there, with more to read.
        let mut budget = 512u32;
        while out.len() - start < max && self.next < log.next_offset {
            if budget == 0 {
                return true;
            }
            budget -= 1;
            if self.next < log.first_offset() {
                // Retention took what this reader had not read yet.
                self.next = log.first_offset();
                self.at = None;
            }
            let Some(seg) = log.segment_of(self.next) else {
                return false;
            };
            let fresh = match &self.at {
                Some(p) => p.segment != seg.first_offset,
                None => true,
            };
            if fresh {
                self.at = Some(Position {
                    file: seg.file.clone(),
                    segment: seg.first_offset,
                    pos: 0,
                });
            }
            let p = self.at.as_mut().expect("a position");
            // Skip chunks before the wanted offset by their headers.
            let Some(h) = header_at(&p.file, p.pos, seg.len) else {
                // The end of this segment: the next one starts at its end.
                self.next = self.next.max(seg.end);
                self.at = None;
                if seg.end >= log.next_offset {
                    return false;
                }
                continue;
            };
            if h.end() <= self.next {
                p.pos += h.size();
                continue;
            }
            if let Some(f) = filter {
                let mut bytes = vec![0u8; h.filter_len as usize];
                let read = p
                    .file
                    .read_exact_at(&mut bytes, p.pos + HEADER as u64)
                    .is_ok();
                if read && !f.may_match(&bytes) {
                    self.skipped_chunks += 1;
                    p.pos += h.size();
                    self.next = h.end();
                    continue;
                }
            }
            let data = match self.chunk.take() {
                Some((ch, data)) if ch == h => data,
                _ => {
                    let mut data = vec![0u8; h.data_len as usize];
                    if p.file
                        .read_exact_at(&mut data, p.pos + HEADER as u64)
                        .is_err()
                        || crc32fast::hash(&data) != h.crc
                    {
                        tracing::error!(
                            offset = h.first_offset,
                            messages = h.count,
                            "a stream chunk cannot be read back; it is skipped"
                        );
                        p.pos += h.size();
                        self.next = h.end();
                        continue;
                    }
                    Bytes::from(data)
                }
            };
            let mut at = h.filter_len as usize;
            let mut offset = h.first_offset;
            while at + 4 <= data.len() {
                let len =
                    u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default()) as usize;
                let rec = data.slice(at + 4..(at + 4 + len).min(data.len()));
                at += 4 + len;
                if offset >= self.next {
                    if out.len() - start >= max {
                        break;
                    }
                    let fl = rec.first().map_or(0, |&l| l as usize);
                    let fv = rec.get(1..1 + fl).filter(|v| !v.is_empty());
                    if filter.is_none_or(|f| f.takes(fv)) {
                        if let Some(message) = decode(&rec.slice((1 + fl).min(rec.len())..)) {
                            out.push(ReadMessage { offset, message });
                        }
                    }
                    self.next = offset + 1;
                }
                offset += 1;
            }
            if self.next >= h.end() {
                p.pos += h.size();
            } else {
                self.chunk = Some((h, data));
            }
        }
        false
    }
}

/// The `x-stream-filter-value` header of a message (a string), if it has one. Properties
/// without the name are not parsed.
fn filter_value(m: &Message) -> Option<Vec<u8>> {
    const NAME: &[u8] = b"x-stream-filter-value";
    let raw = m.raw_properties();
    if !raw.windows(NAME.len()).any(|w| w == NAME) {
        return None;
    }
    let props = m.properties();
    let v = props.headers().as_ref()?.inner().get(NAME_STR)?.clone();
    let s = crate::queue::args::as_str(&v)?;
    let mut b = s.into_bytes();
    b.truncate(255);
    Some(b)
}

const NAME_STR: &str = "x-stream-filter-value";

/// Bits in a chunk's Bloom filter.
const BLOOM_BITS: usize = 128;

/// The two bit positions of a filter value.
fn bloom_bits(v: &[u8]) -> [usize; 2] {
    let a = crc32fast::hash(v) as usize;
    let mut h = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
    h.update(v);
    [a % BLOOM_BITS, h.finalize() as usize % BLOOM_BITS]
}

/// A chunk's filter: which values its messages have (probably), and whether any has none.
struct ChunkFilter {
    bloom: Option<[u8; BLOOM_BITS / 8]>,
    unfiltered: bool,
}

impl ChunkFilter {
    fn of(values: &[Option<Vec<u8>>]) -> ChunkFilter {
        let mut f = ChunkFilter {
            bloom: None,
            unfiltered: false,
        };
        for v in values {
            match v {
                None => f.unfiltered = true,
                Some(v) => {
                    let bloom = f.bloom.get_or_insert([0; BLOOM_BITS / 8]);
                    for bit in bloom_bits(v) {
                        bloom[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
        }
        f
    }

    /// Bytes it takes in the chunk: none when no message has a value.
    fn len(&self) -> usize {
        if self.bloom.is_some() {
            1 + BLOOM_BITS / 8
        } else {
            0
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        if let Some(bloom) = &self.bloom {
            out.push(u8::from(self.unfiltered));
            out.extend_from_slice(bloom);
        }
    }
}

/// What a consumer's `x-stream-filter` and `x-stream-match-unfiltered` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFilter {
    pub values: Vec<Vec<u8>>,
    pub match_unfiltered: bool,
}

impl StreamFilter {
    /// Whether a chunk with this filter may hold a message the consumer takes.
    fn may_match(&self, chunk_filter: &[u8]) -> bool {
        let Some((&flags, bloom)) = chunk_filter.split_first() else {
            // No message of the chunk has a filter value.
            return self.match_unfiltered;
        };
        if self.match_unfiltered && flags & 1 != 0 {
            return true;
        }
        self.values.iter().any(|v| {
            bloom_bits(v).iter().all(|&bit| {
                bloom
                    .get(bit / 8)
                    .is_some_and(|b| b & (1 << (bit % 8)) != 0)
            })
        })
    }

    /// Whether the consumer takes a message with this filter value (exactly).
    fn takes(&self, value: Option<&[u8]>) -> bool {
        match value {
            None => self.match_unfiltered,
            Some(v) => self.values.iter().any(|w| w == v),
        }
    }
}

/// A record back to a message; the body stays a slice of the chunk it was read in.
fn decode(rec: &Bytes) -> Option<Message> {
    let xl = *rec.first()? as usize;
    let x = rec.get(1..1 + xl)?;
    let rl = *rec.get(1 + xl)? as usize;
    let rk_at = 2 + xl;
    let rk = rec.get(rk_at..rk_at + rl)?;
    let pl_at = rk_at + rl;
    let pl = u32::from_le_bytes(rec.get(pl_at..pl_at + 4)?.try_into().ok()?) as usize;
    let props = rec.get(pl_at + 4..pl_at + 4 + pl)?;
    let body = rec.slice(pl_at + 4 + pl..);
    let scanned = scan_properties(props);
    Some(Message::from_parts(
        x,
        rk,
        scanned.as_ref().is_some_and(|p| p.delivery_mode == Some(2)),
        scanned.as_ref().and_then(|p| p.priority).unwrap_or(0),
        None,
        props,
        std::slice::from_ref(&body),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_properties;
    use amq_protocol::protocol::BasicProperties;

    fn msg(i: u64, size: usize) -> Arc<Message> {
        let props = BasicProperties::default();
        let mut body = vec![(i % 251) as u8; size];
        body[..8].copy_from_slice(&i.to_be_bytes());
        Arc::new(Message::new(
            "".into(),
            "s".into(),
            &props,
            encode_properties(&props),
            Bytes::from(body),
        ))
    }

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "warren-stream-{tag}-{}",
            crate::util::random_token(8)
        ))
    }

    fn read_all(log: &StreamLog, from: u64) -> Vec<u64> {
        let mut r = log.reader(from);
        let mut out = Vec::new();
        r.read(log, usize::MAX, None, &mut out);
        out.iter()
            .map(|m| {
                assert_eq!(&m.message.body()[..8], &m.offset.to_be_bytes());
                m.offset
            })
            .collect()
    }

    #[test]
    fn appends_read_back_from_any_offset_across_segments_and_restarts() {
        let d = dir("rw");
        let retention = Retention {
            segment_bytes: 64 << 10,
            ..Retention::default()
        };
        let mut log = StreamLog::open(&d, retention).unwrap();
        let mut next = 0;
        for round in 0..200u64 {
            let batch: Vec<_> = (0..(round % 7 + 1))
                .map(|_| {
                    next += 1;
                    msg(next - 1, 100 + (next as usize % 3) * 2000)
                })
                .collect();
            assert_eq!(log.append(&batch).unwrap(), next - batch.len() as u64);
        }
        assert!(log.segments.len() > 3, "{} segments", log.segments.len());
        assert_eq!(read_all(&log, 0), (0..next).collect::<Vec<_>>());
        assert_eq!(read_all(&log, 37), (37..next).collect::<Vec<_>>());
        // In small steps, as a consumer with little credit reads.
        let mut r = log.reader(5);
        let mut got = Vec::new();
        loop {
            let mut out = Vec::new();
            r.read(&log, 3, None, &mut out);
            if out.is_empty() {
                break;
            }
            got.extend(out.iter().map(|m| m.offset));
        }
        assert_eq!(got, (5..next).collect::<Vec<_>>());
        // Read, then not handed out after all: the reader goes back.
        let mut r = log.reader(0);
        let mut out = Vec::new();
        r.read(&log, 10, None, &mut out);
        r.seek(4);
        out.clear();
        r.read(&log, 3, None, &mut out);
        assert_eq!(out.iter().map(|m| m.offset).collect::<Vec<_>>(), [4, 5, 6]);
        // A torn chunk at the end (a crash mid-write) is cut at open.
        let last = log.segments.back().unwrap().path.clone();
        drop(log);
        let mut f = File::options().append(true).open(&last).unwrap();
        f.write_all(b"WSC1 and then nothing").unwrap();
        let log = StreamLog::open(&d, retention).unwrap();
        assert_eq!(log.next_offset(), next);
        assert_eq!(read_all(&log, 0), (0..next).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn with_filter(i: u64, value: Option<&str>) -> Arc<Message> {
        use amq_protocol::types::{AMQPValue, FieldTable};
        let mut props = BasicProperties::default();
        if let Some(v) = value {
            let mut h = FieldTable::default();
            h.insert(
                "x-stream-filter-value".into(),
                AMQPValue::LongString(v.into()),
            );
            props = props.with_headers(h);
        }
        Arc::new(Message::new(
            "".into(),
            "s".into(),
            &props,
            encode_properties(&props),
            Bytes::from(i.to_be_bytes().to_vec()),
        ))
    }

    #[test]
    fn filters_skip_whole_chunks_and_take_exactly_the_values_asked_for() {
        let d = dir("filter");
        let mut log = StreamLog::open(
            &d,
            Retention {
                segment_bytes: DEFAULT_SEGMENT_BYTES,
                ..Default::default()
            },
        )
        .unwrap();
        // Chunks of 10: "eu" only, "us" only, mixed with unfiltered ones, unfiltered only.
        let mut i = 0;
        let mut chunk = |log: &mut StreamLog, f: &dyn Fn(u64) -> Option<&'static str>| {
            let batch: Vec<_> = (0..10)
                .map(|k| {
                    i += 1;
                    with_filter(i - 1, f(k))
                })
                .collect();
            log.append(&batch).unwrap();
        };
        for _ in 0..5 {
            chunk(&mut log, &|_| Some("eu"));
            chunk(&mut log, &|_| Some("us"));
            chunk(&mut log, &|k| if k % 2 == 0 { Some("eu") } else { None });
            chunk(&mut log, &|_| None);
        }
        let read = |filter: StreamFilter| {
            let mut r = log.reader(0);
            let mut out = Vec::new();
            while r.read(&log, 1000, Some(&filter), &mut out) {}
            let offsets: Vec<u64> = out.iter().map(|m| m.offset).collect();
            (offsets, r.skipped_chunks)
        };
        let eu = StreamFilter {
            values: vec![b"eu".to_vec()],
            match_unfiltered: false,
        };
        let (got, skipped) = read(eu.clone());
        let want: Vec<u64> = (0..200)
            .filter(|o| matches!((o / 10) % 4, 0) || ((o / 10) % 4 == 2 && o % 2 == 0))
            .collect();
        assert_eq!(got, want);
        assert!(
            skipped >= 10,
            "the us-only and unfiltered-only chunks were not read: {skipped}"
        );
        let (got, _) = read(StreamFilter {
            match_unfiltered: true,
            ..eu
        });
        let want: Vec<u64> = (0..200).filter(|o| (o / 10) % 4 != 1).collect();
        assert_eq!(got, want, "with unfiltered messages");
        let (got, skipped) = read(StreamFilter {
            values: vec![b"asia".to_vec()],
            match_unfiltered: false,
        });
        assert!(got.is_empty());
        assert!(skipped >= 15, "{skipped}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_header_is_not_trusted() {
        let mut h = ChunkHeader {
            first_offset: 0,
            count: 1,
            timestamp_ms: 0,
            data_len: 10,
            crc: 0,
            filter_len: 10,
        };
        assert!(ChunkHeader::decode(&h.encode()).is_some());
        h.filter_len = u32::MAX;
        assert!(
            ChunkHeader::decode(&h.encode()).is_none(),
            "a filter longer than its data"
        );
    }

    #[test]
    fn retention_drops_whole_segments_from_the_head() {
        let d = dir("retention");
        let retention = Retention {
            segment_bytes: 10_000,
            max_bytes: Some(50_000),
            ..Retention::default()
        };
        let mut log = StreamLog::open(&d, retention).unwrap();
        for i in 0..200 {
            log.append(&[msg(i, 1000)]).unwrap();
        }
        assert!(log.bytes() <= 50_000 + 10_000, "{} bytes", log.bytes());
        let first = log.first_offset();
        assert!(first > 100, "first offset {first}");
        assert_eq!(read_all(&log, 0), (first..200).collect::<Vec<_>>());
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            log.segments.len(),
            "dropped segments are deleted"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn offsets_by_time_find_the_first_chunk_at_or_after() {
        let d = dir("time");
        let mut log = StreamLog::open(
            &d,
            Retention {
                segment_bytes: DEFAULT_SEGMENT_BYTES,
                ..Default::default()
            },
        )
        .unwrap();
        log.append(&[msg(0, 10), msg(1, 10)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        log.append(&[msg(2, 10)]).unwrap();
        assert_eq!(log.offset_at_time(0), 0);
        assert_eq!(log.offset_at_time(t), 2);
        assert_eq!(log.offset_at_time(now_ms() + 1000), 3);
        assert_eq!(log.last_chunk(), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}
