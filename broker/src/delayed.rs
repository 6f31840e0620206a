//! `x-delayed-message` exchanges, compatible with `rabbitmq-delayed-message-exchange`: a message
//! published with a positive `x-delay` header (milliseconds) is held until it is due, then routed
//! as an exchange of the `x-delayed-type` type would route it (with the bindings of that moment).
//! Without the header, or with zero or a negative delay, it is routed at once.
//!
//! Each such exchange has a scheduler task that owns its schedule. With a data directory the
//! schedule lives on disk, in time buckets, so memory does not grow with the number of scheduled
//! messages:
//!
//! - a message due within the hour goes to a **fine** bucket file (one per second of due time);
//!   a later one to a **coarse** bucket file (one per hour). A coarse bucket is split into fine
//!   ones when its hour comes within the next hour. Delays are 64-bit milliseconds: no 49.7-day
//!   limit;
//! - a fine bucket is read into memory (a heap ordered by due time, then publish order) one
//!   second before it starts, and each message is routed when a timer at its due time fires;
//!   the bucket's file is deleted once every queue its messages went to has stored them (each
//!   internal publish carries a confirm token back to the scheduler, as a publisher's would);
//! - memory holds one counter per bucket file and the messages of the loaded second or two.
//!
//! Records carry a CRC-32; a torn record at the end of a file (a crash mid-append) is dropped.
//! A persistent message published to a durable delayed exchange is confirmed once its record is
//! fsynced, and survives restarts and `kill -9`; messages due while the broker was down are
//! routed when it starts, in due order. Transient messages, and those of non-durable exchanges,
//! are written without a sync and dropped at the next start. A crash while a due second is
//! being routed may route again, when the broker comes back, the messages whose queues had not
//! stored them yet (at least once, never lost). Without a data directory (an embedded in-memory broker) the schedule is a heap in
//! memory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Envelope, ExchangeKind};
use crate::message::Message;
use crate::queue::{ConfirmToken, ConnEvent, ConnSender, QueueCmd, QueueHost};

/// Width of a fine bucket (one file per second of due time).
const FINE_MS: u64 = 1000;
/// Width of a coarse bucket (one file per hour).
const COARSE_MS: u64 = 3_600_000;
/// A fine bucket is loaded this long before it starts.
const LOOKAHEAD_MS: u64 = 1000;
/// Schedule commands taken per round.
const ROUND: usize = 4096;

/// The type an `x-delayed-message` exchange routes as (`x-delayed-type`), with the plugin's
/// refusals (406).
pub fn delayed_type(args: &FieldTable) -> AmqpResult<ExchangeKind> {
    let bad = || {
        AmqpError::precondition(
            "Invalid argument, 'x-delayed-type' must be an existing exchange type",
        )
    };
    let name = match args.inner().get("x-delayed-type") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => return Err(bad()),
    };
    match ExchangeKind::parse(&name) {
        Ok(ExchangeKind::Delayed) | Err(_) => Err(bad()),
        Ok(kind) => Ok(kind),
    }
}

/// A message's delay: its `x-delay` header if it is a positive integer (milliseconds).
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let v = headers?.inner().get("x-delay")?;
    let n = crate::queue::args::as_int(v)
        .or_else(|| crate::queue::args::as_str(v).and_then(|s| s.trim().parse::<i128>().ok()))?;
    u64::try_from(n).ok().filter(|n| *n > 0)
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Cmd {
    Schedule {
        message: Arc<Message>,
        due_ms: u64,
        confirm: Option<ConfirmToken>,
    },
    /// The exchange was deleted: drop the schedule and its files.
    Delete,
}

/// A delayed exchange's scheduler, as the exchange holds it.
#[derive(Clone)]
pub struct DelayedHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    scheduled: Arc<AtomicU64>,
    /// Persistent messages are fsynced before they are confirmed.
    syncs: bool,
    /// This incarnation's directory (an exchange deleted and declared again gets a new one).
    dir: Option<PathBuf>,
    /// Set when the exchange is deleted: the scheduler writes nothing more.
    deleted: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for DelayedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayedHandle")
            .field("scheduled", &self.scheduled())
            .finish()
    }
}

impl DelayedHandle {
    /// Holds `message` until `delay_ms` from now. `confirm` is resolved once it is stored
    /// (see [`Self::confirms_async`]).
    pub fn schedule(&self, message: Arc<Message>, delay_ms: u64, confirm: Option<ConfirmToken>) {
        self.scheduled.fetch_add(1, Ordering::Relaxed);
        let cmd = Cmd::Schedule {
            message,
            due_ms: now_ms().saturating_add(delay_ms),
            confirm,
        };
        if let Err(mpsc::error::SendError(Cmd::Schedule { confirm, .. })) = self.tx.send(cmd) {
            self.scheduled.fetch_sub(1, Ordering::Relaxed);
            if let Some(c) = confirm {
                c.resolve(false);
            }
        }
    }

    /// Whether a publish of `message` must wait for the scheduler before it is confirmed
    /// (a persistent message on a durable exchange with a data directory).
    pub fn confirms_async(&self, message: &Message) -> bool {
        self.syncs && message.is_persistent()
    }

    /// Messages waiting.
    pub fn scheduled(&self) -> u64 {
        self.scheduled.load(Ordering::Relaxed)
    }

    /// The exchange is gone: its scheduled messages with it, at once (a new exchange of the
    /// same name starts empty, in a directory of its own).
    pub fn delete(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = self.tx.send(Cmd::Delete);
    }
}

/// A scheduled message in memory, ordered by due time, then by publish order.
struct Due {
    due_ms: u64,
    seq: u64,
    message: Arc<Message>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.due_ms, self.seq) == (o.due_ms, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due_ms, self.seq).cmp(&(o.due_ms, o.seq))
    }
}

/// Which bucket file: fine (`f`, per second) or coarse (`c`, per hour), by start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Bucket {
    Fine(u64),
    Coarse(u64),
}

impl Bucket {
    fn file_name(self) -> String {
        match self {
            Bucket::Fine(s) => format!("f-{s:020}.dly"),
            Bucket::Coarse(s) => format!("c-{s:020}.dly"),
        }
    }

    fn parse(name: &str) -> Option<Bucket> {
        let stem = name.strip_suffix(".dly")?;
        let (kind, start) = stem.split_once('-')?;
        let start: u64 = start.parse().ok()?;
        match kind {
            "f" => Some(Bucket::Fine(start)),
            "c" => Some(Bucket::Coarse(start)),
            _ => None,
        }
    }
}

/// A record: `[len u32][crc u32][due u64][seq u64][persistent u8][rk len u8][rk][props len
/// u32][props][body]`, `len` and the CRC covering what follows them.
fn encode(out: &mut Vec<u8>, due_ms: u64, seq: u64, m: &Message) {
    let rk = m.routing_key().as_bytes();
    let props = m.raw_properties();
    let body = m.body();
    let len = 8 + 8 + 1 + 1 + rk.len() + 4 + props.len() + body.len();
    let at = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&due_ms.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(u8::from(m.is_persistent()));
    out.push(rk.len() as u8);
    out.extend_from_slice(rk);
    out.extend_from_slice(&(props.len() as u32).to_le_bytes());
    out.extend_from_slice(props);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[at + 8..]);
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The records of a bucket file, as (due, seq, persistent, message); stops at the first torn
/// or damaged record.
fn decode_all(exchange: &str, bytes: &[u8]) -> Vec<(u64, u64, bool, Message)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().unwrap());
        let Some(rec) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(rec) != crc {
            break;
        }
        at += 8 + len;
        let Some(parsed) = decode_one(exchange, rec) else {
            break;
        };
        out.push(parsed);
    }
    out
}

fn decode_one(exchange: &str, rec: &[u8]) -> Option<(u64, u64, bool, Message)> {
    let due = u64::from_le_bytes(rec.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(rec.get(8..16)?.try_into().ok()?);
    let persistent = *rec.get(16)? == 1;
    let rk_len = *rec.get(17)? as usize;
    let rk = rec.get(18..18 + rk_len)?;
    let p = 18 + rk_len;
    let props_len = u32::from_le_bytes(rec.get(p..p + 4)?.try_into().ok()?) as usize;
    let props = rec.get(p + 4..p + 4 + props_len)?;
    let body = Bytes::copy_from_slice(rec.get(p + 4 + props_len..)?);
    let scanned = crate::protocol::scan_properties(props)?;
    let expiration = scanned
        .expiration
        .as_ref()
        .and_then(|e| crate::queue::args::parse_expiration(e.as_str()).ok());
    let m = Message::from_parts(
        exchange.as_bytes(),
        rk,
        persistent,
        scanned.priority.unwrap_or(0),
        expiration,
        props,
        &[body],
    );
    Some((due, seq, persistent, m))
}

/// This exchange's directory for a new scheduler: a durable exchange's recovers the newest
/// incarnation found (others are leftovers of a deletion a crash interrupted); anything else
/// starts a new one.
fn incarnation(exchange_dir: &Path, durable: bool) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(exchange_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    let newest = if durable { found.pop() } else { None };
    for old in found {
        let _ = std::fs::remove_dir_all(old);
    }
    newest.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        exchange_dir.join(format!("{nanos:032x}"))
    })
}

/// Starts the scheduler of exchange `exchange` in vhost `host`. `dir`: the exchange's
/// directory (`None`: the schedule stays in memory); `durable`: persistent messages are synced
/// and recovered from it.
pub fn spawn(
    exchange: Arc<str>,
    host: Weak<dyn QueueHost>,
    dir: Option<PathBuf>,
    durable: bool,
) -> DelayedHandle {
    let dir = dir.map(|d| incarnation(&d, durable));
    let deleted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::unbounded_channel();
    let (stored_tx, stored_rx) = mpsc::unbounded_channel();
    let scheduled = Arc::new(AtomicU64::new(0));
    let mut s = Scheduler {
        deleted: deleted.clone(),
        stored_tx,
        exchange,
        host,
        dir,
        durable,
        fine: BTreeMap::new(),
        coarse: BTreeMap::new(),
        loaded: BTreeMap::new(),
        heap: BinaryHeap::new(),
        next_seq: 0,
        scheduled: scheduled.clone(),
    };
    s.recover();
    let handle = DelayedHandle {
        tx,
        scheduled,
        syncs: durable && s.dir.is_some(),
        dir: s.dir.clone(),
        deleted,
    };
    tokio::spawn(s.run(rx, stored_rx));
    handle
}

struct Scheduler {
    exchange: Arc<str>,
    host: Weak<dyn QueueHost>,
    dir: Option<PathBuf>,
    durable: bool,
    /// Fine bucket files not loaded yet: start → records.
    fine: BTreeMap<u64, u64>,
    /// Coarse bucket files: start → records.
    coarse: BTreeMap<u64, u64>,
    /// Fine buckets read into `heap`, with how many of their messages are not yet routed and
    /// stored by the queues they went to (their files go at zero).
    loaded: BTreeMap<u64, u64>,
    /// Where queues report that they stored a routed message (epoch: its bucket).
    stored_tx: ConnSender,
    /// The exchange was deleted (its directory is gone; write nothing).
    deleted: Arc<std::sync::atomic::AtomicBool>,
    heap: BinaryHeap<Reverse<Due>>,
    next_seq: u64,
    scheduled: Arc<AtomicU64>,
}

impl Scheduler {
    fn path(&self, b: Bucket) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(b.file_name()))
    }

    /// Reads the bucket files left by the previous run (a durable exchange's; anything else
    /// is deleted).
    fn recover(&mut self) {
        let Some(dir) = self.dir.clone() else {
            return;
        };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create a delayed exchange's directory; its schedule stays in memory");
            self.dir = None;
            return;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut total = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(b) = Bucket::parse(&name.to_string_lossy()) else {
                continue;
            };
            // Only persistent records survive: rewrite the file with them alone.
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            let records = decode_all(&self.exchange, &bytes);
            let keep: Vec<_> = records.into_iter().filter(|r| r.2).collect();
            if keep.is_empty() {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let mut buf = Vec::new();
            for (due, seq, _, m) in &keep {
                encode(&mut buf, *due, *seq, m);
                self.next_seq = self.next_seq.max(seq + 1);
            }
            if buf.len() != bytes.len() {
                let tmp = e.path().with_extension("tmp");
                if std::fs::write(&tmp, &buf)
                    .and_then(|()| File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, e.path()))
                    .is_err()
                {
                    tracing::warn!(file = %e.path().display(), "cannot rewrite a delayed bucket file");
                }
            }
            let n = keep.len() as u64;
            total += n;
            match b {
                Bucket::Fine(s) => *self.fine.entry(s).or_default() += n,
                Bucket::Coarse(s) => *self.coarse.entry(s).or_default() += n,
            }
        }
        self.scheduled.store(total, Ordering::Relaxed);
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
        mut stored: mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        let mut cmds = Vec::with_capacity(ROUND);
        let mut events = Vec::new();
        loop {
            self.maintain();
            let wake = self.next_wake();
            let sleep = async {
                match wake {
                    Some(at) => {
                        let wait = at.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = rx.recv_many(&mut cmds, ROUND) => {
                    if n == 0 {
                        return;
                    }
                }
                _ = stored.recv_many(&mut events, ROUND) => {
                    for e in events.drain(..) {
                        if let ConnEvent::Confirm { epoch, .. } = e {
                            self.settled(epoch, 1);
                        }
                    }
                }
                _ = sleep => {}
            }
            if cmds.iter().any(|c| matches!(c, Cmd::Delete)) {
                for c in cmds.drain(..) {
                    if let Cmd::Schedule {
                        confirm: Some(t), ..
                    } = c
                    {
                        t.resolve(true);
                    }
                }
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
                self.scheduled.store(0, Ordering::Relaxed);
                return;
            }
            self.take(&mut cmds);
        }
    }

    /// Stores a round of scheduled messages, a bucket file at a time, then resolves their
    /// confirms. A bucket whose write fails keeps none of its messages: they are nacked and
    /// never routed (a publisher that retries them would otherwise get them twice).
    fn take(&mut self, cmds: &mut Vec<Cmd>) {
        let now = now_ms();
        let mut rounds: HashMap<Bucket, Vec<(Due, Option<ConfirmToken>)>> = HashMap::new();
        for cmd in cmds.drain(..) {
            let Cmd::Schedule {
                message,
                due_ms,
                confirm,
            } = cmd
            else {
                continue;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            let due = Due {
                due_ms,
                seq,
                message,
            };
            if self.dir.is_none() {
                self.heap.push(Reverse(due));
                confirms_resolve(confirm, true);
                continue;
            }
            let bucket = if due_ms >= now + COARSE_MS {
                Bucket::Coarse(due_ms / COARSE_MS * COARSE_MS)
            } else {
                Bucket::Fine(due_ms / FINE_MS * FINE_MS)
            };
            rounds.entry(bucket).or_default().push((due, confirm));
        }
        for (bucket, entries) in rounds {
            let mut bytes = Vec::new();
            let mut sync = false;
            for (d, _) in &entries {
                encode(&mut bytes, d.due_ms, d.seq, &d.message);
                sync |= self.durable && d.message.is_persistent();
            }
            let ok = self.append(bucket, &bytes, sync);
            if !ok {
                self.scheduled
                    .fetch_sub(entries.len() as u64, Ordering::Relaxed);
            }
            for (due, confirm) in entries {
                confirms_resolve(confirm, ok);
                if ok {
                    self.place(bucket, due, now);
                }
            }
        }
    }

    /// Puts a stored message where it waits: in memory if its second is (about to be) loaded,
    /// else counted against its bucket file. (A second whose file is not loaded yet is loaded
    /// whole later, this record with it.)
    fn place(&mut self, bucket: Bucket, due: Due, now: u64) {
        match bucket {
            Bucket::Fine(s)
                if self.loaded.contains_key(&s)
                    || (!self.fine.contains_key(&s) && s <= now + LOOKAHEAD_MS) =>
            {
                *self.loaded.entry(s).or_default() += 1;
                self.heap.push(Reverse(due));
            }
            Bucket::Fine(s) => *self.fine.entry(s).or_default() += 1,
            Bucket::Coarse(s) => *self.coarse.entry(s).or_default() += 1,
        }
    }

    /// Appends records to a bucket file, synced if `sync`. Whether it worked.
    fn append(&self, bucket: Bucket, bytes: &[u8], sync: bool) -> bool {
        let Some(path) = self.path(bucket) else {
            return true;
        };
        if self.deleted.load(Ordering::SeqCst) {
            return true;
        }
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                if sync {
                    f.sync_data()?;
                }
                Ok(())
            });
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot write a delayed message");
                false
            }
        }
    }

    fn read(&self, bucket: Bucket) -> Vec<(u64, u64, bool, Message)> {
        let Some(path) = self.path(bucket) else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        if let Err(e) = File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            tracing::error!(file = %path.display(), error = %e, "cannot read delayed messages");
        }
        decode_all(&self.exchange, &bytes)
    }

    fn remove(&self, bucket: Bucket) {
        if let Some(path) = self.path(bucket) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Splits coarse buckets that come within the hour, loads fine buckets about to start,
    /// routes what is due and deletes the files of seconds fully routed.
    fn maintain(&mut self) {
        let now = now_ms();
        while let Some((&start, _)) = self.coarse.first_key_value() {
            if start > now + COARSE_MS {
                break;
            }
            self.coarse.remove(&start);
            let mut writes: HashMap<u64, Vec<u8>> = HashMap::new();
            let mut sync = BTreeSet::new();
            for (due, seq, persistent, m) in self.read(Bucket::Coarse(start)) {
                let fine = due / FINE_MS * FINE_MS;
                encode(writes.entry(fine).or_default(), due, seq, &m);
                if persistent && self.durable {
                    sync.insert(fine);
                }
                match self.loaded.get_mut(&fine) {
                    Some(n) => {
                        *n += 1;
                        self.heap.push(Reverse(Due {
                            due_ms: due,
                            seq,
                            message: Arc::new(m),
                        }));
                    }
                    None => *self.fine.entry(fine).or_default() += 1,
                }
            }
            let mut ok = true;
            for (fine, bytes) in writes {
                ok &= self.append(Bucket::Fine(fine), &bytes, sync.contains(&fine));
            }
            if ok {
                self.remove(Bucket::Coarse(start));
            }
        }
        while let Some((&start, _)) = self.fine.first_key_value() {
            if start > now + LOOKAHEAD_MS {
                break;
            }
            self.fine.remove(&start);
            let records = self.read(Bucket::Fine(start));
            *self.loaded.entry(start).or_default() += records.len() as u64;
            for (due_ms, seq, _, m) in records {
                self.heap.push(Reverse(Due {
                    due_ms,
                    seq,
                    message: Arc::new(m),
                }));
            }
        }
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse(d)| d.due_ms <= now) {
            let Reverse(d) = self.heap.pop().expect("peeked");
            due.push(d);
        }
        if !due.is_empty() {
            self.route(due);
        }
        // Seconds that are over and fully stored leave memory.
        let over: Vec<u64> = self
            .loaded
            .iter()
            .filter(|(s, n)| **n == 0 && *s + FINE_MS <= now)
            .map(|(s, _)| *s)
            .collect();
        for s in over {
            self.loaded.remove(&s);
        }
    }

    /// `n` messages of the loaded second `bucket` are stored where they were routed: once
    /// none is left, its file goes (a later schedule in the same second writes a new one).
    fn settled(&mut self, bucket: u64, n: u64) {
        if let Some(left) = self.loaded.get_mut(&bucket) {
            *left = left.saturating_sub(n);
            if *left == 0 {
                self.remove(Bucket::Fine(bucket));
            }
        }
    }

    /// Routes due messages as the exchange's type routes them, now. With a data directory each
    /// queue confirms back when it has stored the message (see [`Self::settled`]).
    fn route(&mut self, messages: Vec<Due>) {
        self.scheduled
            .fetch_sub(messages.len() as u64, Ordering::Relaxed);
        let host = self.host.upgrade();
        let mut targets = Vec::new();
        for Due {
            due_ms,
            seq,
            message: m,
        } in messages
        {
            let bucket = due_ms / FINE_MS * FINE_MS;
            let Some(host) = &host else {
                self.settled(bucket, 1);
                continue;
            };
            let props = m.properties();
            targets.clear();
            let routed = host.route_dead_letter(
                &self.exchange,
                &Envelope {
                    routing_key: m.routing_key(),
                    headers: props.headers().as_ref(),
                    raw_properties: m.raw_properties(),
                },
                &mut targets,
            );
            if routed.is_err() {
                targets.clear();
            }
            let tracked = self.dir.is_some() && self.loaded.contains_key(&bucket);
            if tracked {
                // One outstanding message becomes one outstanding store per queue.
                if let Some(n) = self.loaded.get_mut(&bucket) {
                    *n += targets.len() as u64;
                }
                self.settled(bucket, 1);
            }
            for q in &targets {
                let confirm =
                    tracked.then(|| ConfirmToken::new(self.stored_tx.clone(), 0, bucket, seq));
                q.send_internal(QueueCmd::Publish {
                    message: m.clone(),
                    confirm,
                    handoff: None,
                });
            }
        }
    }

    /// When to run next: the earliest due message, fine bucket to load, coarse bucket to
    /// split, or loaded second to clean up.
    fn next_wake(&self) -> Option<u64> {
        [
            self.heap.peek().map(|Reverse(d)| d.due_ms),
            self.fine
                .first_key_value()
                .map(|(s, _)| s.saturating_sub(LOOKAHEAD_MS)),
            self.coarse
                .first_key_value()
                .map(|(s, _)| s.saturating_sub(COARSE_MS)),
            // A second fully stored leaves memory when it is over; one still waiting for
            // its queues is woken by their confirms.
            self.loaded
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(s, _)| s + FINE_MS)
                .min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

fn confirms_resolve(confirm: Option<ConfirmToken>, ok: bool) {
    if let Some(c) = confirm {
        c.resolve(ok);
    }
}

/// Where a delayed exchange's bucket files go under the data directory.
pub fn exchange_dir(root: &Path, vhost: &str, name: &str) -> PathBuf {
    root.join("delayed")
        .join(hex(vhost.as_bytes()))
        .join(hex(name.as_bytes()))
}

/// The directory of a vhost's delayed exchanges.
pub fn vhost_dir(root: &Path, vhost: &str) -> PathBuf {
    root.join("delayed").join(hex(vhost.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "_".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(rk: &str, body: &str) -> Message {
        let props = crate::protocol::encode_properties(
            &amq_protocol::protocol::BasicProperties::default().with_delivery_mode(2),
        );
        Message::from_parts(
            b"x",
            rk.as_bytes(),
            true,
            0,
            None,
            &props,
            &[Bytes::copy_from_slice(body.as_bytes())],
        )
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let mut buf = Vec::new();
        encode(&mut buf, 10, 1, &message("a", "one"));
        encode(&mut buf, 20, 2, &message("b", "two"));
        let whole = decode_all("x", &buf);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[1].0, 20);
        assert_eq!(whole[1].3.routing_key(), "b");
        assert_eq!(whole[1].3.body(), b"two");
        assert!(whole[1].2, "persistent");
        let torn = decode_all("x", &buf[..buf.len() - 2]);
        assert_eq!(torn.len(), 1);
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            decode_all("x", &bad).len(),
            1,
            "a damaged record is dropped"
        );
    }

    #[test]
    fn delays_and_types_are_read_as_the_plugin_reads_them() {
        let h = |v: AMQPValue| {
            let mut t = FieldTable::default();
            t.insert("x-delay".into(), v);
            delay_of(Some(&t))
        };
        assert_eq!(h(AMQPValue::LongLongInt(5000)), Some(5000));
        assert_eq!(h(AMQPValue::LongInt(-5)), None);
        assert_eq!(h(AMQPValue::LongLongInt(0)), None);
        // 60 days: past the 49.7 days of a 32-bit millisecond timer.
        assert_eq!(
            h(AMQPValue::LongLongInt(60 * 86_400_000)),
            Some(5_184_000_000)
        );
        assert_eq!(delay_of(None), None);
        let t = |s: &str| {
            let mut t = FieldTable::default();
            t.insert("x-delayed-type".into(), AMQPValue::LongString(s.into()));
            t
        };
        assert!(matches!(delayed_type(&t("topic")), Ok(ExchangeKind::Topic)));
        for bad in ["x-delayed-message", "nope"] {
            assert_eq!(delayed_type(&t(bad)).unwrap_err().code.code(), 406);
        }
        assert_eq!(
            delayed_type(&FieldTable::default())
                .unwrap_err()
                .code
                .code(),
            406
        );
        assert_eq!(
            Bucket::parse(&Bucket::Fine(7000).file_name()),
            Some(Bucket::Fine(7000))
        );
    }
}
