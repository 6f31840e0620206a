//! The durable store, on sled. Definitions and messages live in separate trees:
//!
//! - `defs`: durable exchanges, queues (each with a numeric id) and bindings, as JSON;
//! - `msgs`: persistent messages of durable queues, in chunks of a delivery round's publishes
//!   with ack records for settlements, keyed by queue id first (big-endian, so a queue's
//!   messages are one ordered key range in one shared tree: sled's space use grows badly with
//!   many trees); see [`super::queue_log`]. A chunk's record is a pointer: its bytes are in
//!   the append-only files of `segments/` ([`super::segments`]), because sled keeps what it
//!   reads and writes in memory far beyond its cache capacity;
//! - `dlv`: marks for messages delivered and not yet acked, so a clean restart flags exactly
//!   those as redelivered;
//! - `meta`: format marker and the clean-shutdown flag.
//!
//! A message routed to several durable queues is stored once per queue: simple, atomic per
//! queue, and a fanout of persistent messages is rare enough that the space is worth it.
//! (Measured: a 16-byte persistent message costs about 60 bytes of record either way; sharing
//! bodies would need cross-queue reference counts in the store for little gain.)
//!
//! Publisher confirms wait for `flush` (fdatasync of the segments written, then sled's fsync).
//! One flusher thread does group commit: every write that arrived while the previous flush
//! ran is covered by the next one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::protocol::scan_properties;
use crate::store::StoredMessage;

use super::segments::Segments;

const FORMAT: &[u8] = b"warren-store-2";
/// The format before chunked message records: one key per message, (queue id, seq).
const FORMAT_1: &[u8] = b"warren-store-1";

/// A store failure at open time, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another Warren process (lock held on {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot open the store in {path}: {source}")]
    Sled { path: PathBuf, source: sled::Error },
    #[error("cannot open the message segments in {path}: {source}")]
    Segments {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a Warren store ({detail}); point --data-dir at an empty or Warren directory")]
    Foreign { path: PathBuf, detail: String },
    #[error("the store in {path} does not match its message segments: {detail}. Nothing was deleted; restore the missing or replaced files, or move {path} away to start with an empty store")]
    Mismatch { path: PathBuf, detail: String },
}

/// A durable exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExchangeDef {
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A durable queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueDef {
    pub name: String,
    /// Key prefix of its messages in `msgs`.
    pub id: u64,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// A binding between durable objects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindingDef {
    pub source: String,
    /// `true` when the destination is an exchange.
    pub to_exchange: bool,
    pub destination: String,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// Definitions found at start.
#[derive(Debug, Default)]
pub struct Recovered {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// The previous run did not shut down cleanly.
    pub unclean: bool,
}

type Waiter = Box<dyn FnOnce(bool) + Send>;

/// The open store of a data directory.
pub struct Disk {
    path: PathBuf,
    db: sled::Db,
    defs: sled::Tree,
    msgs: sled::Tree,
    dlv: sled::Tree,
    meta: sled::Tree,
    /// The bytes of message chunks (sled holds pointers to them).
    segments: Arc<Segments>,
    flusher: Option<mpsc::Sender<Waiter>>,
    /// The group-commit thread, joined on drop so the database is closed when `Disk` is.
    flush_thread: Option<std::thread::JoinHandle<()>>,
    /// Held for the life of the store: a second broker on the same directory fails to start.
    _lock: File,
}

/// The key of a delivered mark.
fn msg_key(queue: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&queue.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// What a stored record says about its message besides the message itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// When it expires, in Unix milliseconds (TTLs keep counting across restarts).
    pub expires_unix_ms: Option<u64>,
    /// Failed deliveries so far, as the broker counted them.
    pub delivery_count: u32,
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RecordMeta {
    /// The meta of a message held in memory.
    pub fn of(msg: &StoredMessage) -> Self {
        let now = std::time::Instant::now();
        RecordMeta {
            expires_unix_ms: msg
                .expires_at
                .map(|t| unix_ms_now() + t.saturating_duration_since(now).as_millis() as u64),
            delivery_count: msg.delivery_count,
        }
    }

    /// The expiry as an instant of this process (in the past if it already passed).
    pub fn expires_at(&self) -> Option<std::time::Instant> {
        self.expires_unix_ms.map(|ms| {
            let now_ms = unix_ms_now();
            let now = std::time::Instant::now();
            if ms > now_ms {
                now + std::time::Duration::from_millis(ms - now_ms)
            } else {
                now.checked_sub(std::time::Duration::from_millis(now_ms - ms))
                    .unwrap_or(now)
            }
        })
    }
}

/// Encodes a message for `msgs`: version 3, flags (bit 0: the x-death history is the broker's),
/// expiry, delivery count, exchange, routing key, properties as the publisher encoded them,
/// body.
pub fn encode_message(msg: &StoredMessage) -> Vec<u8> {
    let m = &msg.message;
    let meta = RecordMeta::of(msg);
    let (x, rk) = (m.exchange_bytes(), m.routing_key_bytes());
    let mut v =
        Vec::with_capacity(22 + x.len() + rk.len() + m.raw_properties().len() + m.body().len());
    v.push(3);
    v.push(u8::from(m.death.is_some()));
    v.extend_from_slice(&meta.expires_unix_ms.unwrap_or(0).to_be_bytes());
    v.extend_from_slice(&meta.delivery_count.to_be_bytes());
    v.push(x.len() as u8);
    v.extend_from_slice(x);
    v.push(rk.len() as u8);
    v.extend_from_slice(rk);
    v.extend_from_slice(&(m.raw_properties().len() as u32).to_be_bytes());
    v.extend_from_slice(m.raw_properties());
    v.extend_from_slice(m.body());
    v
}

/// The meta of an encoded record, without decoding the message.
pub fn record_meta(v: &[u8]) -> RecordMeta {
    match v.first() {
        Some(3) if v.len() >= 14 => {
            let exp = u64::from_be_bytes(v[2..10].try_into().unwrap_or_default());
            RecordMeta {
                expires_unix_ms: (exp != 0).then_some(exp),
                delivery_count: u32::from_be_bytes(v[10..14].try_into().unwrap_or_default()),
            }
        }
        _ => RecordMeta::default(),
    }
}

/// Decodes what `encode_message` wrote; `None` if it is not a message.
pub fn decode_message(v: &[u8]) -> Option<Message> {
    let (trusted_death, mut at) = match v.first() {
        Some(1) => (false, 1),
        Some(2) => (true, 1),
        Some(3) => (v.get(1)? & 1 == 1, 14),
        _ => return None,
    };
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = v.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let xl = take(1)?[0] as usize;
    let x = take(xl)?;
    let rl = take(1)?[0] as usize;
    let rk = take(rl)?;
    let pl = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
    let raw_properties = take(pl)?;
    let body = v.get(at..)?;
    let props = scan_properties(raw_properties)?;
    let mut m = Message::from_slices(
        x,
        rk,
        props.delivery_mode == Some(2),
        props.priority.unwrap_or(0),
        props
            .expiration
            .as_ref()
            .and_then(|e| e.as_str().parse().ok()),
        raw_properties,
        body,
    );
    // Only the broker writes the store, so a stored x-death history is the broker's own.
    if trusted_death {
        m.restore_death();
    }
    Some(m)
}

impl Disk {
    /// Opens (or creates) the store in `path`. `cache_bytes` caps sled's page cache.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<(Arc<Disk>, Recovered), OpenError> {
        std::fs::create_dir_all(path).map_err(|source| OpenError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
        let lock_path = path.join("warren.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| OpenError::CreateDir {
                path: path.to_owned(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        let sled_err = |source| OpenError::Sled {
            path: path.to_owned(),
            source,
        };
        let fresh = !path.join("db").exists();
        let segments_dir = path.join("segments");
        let in_segments =
            super::segments::summarize(&segments_dir).map_err(|source| OpenError::Segments {
                path: segments_dir.clone(),
                source,
            })?;
        if fresh && (in_segments.segment_files > 0 || in_segments.store_id.is_some()) {
            // A new store would sweep the segments as orphans: refuse before creating anything.
            return Err(OpenError::Mismatch {
                path: path.to_owned(),
                detail: format!(
                    "{} holds {} segment file(s) but there is no database {}",
                    segments_dir.display(),
                    in_segments.segment_files,
                    path.join("db").display()
                ),
            });
        }
        if fresh {
            // Refuse to scatter a new store among somebody else's files.
            let foreign: Vec<String> = std::fs::read_dir(path)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| {
                            n != "warren.lock"
                                && n != "segments"
                                && n != "conf"
                                && n != "blobs"
                                && !n.starts_with("snap.")
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !foreign.is_empty() {
                return Err(OpenError::Foreign {
                    path: path.to_owned(),
                    detail: format!("it already contains {}", foreign.join(", ")),
                });
            }
        }
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(200))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(sled_err)?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        match meta.get("format").map_err(sled_err)? {
            Some(f) if f.as_ref() == FORMAT => {}
            Some(f) if f.as_ref() == FORMAT_1 => {
                migrate_from_1(&db).map_err(sled_err)?;
                meta.insert("format", FORMAT).map_err(sled_err)?;
            }
            Some(other) => {
                return Err(OpenError::Foreign {
                    path: path.to_owned(),
                    detail: format!("format marker {:?}", String::from_utf8_lossy(&other)),
                })
            }
            None if fresh || db.tree_names().len() <= 2 => {
                meta.insert("format", FORMAT).map_err(sled_err)?;
            }
            None => {
                return Err(OpenError::Foreign {
                    path: path.to_owned(),
                    detail: "a sled database without Warren's format marker".into(),
                })
            }
        }
        let msgs = db.open_tree("msgs").map_err(sled_err)?;
        // Before anything changes in the store (its clean flag included).
        let store_id = pair_with_segments(path, &meta, &msgs, &in_segments)?;
        let unclean = !fresh && meta.remove("clean").map_err(sled_err)?.is_none();
        let defs = db.open_tree("defs").map_err(sled_err)?;
        let dlv = db.open_tree("dlv").map_err(sled_err)?;
        db.flush().map_err(sled_err)?;
        if in_segments.store_id.is_none() {
            // After the database holds the id: a crash in between leaves a pair that the
            // next start completes.
            super::segments::write_store_id(&segments_dir, &store_id).map_err(|source| {
                OpenError::Segments {
                    path: segments_dir.clone(),
                    source,
                }
            })?;
        }

        let mut recovered = Recovered {
            unclean,
            ..Recovered::default()
        };
        for item in defs.iter() {
            let (k, v) = item.map_err(sled_err)?;
            let bad = |e: serde_json::Error| OpenError::Foreign {
                path: path.to_owned(),
                detail: format!(
                    "unreadable definition {:?}: {e}",
                    String::from_utf8_lossy(&k)
                ),
            };
            match k.first() {
                Some(b'x') => recovered
                    .exchanges
                    .push(serde_json::from_slice(&v).map_err(bad)?),
                Some(b'q') => recovered
                    .queues
                    .push(serde_json::from_slice(&v).map_err(bad)?),
                Some(b'b') => recovered
                    .bindings
                    .push(serde_json::from_slice(&v).map_err(bad)?),
                _ => {}
            }
        }

        let segments = Segments::open(&segments_dir)
            .map(Arc::new)
            .map_err(|source| OpenError::Segments {
                path: segments_dir,
                source,
            })?;
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flush_db = db.clone();
        let flush_segments = Arc::clone(&segments);
        let flush_thread = std::thread::Builder::new()
            .name("warren-fsync".into())
            .spawn(move || {
                // Group commit: take every waiter that queued up, one flush for all of them.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    // Chunks before the sled records that point at them.
                    let synced = flush_segments.sync();
                    let ok = flush_db.flush().is_ok() && synced;
                    for w in batch {
                        w(ok);
                    }
                }
            })
            .map_err(|source| OpenError::CreateDir {
                path: path.to_owned(),
                source,
            })?;

        let disk = Arc::new(Disk {
            path: path.to_owned(),
            db,
            defs,
            msgs,
            dlv,
            meta,
            segments,
            flusher: Some(tx),
            flush_thread: Some(flush_thread),
            _lock: lock,
        });
        Ok((disk, recovered))
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `done(ok)` once every write made before this call is on disk.
    pub fn after_flush(&self, done: impl FnOnce(bool) + Send + 'static) {
        let waiter: Waiter = Box::new(done);
        match &self.flusher {
            Some(tx) => {
                if let Err(mpsc::SendError(w)) = tx.send(waiter) {
                    w(false);
                }
            }
            None => waiter(false),
        }
    }

    /// Flushes sled alone, without syncing segments (a power-loss test's sled that wrote its
    /// log in the background).
    #[cfg(test)]
    pub(crate) fn db_flush_for_tests(&self) -> bool {
        self.db.flush().is_ok()
    }

    /// Failures tests may inject into this store's segment writes and syncs.
    pub fn faults(&self) -> &Arc<super::faults::Faults> {
        self.segments.faults()
    }

    /// Flushes now (definitions, shutdown).
    pub fn flush(&self) -> bool {
        let synced = self.segments.sync();
        self.db.flush().is_ok() && synced
    }

    /// The segment files holding message chunks.
    pub(crate) fn segments(&self) -> &Segments {
        &self.segments
    }

    /// A fresh queue id.
    pub fn new_queue_id(&self) -> u64 {
        // generate_id is persistent and monotonic across restarts.
        self.db.generate_id().unwrap_or_else(|_| rand_id())
    }

    /// Waits until every write made before this call is on disk (group commit with the
    /// publishes' flushes; the caller holds no lock meanwhile). Whether it succeeded.
    pub async fn synced(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.after_flush(move |ok| {
            let _ = tx.send(ok);
        });
        rx.await.unwrap_or(false)
    }

    // Definitions are written to sled without waiting for the disk: whoever needs them durable
    // awaits `synced` afterwards, outside the registry's lock, and one flush covers every
    // definition and publish that came in meanwhile.

    fn put_def(&self, key: String, value: &impl Serialize) -> bool {
        let Ok(v) = serde_json::to_vec(value) else {
            return false;
        };
        self.defs.insert(key.as_bytes(), v).is_ok()
    }

    fn del_def(&self, key: String) -> bool {
        self.defs.remove(key.as_bytes()).is_ok()
    }

    /// Saves a durable exchange (on disk after the next flush: see `synced`).
    pub fn save_exchange(&self, x: &ExchangeDef) -> bool {
        self.put_def(format!("x\0{}", x.name), x)
    }

    /// Forgets a durable exchange.
    pub fn delete_exchange(&self, name: &str) -> bool {
        self.del_def(format!("x\0{name}"))
    }

    /// Saves a durable queue.
    pub fn save_queue(&self, q: &QueueDef) -> bool {
        self.put_def(format!("q\0{}", q.name), q)
    }

    /// Forgets a durable queue's definition. Its messages are gone already: the queue purged
    /// them when it was destroyed, so sled's log holds the purge before this.
    pub fn delete_queue(&self, name: &str) -> bool {
        self.del_def(format!("q\0{name}"))
    }

    fn binding_key(b: &BindingDef) -> String {
        format!(
            "b\0{}",
            serde_json::to_string(&(
                &b.source,
                b.to_exchange,
                &b.destination,
                &b.routing_key,
                &b.arguments
            ))
            .unwrap_or_default()
        )
    }

    /// Saves a binding between durable objects.
    pub fn save_binding(&self, b: &BindingDef) -> bool {
        self.put_def(Self::binding_key(b), b)
    }

    /// Forgets bindings, in one batch.
    pub fn delete_bindings(&self, bindings: &[BindingDef]) -> bool {
        if bindings.is_empty() {
            return true;
        }
        let mut batch = sled::Batch::default();
        for b in bindings {
            batch.remove(Self::binding_key(b).as_bytes());
        }
        self.defs.apply_batch(batch).is_ok()
    }

    /// The tree of message records (see [`super::queue_log`]).
    pub(crate) fn msgs(&self) -> &sled::Tree {
        &self.msgs
    }

    /// An id unique in this store, across restarts (ack records).
    pub fn new_id(&self) -> u64 {
        self.db.generate_id().unwrap_or_else(|_| rand_id())
    }

    /// Applies a batch of message writes and removals (one per queue per delivery round).
    pub fn apply(&self, batch: sled::Batch) -> bool {
        self.msgs.apply_batch(batch).is_ok()
    }

    /// Drops every record of a queue.
    pub fn purge(&self, queue: u64) {
        let prefix = queue.to_be_bytes();
        for tree in [&self.msgs, &self.dlv] {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(prefix).keys().flatten() {
                batch.remove(k);
            }
            let _ = tree.apply_batch(batch);
        }
    }

    /// The messages of a queue marked delivered at the last clean shutdown.
    pub fn delivered_marks(&self, queue: u64) -> std::collections::HashSet<u64> {
        self.dlv
            .scan_prefix(queue.to_be_bytes())
            .keys()
            .flatten()
            .filter_map(|k| Some(u64::from_be_bytes(k.get(8..16)?.try_into().ok()?)))
            .collect()
    }

    /// Forgets a queue's delivered marks: once recovered they live in memory (as redelivered
    /// flags), and the next clean shutdown writes them again.
    pub fn clear_delivered_marks(&self, queue: u64) {
        let mut batch = sled::Batch::default();
        for k in self.dlv.scan_prefix(queue.to_be_bytes()).keys().flatten() {
            batch.remove(k);
        }
        let _ = self.dlv.apply_batch(batch);
    }

    /// At a clean shutdown: records which stored messages were delivered before, so the next
    /// start flags exactly those redelivered.
    pub fn mark_delivered_many(&self, queue: u64, seqs: impl IntoIterator<Item = u64>) {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.insert(&msg_key(queue, seq)[..], &[][..]);
        }
        let _ = self.dlv.apply_batch(batch);
    }

    /// Records a clean shutdown (after everything is flushed).
    pub fn close_cleanly(&self) {
        let _ = self.db.flush();
        let _ = self.meta.insert("clean", &[1u8]);
        let _ = self.db.flush();
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.flusher.take();
        if let Some(t) = self.flush_thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks that the database and the segment directory are one store's: both carry its id.
/// A database that was deleted and recreated, or a segment directory from elsewhere, would
/// otherwise make every segment an orphan to sweep. A store from before the id (neither
/// has one) gets one now. Returns the id.
fn pair_with_segments(
    path: &Path,
    meta: &sled::Tree,
    msgs: &sled::Tree,
    in_segments: &super::segments::DirSummary,
) -> Result<String, OpenError> {
    let sled_err = |source| OpenError::Sled {
        path: path.to_owned(),
        source,
    };
    let mismatch = |detail: String| OpenError::Mismatch {
        path: path.to_owned(),
        detail,
    };
    let (db, segs) = (path.join("db"), path.join("segments"));
    let ours = meta
        .get("store_id")
        .map_err(sled_err)?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    match (ours, &in_segments.store_id) {
        (Some(a), Some(b)) if a == *b => Ok(a),
        (Some(a), Some(b)) => Err(mismatch(format!(
            "the database {} is store {a}, but the segments in {} belong to store {b}",
            db.display(),
            segs.display()
        ))),
        (Some(a), None) if in_segments.segment_files > 0 || !msgs.is_empty() => {
            Err(mismatch(format!(
                "{} has no {} file naming store {a} (the segments were removed or replaced)",
                segs.display(),
                super::segments::STORE_ID_FILE
            )))
        }
        (Some(a), None) => Ok(a),
        (None, Some(b)) => Err(mismatch(format!(
            "the segments in {} belong to store {b}, but the database {} names no store \
             (it was replaced)",
            segs.display(),
            db.display()
        ))),
        (None, None) => {
            let id = format!("{:016x}{:016x}", rand_id(), rand_id());
            meta.insert("store_id", id.as_bytes()).map_err(sled_err)?;
            Ok(id)
        }
    }
}

/// Rewrites a format-1 store's messages (one key per message) as one-message chunks.
fn migrate_from_1(db: &sled::Db) -> sled::Result<()> {
    let msgs = db.open_tree("msgs")?;
    let mut batch = sled::Batch::default();
    for item in msgs.iter() {
        let (k, v) = item?;
        if k.len() != 16 {
            continue;
        }
        let queue = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
        let seq = u64::from_be_bytes(k[8..].try_into().unwrap_or_default());
        let mut chunk = Vec::with_capacity(13 + v.len());
        chunk.push(4);
        chunk.extend_from_slice(&seq.to_be_bytes());
        chunk.extend_from_slice(&(v.len() as u32).to_be_bytes());
        chunk.extend_from_slice(&v);
        batch.remove(k);
        batch.insert(&super::queue_log::log_key(queue, 0, seq)[..], chunk);
    }
    msgs.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_properties;
    use crate::store::queue_log::QueueLog;
    use amq_protocol::protocol::BasicProperties;

    fn message(body: &str) -> Message {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id("m".into());
        Message::new(
            "x".into(),
            "rk".into(),
            &props,
            encode_properties(&props),
            bytes::Bytes::from(body.to_owned()),
        )
    }

    #[test]
    fn message_encoding_round_trips() {
        let m = message("hello");
        let stored = StoredMessage::new(1, Arc::new(m.clone()), None);
        let back = decode_message(&encode_message(&stored)).unwrap();
        assert_eq!(back.body(), m.body());
        assert_eq!(back.properties(), m.properties());
        assert_eq!(back.routing_key(), m.routing_key());
        assert!(decode_message(&[9, 9, 9]).is_none());
        assert!(decode_message(&encode_message(&stored)[..5]).is_none());
    }

    #[test]
    fn messages_and_definitions_survive_reopen() {
        let dir = tempdir();
        {
            let (disk, rec) = Disk::open(&dir, 1 << 20).unwrap();
            assert!(!rec.unclean);
            disk.save_queue(&QueueDef {
                name: "q".into(),
                id: 7,
                auto_delete: false,
                arguments: FieldTable::default(),
            });
            let mut log = QueueLog::new(disk.clone(), 7);
            for seq in 1..=3 {
                log.write(&StoredMessage::new(
                    seq,
                    Arc::new(message(&format!("m{seq}"))),
                    None,
                ));
            }
            assert!(log.commit().ok());
            log.remove(1);
            assert!(log.commit().ok());
            disk.mark_delivered_many(7, [2]);
            disk.close_cleanly();
        }
        let (disk, rec) = (0..100)
            .find_map(|_| {
                Disk::open(&dir, 1 << 20)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("reopening the store");
        assert_eq!(rec.queues.len(), 1);
        let mut seen = Vec::new();
        let mut log = QueueLog::recover(disk.clone(), 7, rec.unclean, |f| {
            assert!(decode_message(f.record).is_some());
            seen.push((f.seq, f.redelivered));
        });
        assert_eq!(seen, [(2, true), (3, false)]);
        assert_eq!(log.read(3).map(|m| m.body().to_vec()), Some(b"m3".to_vec()));
        drop(disk);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn second_open_of_a_directory_is_refused() {
        let dir = tempdir();
        let (_disk, _) = Disk::open(&dir, 1 << 20).unwrap();
        let err = Disk::open(&dir, 1 << 20)
            .err()
            .expect("second open must fail");
        assert!(err.to_string().contains("in use"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn foreign_directory_is_refused_with_its_path() {
        let dir = tempdir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("photo.jpg"), b"not a store").unwrap();
        let err = Disk::open(&dir, 1 << 20)
            .err()
            .expect("foreign dir must fail");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "warren-disk-test-{}",
            crate::util::random_token(12)
        ))
    }
}
