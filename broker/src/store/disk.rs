//! The durable store: the key-value engine ([`super::kv`]), the segment files
//! ([`super::segments`]) and the group-commit flusher, with the definitions kept in it.
//! Layers, each importing only those below it: `kv` (the engine) and `segments` (chunk
//! bytes) at the bottom; this module (trees, definitions, flusher); the journal
//! ([`super::record`]'s formats and each queue's [`super::queue_log`]); the queue stores on
//! top. Definitions and messages live in separate trees:
//!
//! - `defs`: durable exchanges, queues (each with a numeric id) and bindings of every vhost,
//!   as JSON, keyed by kind, vhost and name (see [`def_key`]);
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

use std::collections::BTreeMap;

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

use super::kv::{self, Batch, Engine, StoreError, Tree};
use super::record::{log_key, CHUNK_FORMAT, KIND_CHUNK};
use super::segments::Segments;

const FORMAT: &[u8] = b"warren-store-3";
/// The format before definitions were keyed by vhost (all of them in "/").
const FORMAT_2: &[u8] = b"warren-store-2";
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
    Engine { path: PathBuf, source: StoreError },
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

/// A vhost's own settings (RabbitMQ's vhost metadata and limits).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VhostDef {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub default_queue_type: Option<String>,
    /// `max-connections`, `max-queues` (negative: unlimited).
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
}

/// The durable definitions of one vhost.
#[derive(Debug, Default)]
pub struct VhostDefs {
    /// Its settings, if it has a record (vhosts created before records existed have none).
    pub def: Option<VhostDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    pub policies: Vec<crate::policy::PolicyDef>,
    pub operator_policies: Vec<crate::policy::PolicyDef>,
}

/// Definitions found at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// By vhost name.
    pub vhosts: BTreeMap<String, VhostDefs>,
    /// The previous run did not shut down cleanly.
    pub unclean: bool,
}

const DEF_EXCHANGE: u8 = b'x';
const DEF_QUEUE: u8 = b'q';
const DEF_BINDING: u8 = b'b';
const DEF_VHOST: u8 = b'v';
const DEF_POLICY: u8 = b'p';
const DEF_OPERATOR_POLICY: u8 = b'o';

/// The key of a definition: its kind (`x`, `q`, `b`), the length of its vhost's name (one
/// byte: vhost names are short strings), that name, then its own name (for a binding, its
/// fields as JSON). A vhost's definitions of one kind are one key range.
pub fn def_key(kind: u8, vhost: &str, name: &str) -> Vec<u8> {
    let v = vhost.as_bytes();
    let v = &v[..v.len().min(255)];
    let mut k = Vec::with_capacity(2 + v.len() + name.len());
    k.push(kind);
    k.push(v.len() as u8);
    k.extend_from_slice(v);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The kind and vhost of a definition key.
fn parse_def_key(k: &[u8]) -> Option<(u8, &str)> {
    let len = usize::from(*k.get(1)?);
    Some((k[0], std::str::from_utf8(k.get(2..2 + len)?).ok()?))
}

type Waiter = Box<dyn FnOnce(bool) + Send>;

/// A histogram of group-commit durations (Prometheus buckets, in seconds).
#[derive(Debug, Default)]
pub struct FlushTimes {
    /// Flushes that took at most [`FlushTimes::BOUNDS`]`[i]` seconds and more than the
    /// bound before (not cumulative; the exposition sums them).
    buckets: [std::sync::atomic::AtomicU64; FlushTimes::BOUNDS.len() + 1],
    /// Total time, in microseconds.
    sum_micros: std::sync::atomic::AtomicU64,
}

impl FlushTimes {
    /// Upper bounds of the buckets, in seconds (a last one is +Inf).
    pub const BOUNDS: [f64; 12] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];

    fn record(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = took.as_secs_f64();
        let i = Self::BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(Self::BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// Cumulative counts per bound (the last is +Inf, the total), and the sum in seconds.
    pub fn read(&self) -> (Vec<u64>, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Relaxed);
                total
            })
            .collect();
        (cumulative, self.sum_micros.load(Relaxed) as f64 / 1e6)
    }
}

/// The open store of a data directory.
pub struct Disk {
    path: PathBuf,
    db: Arc<dyn Engine>,
    defs: Arc<dyn Tree>,
    msgs: Arc<dyn Tree>,
    dlv: Arc<dyn Tree>,
    meta: Arc<dyn Tree>,
    /// Users, permissions and topic permissions (see [`crate::access`]).
    access: Arc<dyn Tree>,
    /// Deduplication caches of durable exchanges and queues (see [`crate::dedup`]).
    dedup: Arc<dyn Tree>,
    /// The bytes of message chunks (sled holds pointers to them).
    segments: Arc<Segments>,
    /// Where deep queues page their messages out (`paged/`, emptied at open).
    pager: Arc<super::paging::Pager>,
    flusher: Option<mpsc::Sender<Waiter>>,
    /// How long group commits took.
    flush_times: Arc<FlushTimes>,
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
        let engine_err = |source| OpenError::Engine {
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
                                && n != "paged"
                                && n != "streams"
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
        let db = kv::open(path, cache_bytes).map_err(engine_err)?;
        let meta = db.tree("meta").map_err(engine_err)?;
        match meta.get(b"format").map_err(engine_err)? {
            Some(f) if f == FORMAT => {}
            Some(f) if f == FORMAT_1 || f == FORMAT_2 => {
                if f == FORMAT_1 {
                    migrate_from_1(&*db).map_err(engine_err)?;
                }
                migrate_from_2(&*db).map_err(engine_err)?;
                meta.insert(b"format", FORMAT).map_err(engine_err)?;
            }
            Some(other) => {
                return Err(OpenError::Foreign {
                    path: path.to_owned(),
                    detail: format!("format marker {:?}", String::from_utf8_lossy(&other)),
                })
            }
            None if fresh || db.tree_count() <= 2 => {
                meta.insert(b"format", FORMAT).map_err(engine_err)?;
            }
            None => {
                return Err(OpenError::Foreign {
                    path: path.to_owned(),
                    detail: "a sled database without Warren's format marker".into(),
                })
            }
        }
        let msgs = db.tree("msgs").map_err(engine_err)?;
        // Before anything changes in the store (its clean flag included).
        let store_id = pair_with_segments(path, &*meta, &*msgs, &in_segments)?;
        let unclean = !fresh && !meta.remove(b"clean").map_err(engine_err)?;
        let defs = db.tree("defs").map_err(engine_err)?;
        let dlv = db.tree("dlv").map_err(engine_err)?;
        let access = db.tree("access").map_err(engine_err)?;
        let dedup = db.tree("dedup").map_err(engine_err)?;
        db.flush().map_err(engine_err)?;
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
        for item in defs.scan_prefix(b"") {
            let (k, v) = item.map_err(engine_err)?;
            let bad = |e: String| OpenError::Foreign {
                path: path.to_owned(),
                detail: format!(
                    "unreadable definition {:?}: {e}",
                    String::from_utf8_lossy(&k)
                ),
            };
            let (kind, vhost) = parse_def_key(&k).ok_or_else(|| bad("bad key".into()))?;
            let defs = recovered.vhosts.entry(vhost.to_owned()).or_default();
            let json = |e: serde_json::Error| bad(e.to_string());
            match kind {
                DEF_EXCHANGE => defs
                    .exchanges
                    .push(serde_json::from_slice(&v).map_err(json)?),
                DEF_QUEUE => defs.queues.push(serde_json::from_slice(&v).map_err(json)?),
                DEF_BINDING => defs
                    .bindings
                    .push(serde_json::from_slice(&v).map_err(json)?),
                DEF_VHOST => defs.def = Some(serde_json::from_slice(&v).map_err(json)?),
                DEF_POLICY => defs
                    .policies
                    .push(serde_json::from_slice(&v).map_err(json)?),
                DEF_OPERATOR_POLICY => defs
                    .operator_policies
                    .push(serde_json::from_slice(&v).map_err(json)?),
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
        let flush_times = Arc::new(FlushTimes::default());
        let flush_recorded = Arc::clone(&flush_times);
        let flush_thread = std::thread::Builder::new()
            .name("warren-fsync".into())
            .spawn(move || {
                // Group commit: take every waiter that queued up, one flush for all of them.
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    // Chunks before the sled records that point at them.
                    let started = std::time::Instant::now();
                    let synced = flush_segments.sync();
                    let flushed = flush_db.flush();
                    flush_recorded.record(started.elapsed());
                    if let Err(e) = &flushed {
                        tracing::error!(error = %e, "cannot flush the store");
                    }
                    let ok = flushed.is_ok() && synced;
                    for w in batch {
                        w(ok);
                    }
                }
            })
            .map_err(|source| OpenError::CreateDir {
                path: path.to_owned(),
                source,
            })?;

        let paged_dir = path.join("paged");
        let pager =
            super::paging::Pager::open(&paged_dir).map_err(|source| OpenError::CreateDir {
                path: paged_dir,
                source,
            })?;
        let disk = Arc::new(Disk {
            pager,
            path: path.to_owned(),
            db,
            defs,
            msgs,
            dlv,
            meta,
            access,
            dedup,
            segments,
            flusher: Some(tx),
            flush_thread: Some(flush_thread),
            flush_times,
            _lock: lock,
        });
        Ok((disk, recovered))
    }

    /// How long group commits (segment sync and engine flush) took, for the metrics.
    pub fn flush_times(&self) -> &FlushTimes {
        &self.flush_times
    }

    /// Bytes in segment files on disk (appended chunks, live or not yet reclaimed).
    pub fn segment_bytes(&self) -> u64 {
        let Ok(dir) = std::fs::read_dir(self.path.join("segments")) else {
            return 0;
        };
        dir.filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".seg")))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// Where deep queues page their messages out.
    pub fn pager(&self) -> &Arc<super::paging::Pager> {
        &self.pager
    }

    /// Where the stream with queue id `id` keeps its segment files.
    pub fn stream_dir(&self, id: u64) -> PathBuf {
        self.path.join("streams").join(id.to_string())
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

    /// Flushes the engine alone, without syncing segments (a power-loss test's engine that
    /// wrote its log in the background).
    #[cfg(test)]
    pub(crate) fn db_flush_for_tests(&self) -> bool {
        self.db.flush().is_ok()
    }

    /// Failures tests may inject into this store's segment writes and syncs.
    pub fn faults(&self) -> &Arc<super::faults::Faults> {
        self.segments.faults()
    }

    /// Flushes now (tests, shutdown): segments, then the engine.
    pub fn flush(&self) -> Result<(), StoreError> {
        let synced = self.segments.sync();
        self.db.flush()?;
        if synced {
            Ok(())
        } else {
            Err(StoreError::Io(std::io::Error::other(
                "a segment sync failed",
            )))
        }
    }

    /// The segment files holding message chunks.
    pub(crate) fn segments(&self) -> &Segments {
        &self.segments
    }

    /// After every vhost recovered its queues (each counting the segments its chunks are
    /// in): deletes the segments nothing needs.
    pub fn sweep_segments(&self) {
        self.segments.sweep();
    }

    /// A fresh queue id.
    pub fn new_queue_id(&self) -> u64 {
        // Persistent and monotonic across restarts.
        self.new_id()
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

    // Definitions are written to the engine without waiting for the disk: whoever needs them
    // durable awaits `synced` afterwards, outside the registry's lock, and one flush covers
    // every definition and publish that came in meanwhile.

    fn put_def(&self, key: &[u8], value: &impl Serialize) -> Result<(), StoreError> {
        let v = serde_json::to_vec(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.defs.insert(key, &v)
    }

    /// Saves a vhost's settings (on disk after the next flush).
    pub fn save_vhost(&self, vhost: &str, def: &VhostDef) -> Result<(), StoreError> {
        self.put_def(&def_key(DEF_VHOST, vhost, ""), def)
    }

    /// Forgets every definition of a vhost (its queues' messages are gone already).
    pub fn delete_vhost(&self, vhost: &str) -> Result<(), StoreError> {
        for kind in [
            DEF_EXCHANGE,
            DEF_QUEUE,
            DEF_BINDING,
            DEF_VHOST,
            DEF_POLICY,
            DEF_OPERATOR_POLICY,
        ] {
            Self::remove_prefix(&*self.defs, &def_key(kind, vhost, ""))?;
        }
        Ok(())
    }

    /// Saves a policy (`operator`: an operator policy) of `vhost` (durable after
    /// [`flush`](Self::flush)).
    pub fn save_policy(
        &self,
        vhost: &str,
        operator: bool,
        p: &crate::policy::PolicyDef,
    ) -> Result<(), StoreError> {
        let kind = if operator {
            DEF_OPERATOR_POLICY
        } else {
            DEF_POLICY
        };
        self.put_def(&def_key(kind, vhost, &p.name), p)
    }

    /// Forgets a policy.
    pub fn delete_policy(&self, vhost: &str, operator: bool, name: &str) -> Result<(), StoreError> {
        let kind = if operator {
            DEF_OPERATOR_POLICY
        } else {
            DEF_POLICY
        };
        self.defs.remove(&def_key(kind, vhost, name)).map(drop)
    }

    /// Every record of the access tree.
    pub fn access_records(&self) -> Result<Vec<super::kv::Entry>, StoreError> {
        self.access.scan_prefix(b"").collect()
    }

    /// Writes (`Some`) or removes one access record (durable after [`flush`](Self::flush)).
    pub fn put_access(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.access.insert(key, v),
            None => self.access.remove(key).map(drop),
        }
    }

    /// Saves a durable exchange of `vhost` (on disk after the next flush: see `synced`).
    pub fn save_exchange(&self, vhost: &str, x: &ExchangeDef) -> Result<(), StoreError> {
        self.put_def(&def_key(DEF_EXCHANGE, vhost, &x.name), x)
    }

    /// Forgets a durable exchange.
    pub fn delete_exchange(&self, vhost: &str, name: &str) -> Result<(), StoreError> {
        self.defs
            .remove(&def_key(DEF_EXCHANGE, vhost, name))
            .map(drop)
    }

    /// Saves a durable queue.
    pub fn save_queue(&self, vhost: &str, q: &QueueDef) -> Result<(), StoreError> {
        self.put_def(&def_key(DEF_QUEUE, vhost, &q.name), q)
    }

    /// Forgets a durable queue's definition. Its messages are gone already: the queue purged
    /// them when it was destroyed, so the engine's log holds the purge before this.
    pub fn delete_queue(&self, vhost: &str, name: &str) -> Result<(), StoreError> {
        self.defs.remove(&def_key(DEF_QUEUE, vhost, name)).map(drop)
    }

    fn binding_key(vhost: &str, b: &BindingDef) -> Vec<u8> {
        let fields = serde_json::to_string(&(
            &b.source,
            b.to_exchange,
            &b.destination,
            &b.routing_key,
            &b.arguments,
        ))
        .unwrap_or_default();
        def_key(DEF_BINDING, vhost, &fields)
    }

    /// Saves a binding between durable objects.
    pub fn save_binding(&self, vhost: &str, b: &BindingDef) -> Result<(), StoreError> {
        self.put_def(&Self::binding_key(vhost, b), b)
    }

    /// Forgets bindings, in one batch.
    pub fn delete_bindings(&self, vhost: &str, bindings: &[BindingDef]) -> Result<(), StoreError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let mut batch = Batch::default();
        for b in bindings {
            batch.remove(Self::binding_key(vhost, b));
        }
        self.defs.apply(batch)
    }

    /// The tree of message records (see [`super::queue_log`]).
    pub(crate) fn msgs(&self) -> &dyn Tree {
        &*self.msgs
    }

    /// An id unique in this store, across restarts (ack records).
    pub fn new_id(&self) -> u64 {
        self.db.generate_id().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot generate an id in the store; using a random one");
            rand_id()
        })
    }

    /// Applies a batch of message writes and removals (one per queue per delivery round).
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        self.msgs.apply(batch)
    }

    fn remove_prefix(tree: &dyn Tree, prefix: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for item in tree.scan_prefix(prefix) {
            batch.remove(item?.0);
        }
        tree.apply(batch)
    }

    /// Drops every record of a queue.
    pub fn purge(&self, queue: u64) {
        for tree in [&self.msgs, &self.dlv] {
            if let Err(e) = Self::remove_prefix(&**tree, &queue.to_be_bytes()) {
                // Left behind they cost space, not correctness: no queue has the id again.
                tracing::error!(queue, error = %e, "cannot delete the records of a deleted queue");
            }
        }
        self.drop_dedup(&crate::dedup::queue_prefix(queue));
    }

    /// The tree of deduplication cache entries.
    pub fn dedup(&self) -> Arc<dyn Tree> {
        self.dedup.clone()
    }

    /// Drops a deduplication cache's entries (its exchange or queue was deleted).
    pub fn drop_dedup(&self, prefix: &[u8]) {
        if let Err(e) = Self::remove_prefix(&*self.dedup, prefix) {
            tracing::error!(error = %e, "cannot delete a deleted deduplication cache's entries");
        }
    }

    /// The messages of a queue marked delivered at the last clean shutdown.
    pub fn delivered_marks(&self, queue: u64) -> std::collections::HashSet<u64> {
        self.dlv
            .scan_prefix(&queue.to_be_bytes())
            .flatten()
            .filter_map(|(k, _)| Some(u64::from_be_bytes(k.get(8..16)?.try_into().ok()?)))
            .collect()
    }

    /// Forgets a queue's delivered marks: once recovered they live in memory (as redelivered
    /// flags), and the next clean shutdown writes them again.
    pub fn clear_delivered_marks(&self, queue: u64) {
        if let Err(e) = Self::remove_prefix(&*self.dlv, &queue.to_be_bytes()) {
            // Harmless: marks are only read at a clean start, and a clean shutdown rewrites
            // them.
            tracing::warn!(queue, error = %e, "cannot clear delivered marks");
        }
    }

    /// At a clean shutdown: records which stored messages were delivered before, so the next
    /// start flags exactly those redelivered.
    pub fn mark_delivered_many(&self, queue: u64, seqs: impl IntoIterator<Item = u64>) {
        let mut batch = Batch::default();
        for seq in seqs {
            batch.insert(&msg_key(queue, seq)[..], &[][..]);
        }
        if let Err(e) = self.dlv.apply(batch) {
            // Then the restart flags fewer messages redelivered than were delivered.
            tracing::error!(queue, error = %e, "cannot record which messages were delivered");
        }
    }

    /// Records a clean shutdown (after everything is flushed).
    pub fn close_cleanly(&self) {
        let done = self
            .db
            .flush()
            .and_then(|()| self.meta.insert(b"clean", &[1u8]))
            .and_then(|()| self.db.flush());
        if let Err(e) = done {
            // The next start then recovers as after a crash: every message redelivered.
            tracing::error!(error = %e, "cannot record the clean shutdown");
        }
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
    meta: &dyn Tree,
    msgs: &dyn Tree,
    in_segments: &super::segments::DirSummary,
) -> Result<String, OpenError> {
    let engine_err = |source| OpenError::Engine {
        path: path.to_owned(),
        source,
    };
    let mismatch = |detail: String| OpenError::Mismatch {
        path: path.to_owned(),
        detail,
    };
    let (db, segs) = (path.join("db"), path.join("segments"));
    let ours = meta
        .get(b"store_id")
        .map_err(engine_err)?
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
            meta.insert(b"store_id", id.as_bytes())
                .map_err(engine_err)?;
            Ok(id)
        }
    }
}

/// Rewrites a format-1 store's messages (one key per message) as one-message chunks.
fn migrate_from_1(db: &dyn Engine) -> Result<(), StoreError> {
    let msgs = db.tree("msgs")?;
    let mut batch = Batch::default();
    for item in msgs.scan_prefix(b"") {
        let (k, v) = item?;
        if k.len() != 16 {
            continue;
        }
        let queue = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
        let seq = u64::from_be_bytes(k[8..].try_into().unwrap_or_default());
        let mut chunk = Vec::with_capacity(13 + v.len());
        chunk.push(CHUNK_FORMAT);
        chunk.extend_from_slice(&seq.to_be_bytes());
        chunk.extend_from_slice(&(v.len() as u32).to_be_bytes());
        chunk.extend_from_slice(&v);
        batch.remove(k);
        batch.insert(&log_key(queue, KIND_CHUNK, seq)[..], chunk);
    }
    msgs.apply(batch)?;
    db.flush()
}

/// Keys a format-2 store's definitions (`x\0name`, `q\0name`, `b\0fields`: one vhost) by
/// vhost, all in "/". One batch; run again after a crash, it finds no old key left.
fn migrate_from_2(db: &dyn Engine) -> Result<(), StoreError> {
    let defs = db.tree("defs")?;
    let mut batch = Batch::default();
    for item in defs.scan_prefix(b"") {
        let (k, v) = item?;
        let (Some(&kind), Some(0)) = (k.first(), k.get(1)) else {
            continue;
        };
        let name = String::from_utf8_lossy(&k[2..]);
        batch.insert(def_key(kind, "/", &name), v);
        batch.remove(k);
    }
    defs.apply(batch)?;
    db.flush()
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
    use crate::message::Message;
    use crate::protocol::encode_properties;
    use crate::store::queue_log::QueueLog;
    use crate::store::record::{decode_message, encode_message};
    use crate::store::StoredMessage;
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
            disk.save_queue(
                "/",
                &QueueDef {
                    name: "q".into(),
                    id: 7,
                    auto_delete: false,
                    arguments: FieldTable::default(),
                },
            )
            .unwrap();
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
        let (disk, rec) = reopen(&dir);
        assert_eq!(rec.vhosts["/"].queues.len(), 1);
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
    fn definitions_are_kept_per_vhost_and_a_one_vhost_store_migrates_into_slash() {
        let dir = tempdir();
        let q = |name: &str, id| QueueDef {
            name: name.into(),
            id,
            auto_delete: false,
            arguments: FieldTable::default(),
        };
        {
            let (disk, _) = Disk::open(&dir, 1 << 20).unwrap();
            disk.save_queue("/", &q("same", 1)).unwrap();
            disk.save_queue("other", &q("same", 2)).unwrap();
            // What a format-2 store holds: one vhost, keys without it.
            disk.defs
                .insert(b"q\0old", &serde_json::to_vec(&q("old", 3)).unwrap())
                .unwrap();
            disk.meta.insert(b"format", FORMAT_2).unwrap();
            disk.close_cleanly();
        }
        let (disk, rec) = reopen(&dir);
        let names = |v: &str| -> Vec<(String, u64)> {
            let mut n: Vec<_> = rec.vhosts[v]
                .queues
                .iter()
                .map(|q| (q.name.clone(), q.id))
                .collect();
            n.sort();
            n
        };
        assert_eq!(names("/"), [("old".to_owned(), 3), ("same".to_owned(), 1)]);
        assert_eq!(names("other"), [("same".to_owned(), 2)]);
        assert_eq!(disk.meta.get(b"format").unwrap().as_deref(), Some(FORMAT));
        disk.delete_queue("other", "same").unwrap();
        assert!(disk
            .defs
            .get(&def_key(DEF_QUEUE, "/", "same"))
            .unwrap()
            .is_some());
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

    /// Opens the store again once sled's background threads let go of the previous one.
    fn reopen(dir: &Path) -> (Arc<Disk>, Recovered) {
        (0..100)
            .find_map(|_| {
                Disk::open(dir, 1 << 20)
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("reopening the store")
    }

    fn tempdir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "warren-disk-test-{}",
            crate::util::random_token(12)
        ))
    }
}
