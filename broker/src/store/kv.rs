//! The key-value engine under the store, behind two small traits: [`Engine`] (named trees,
//! one durable flush for all of them, unique ids) and [`Tree`] (ordered byte keys, atomic
//! batches, prefix scans). This is the only module that knows sled; another ordered,
//! crash-safe engine (fjall, for one) replaces it by implementing the two traits here.
//!
//! What the store needs of an engine: batches applied atomically (a crash keeps all of a
//! batch or none of it), writes applied in order, `flush` making everything applied before it
//! durable, and `generate_id` never repeating an id across restarts.

use std::path::Path;
use std::sync::Arc;

/// A store operation that failed, saying what failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key-value engine refused or failed (its own words).
    #[error("key-value store: {0}")]
    Engine(String),
    /// A segment file could not be written, read or synced.
    #[error("segment file: {0}")]
    Io(#[from] std::io::Error),
    /// A definition could not be encoded.
    #[error("cannot encode a definition: {0}")]
    Encode(String),
    /// The store is shut down (its flusher is gone).
    #[error("the store is closed")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => StoreError::Io(io),
            other => StoreError::Engine(other.to_string()),
        }
    }
}

/// Writes and removals applied to one [`Tree`] atomically, in order.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Takes back the operations on `key` (the last one wins when applied).
    pub fn forget(&mut self, key: &[u8]) {
        self.ops.retain(|(k, _)| k != key);
    }

    /// Nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The entries of a prefix scan, in key order.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

/// One ordered map of byte keys to byte values.
pub trait Tree: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets one key.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes one key; whether it was there.
    fn remove(&self, key: &[u8]) -> Result<bool, StoreError>;
    /// Applies a batch atomically.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// The entries whose keys start with `prefix`, in key order.
    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> Scan<'a>;
    /// No entries.
    fn is_empty(&self) -> bool;
}

/// An open database of named trees.
pub trait Engine: Send + Sync {
    /// The tree named `name` (created if missing).
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError>;
    /// How many trees exist, the engine's own included (telling a fresh database from one
    /// that holds something).
    fn tree_count(&self) -> usize;
    /// Makes every write applied before the call durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// An id never returned before by this database, across restarts.
    fn generate_id(&self) -> Result<u64, StoreError>;
}

/// Opens (or creates) the sled database in `dir`, its page cache capped at `cache_bytes`.
pub fn open(dir: &Path, cache_bytes: u64) -> Result<Arc<dyn Engine>, StoreError> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // sled's own background flush: what nobody waits for (delivered marks, definitions
        // of a declare whose answer does not wait) is durable within this.
        .flush_every_ms(Some(200))
        .mode(sled::Mode::HighThroughput)
        .open()?;
    Ok(Arc::new(Sled(db)))
}

struct Sled(sled::Db);

struct SledTree(sled::Tree);

impl Engine for Sled {
    fn tree(&self, name: &str) -> Result<Arc<dyn Tree>, StoreError> {
        Ok(Arc::new(SledTree(self.0.open_tree(name)?)))
    }

    fn tree_count(&self) -> usize {
        self.0.tree_names().len()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.0.flush()?;
        Ok(())
    }

    fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.0.generate_id()?)
    }
}

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.0.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.0.remove(key)?.is_some())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.0.apply_batch(b)?;
        Ok(())
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> Scan<'a> {
        Box::new(self.0.scan_prefix(prefix).map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        }))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_apply_in_order_and_scans_see_one_prefix() {
        let dir = std::env::temp_dir().join(format!("warren-kv-{}", crate::util::random_token(8)));
        let engine = open(&dir, 1 << 20).unwrap();
        let t = engine.tree("t").unwrap();
        assert!(t.is_empty());
        let mut b = Batch::default();
        b.insert(&b"a1"[..], &b"x"[..]);
        b.insert(&b"a2"[..], &b"y"[..]);
        b.remove(&b"a1"[..]);
        b.insert(&b"b1"[..], &b"z"[..]);
        b.insert(&b"gone"[..], &b"?"[..]);
        b.forget(b"gone");
        t.apply(b).unwrap();
        let a: Vec<_> = t.scan_prefix(b"a").map(Result::unwrap).collect();
        assert_eq!(a, vec![(b"a2".to_vec(), b"y".to_vec())]);
        assert_eq!(t.get(b"gone").unwrap(), None);
        assert!(t.remove(b"b1").unwrap());
        assert!(!t.remove(b"b1").unwrap());
        let (x, y) = (engine.generate_id().unwrap(), engine.generate_id().unwrap());
        assert_ne!(x, y);
        engine.flush().unwrap();
        drop((t, engine));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
