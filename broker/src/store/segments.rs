//! Message chunks in append-only segment files, shared by every durable queue of a store.
//!
//! sled keeps, for each chunk, only a [`Pointer`] (segment, offset, length, CRC-32); the
//! chunk's bytes are here. sled holds what it reads or writes in memory well past its cache
//! capacity (reading 1 GB of values held about 400 MB; a recovery scan of them, 900 MB), so
//! message bodies stay out of it: recovery and drains read chunks with plain `pread`s into
//! buffers that are dropped after use.
//!
//! Ordering: a chunk is written (to the OS, not yet synced) before the sled batch holding its
//! pointer is applied, so a process crash (`kill -9`) never leaves a pointer without its
//! bytes. Group commit syncs the segments written since the last sync *before* flushing sled,
//! so a confirm still means on disk. After a power loss a pointer may have reached the disk
//! without its bytes (sled writes its log in the background too): the CRC catches that, and
//! such a chunk was never confirmed.
//!
//! A segment counts its live chunks; it is deleted when that drops to zero and it is no
//! longer the one being appended to. Segments are not compacted: one unsettled message keeps
//! its whole segment on disk (at most [`SEGMENT_MAX`] bytes).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::faults::{self, Faults};

/// A segment is closed for appends once it holds this many bytes.
pub const SEGMENT_MAX: u64 = 32 << 20;
/// First byte of an encoded [`Pointer`].
pub const POINTER_FORMAT: u8 = 5;
const POINTER_LEN: usize = 21;

/// Where a chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
    /// CRC-32 of the bytes.
    pub crc: u32,
}

impl Pointer {
    /// The pointer as stored in sled: format byte, segment, offset, length, CRC (big-endian).
    pub fn encode(&self) -> [u8; POINTER_LEN] {
        let mut v = [0u8; POINTER_LEN];
        v[0] = POINTER_FORMAT;
        v[1..5].copy_from_slice(&self.segment.to_be_bytes());
        v[5..13].copy_from_slice(&self.offset.to_be_bytes());
        v[13..17].copy_from_slice(&self.len.to_be_bytes());
        v[17..21].copy_from_slice(&self.crc.to_be_bytes());
        v
    }

    /// Decodes what `encode` wrote; `None` for anything else (an inline chunk).
    pub fn decode(v: &[u8]) -> Option<Pointer> {
        if v.len() != POINTER_LEN || v[0] != POINTER_FORMAT {
            return None;
        }
        Some(Pointer {
            segment: u32::from_be_bytes(v[1..5].try_into().ok()?),
            offset: u64::from_be_bytes(v[5..13].try_into().ok()?),
            len: u32::from_be_bytes(v[13..17].try_into().ok()?),
            crc: u32::from_be_bytes(v[17..21].try_into().ok()?),
        })
    }
}

/// The segment files of one store.
pub struct Segments {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Failures injected by tests.
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Inner {
    /// The segment appended to, and its length (written or reserved by a write in flight).
    current: Option<(u32, u64)>,
    /// Writes in flight, outside the lock: (segment, offset).
    in_flight: Vec<(u32, u64)>,
    /// The id the next segment gets.
    next_id: u32,
    /// Every segment file that exists, open for reading and appending.
    files: HashMap<u32, Arc<File>>,
    /// Live chunks per segment.
    live: HashMap<u32, u32>,
    /// Segments appended to since the last [`Segments::sync`].
    unsynced: Vec<u32>,
    /// Bytes of each segment that a sync made durable (what survives a power loss).
    synced_len: HashMap<u32, u64>,
}

fn file_name(id: u32) -> String {
    format!("{id:08}.seg")
}

/// The file in a segment directory naming the store (sled database) its chunks belong to.
pub const STORE_ID_FILE: &str = "STORE_ID";

/// What a segment directory holds, read without opening or changing anything.
#[derive(Debug, Default)]
pub struct DirSummary {
    /// Segment files (`*.seg`).
    pub segment_files: usize,
    /// The id in [`STORE_ID_FILE`], if the file exists.
    pub store_id: Option<String>,
}

/// Reads what segment directory `dir` holds (an empty summary if it does not exist).
pub fn summarize(dir: &Path) -> std::io::Result<DirSummary> {
    let mut summary = DirSummary::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(summary),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".seg")) {
            summary.segment_files += 1;
        }
    }
    match std::fs::read_to_string(dir.join(STORE_ID_FILE)) {
        Ok(id) => summary.store_id = Some(id.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(summary)
}

/// Writes `id` as the store the segments in `dir` (created if missing) belong to, durably:
/// a temporary file, synced, renamed over the old one, and the directory synced.
pub fn write_store_id(dir: &Path, id: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{STORE_ID_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(STORE_ID_FILE))?;
    File::open(dir)?.sync_all()
}

impl Segments {
    /// Opens the segment directory `dir` (created if missing). Existing segments count no
    /// live chunks until recovery [`retain`](Self::retain)s them; [`sweep`](Self::sweep)
    /// then deletes the others.
    pub fn open(dir: &Path) -> std::io::Result<Segments> {
        std::fs::create_dir_all(dir)?;
        let mut inner = Inner::default();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let file = File::options()
                .read(true)
                .write(true)
                .open(dir.join(&name))?;
            let len = file.metadata()?.len();
            inner.files.insert(id, Arc::new(file));
            inner.synced_len.insert(id, len);
            inner.next_id = inner.next_id.max(id + 1);
        }
        Ok(Segments {
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
            faults: Arc::default(),
        })
    }

    /// The failures tests may inject into this store's file operations.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that are at worst too high (a segment
        // kept too long), never too low.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a chunk (written to the OS before returning; durable after the next `sync`).
    ///
    /// The lock only reserves the chunk's place at the end of the current segment; the bytes
    /// are written after it is released, so queues appending at once write in parallel
    /// instead of one after the other behind the lock.
    pub fn append(&self, data: &[u8]) -> std::io::Result<Pointer> {
        let crc = crc32fast::hash(data);
        let end_of = |offset: u64| offset + data.len() as u64;
        let (id, offset, file) = {
            let mut inner = self.lock();
            let (id, len) = match inner.current {
                Some((id, len)) if len < SEGMENT_MAX => (id, len),
                _ => {
                    let id = inner.next_id;
                    let file = File::options()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(self.dir.join(file_name(id)))?;
                    inner.next_id += 1;
                    inner.files.insert(id, Arc::new(file));
                    let old = inner.current.replace((id, 0)).map(|(old, _)| old);
                    if let Some(old) = old.filter(|o| inner.live.get(o).is_none_or(|&n| n == 0)) {
                        // Nothing of the old segment is live any more (it was kept while
                        // current).
                        Self::delete(&self.dir, &mut inner, old);
                    }
                    (id, 0)
                }
            };
            inner.current = Some((id, end_of(len)));
            // Counted live from the reservation: the segment cannot go while this writes.
            *inner.live.entry(id).or_default() += 1;
            inner.in_flight.push((id, len));
            (id, len, Arc::clone(&inner.files[&id]))
        };
        let written = if self.faults.write_fails() {
            // As a full disk does: part of the chunk reaches the file, then the write fails.
            file.write_all_at(&data[..data.len() / 2], offset)
                .and(Err(faults::no_space()))
        } else {
            file.write_all_at(data, offset)
        };
        let mut inner = self.lock();
        if let Some(i) = inner.in_flight.iter().position(|&w| w == (id, offset)) {
            inner.in_flight.swap_remove(i);
        }
        if let Err(e) = written {
            if let Some(n) = inner.live.get_mut(&id) {
                *n = n.saturating_sub(1);
            }
            // A short write leaves garbage where the chunk was to go. If nothing was reserved
            // after it, cut it off and append there again next time, so a full disk does not
            // leave a new file per failed write; else the bytes stay, unreferenced. If even
            // the cut fails, the next append starts a new segment, and this one goes at once
            // if nothing in it is live.
            if inner.current == Some((id, end_of(offset))) {
                if file.set_len(offset).is_ok() {
                    inner.current = Some((id, offset));
                } else {
                    inner.current = None;
                }
            }
            if inner.current.map(|(c, _)| c) != Some(id)
                && inner.live.get(&id).is_none_or(|&n| n == 0)
            {
                Self::delete(&self.dir, &mut inner, id);
            }
            return Err(e);
        }
        // Only now: a sync that started before the write finished must not count it synced.
        if !inner.unsynced.contains(&id) {
            inner.unsynced.push(id);
        }
        Ok(Pointer {
            segment: id,
            offset,
            len: data.len() as u32,
            crc,
        })
    }

    /// Makes a chunk unreadable for good: flips its first byte in place (a CRC-32 catches any
    /// one-byte change, so [`read`](Self::read) refuses it) and syncs the segment. Needs no
    /// new space on disk. A segment already gone is nothing to do.
    pub fn void(&self, p: &Pointer) -> std::io::Result<()> {
        let Some(file) = self.lock().files.get(&p.segment).cloned() else {
            return Ok(());
        };
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, p.offset)?;
        byte[0] = !byte[0];
        file.write_all_at(&byte, p.offset)?;
        file.sync_data()
    }

    /// Reads a chunk back; `None` if its segment is gone or its bytes do not match the CRC.
    pub fn read(&self, p: &Pointer) -> Option<Vec<u8>> {
        let file = self.lock().files.get(&p.segment).cloned()?;
        let mut buf = vec![0u8; p.len as usize];
        file.read_exact_at(&mut buf, p.offset).ok()?;
        (crc32fast::hash(&buf) == p.crc).then_some(buf)
    }

    /// Counts a chunk found at recovery as live.
    pub fn retain(&self, p: &Pointer) {
        *self.lock().live.entry(p.segment).or_default() += 1;
    }

    /// A chunk is no longer needed; its segment goes when nothing in it is.
    pub fn release(&self, p: &Pointer) {
        let mut inner = self.lock();
        let Some(n) = inner.live.get_mut(&p.segment) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 && inner.current.map(|(id, _)| id) != Some(p.segment) {
            Self::delete(&self.dir, &mut inner, p.segment);
        }
    }

    /// After recovery: deletes the segments no recovered chunk needs.
    pub fn sweep(&self) {
        let mut inner = self.lock();
        let dead: Vec<u32> = inner
            .files
            .keys()
            .copied()
            .filter(|id| inner.live.get(id).is_none_or(|&n| n == 0))
            .collect();
        for id in dead {
            Self::delete(&self.dir, &mut inner, id);
        }
    }

    fn delete(dir: &Path, inner: &mut Inner, id: u32) {
        inner.files.remove(&id);
        inner.live.remove(&id);
        inner.synced_len.remove(&id);
        inner.unsynced.retain(|&u| u != id);
        if inner.current.is_some_and(|(c, _)| c == id) {
            inner.current = None;
        }
        let _ = std::fs::remove_file(dir.join(file_name(id)));
    }

    /// Makes every chunk appended before this call durable (fdatasync of each segment
    /// written since the last sync). False if a sync failed; a segment whose sync failed
    /// stays to be synced by the next call, so no later flush can vouch for it unsynced.
    pub fn sync(&self) -> bool {
        let files: Vec<(u32, Arc<File>, Option<u64>)> = {
            let mut inner = self.lock();
            let ids = std::mem::take(&mut inner.unsynced);
            let current = inner.current;
            ids.into_iter()
                .filter_map(|id| {
                    // What this sync makes durable: up to the first write still in flight,
                    // else the current segment's length; a closed segment no longer grows,
                    // so all of it.
                    let in_flight = inner
                        .in_flight
                        .iter()
                        .filter(|w| w.0 == id)
                        .map(|w| w.1)
                        .min();
                    let len = match current {
                        _ if in_flight.is_some() => in_flight,
                        Some((c, len)) if c == id => Some(len),
                        _ => None,
                    };
                    Some((id, inner.files.get(&id)?.clone(), len))
                })
                .collect()
        };
        // Once per sync, even with no segment to sync: a flush of definitions alone is held
        // or fails as the disk would.
        let gate = self.faults.before_sync();
        let mut failed = Vec::new();
        let mut synced = Vec::new();
        for (id, f, len) in &files {
            let done = match &gate {
                Ok(()) => f.sync_data(),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            match done {
                Ok(()) => {
                    let len = len.or_else(|| f.metadata().ok().map(|m| m.len()));
                    synced.extend(len.map(|l| (*id, l)));
                }
                Err(_) => failed.push(*id),
            }
        }
        let mut inner = self.lock();
        for (id, len) in synced {
            if inner.files.contains_key(&id) {
                let l = inner.synced_len.entry(id).or_default();
                *l = (*l).max(len);
            }
        }
        if failed.is_empty() {
            return gate.is_ok();
        }
        for id in failed {
            if inner.files.contains_key(&id) && !inner.unsynced.contains(&id) {
                inner.unsynced.push(id);
            }
        }
        false
    }

    /// Segment files on disk (for tests and figures).
    pub fn count(&self) -> usize {
        self.lock().files.len()
    }

    /// Simulates a power loss for tests: every segment loses what no sync made durable (cut
    /// back to its synced length). The store must then be dropped without a clean close.
    pub fn drop_unsynced(&self) {
        let inner = self.lock();
        for (id, file) in &inner.files {
            let len = inner.synced_len.get(id).copied().unwrap_or(0);
            let _ = file.set_len(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warren-seg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn chunks_read_back_and_pointers_round_trip() {
        let d = dir("roundtrip");
        let s = Segments::open(&d).unwrap();
        let a = s.append(b"first chunk").unwrap();
        let b = s.append(&[7u8; 5000]).unwrap();
        assert_eq!(Pointer::decode(&a.encode()), Some(a));
        assert_eq!(Pointer::decode(b"\x04inline chunk"), None);
        assert_eq!(s.read(&a).unwrap(), b"first chunk");
        assert_eq!(s.read(&b).unwrap(), vec![7u8; 5000]);
        assert!(s.sync());
        drop(s);
        let s = Segments::open(&d).unwrap();
        assert_eq!(
            s.read(&b).unwrap(),
            vec![7u8; 5000],
            "readable after reopening"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn appends_from_many_threads_each_get_their_own_place() {
        let d = dir("parallel");
        let s = Arc::new(Segments::open(&d).unwrap());
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    (0..200u32)
                        .map(|i| {
                            let chunk = vec![t; 1000 + (i as usize * 37 + t as usize) % 3000];
                            (s.append(&chunk).unwrap(), chunk)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let mut places: Vec<_> = all
            .iter()
            .map(|(p, _)| (p.segment, p.offset, p.len))
            .collect();
        places.sort_unstable();
        for w in places.windows(2) {
            assert!(
                w[0].0 != w[1].0 || w[0].1 + u64::from(w[0].2) <= w[1].1,
                "overlapping chunks: {w:?}"
            );
        }
        assert!(s.sync());
        for (p, chunk) in &all {
            assert_eq!(s.read(p).as_ref(), Some(chunk));
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_voided_chunk_reads_as_none_and_its_neighbours_are_untouched() {
        let d = dir("void");
        let s = Segments::open(&d).unwrap();
        let a = s.append(b"kept before").unwrap();
        let b = s.append(b"voided").unwrap();
        let c = s.append(b"kept after").unwrap();
        s.void(&b).unwrap();
        assert_eq!(s.read(&b), None);
        assert_eq!(s.read(&a).unwrap(), b"kept before");
        assert_eq!(s.read(&c).unwrap(), b"kept after");
        drop(s);
        let s = Segments::open(&d).unwrap();
        assert_eq!(s.read(&b), None, "voided for good");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_damaged_or_missing_chunk_reads_as_none() {
        let d = dir("damaged");
        let s = Segments::open(&d).unwrap();
        let a = s.append(b"0123456789").unwrap();
        let wrong_crc = Pointer {
            crc: a.crc ^ 1,
            ..a
        };
        assert_eq!(s.read(&wrong_crc), None);
        let past_end = Pointer { offset: 1000, ..a };
        assert_eq!(s.read(&past_end), None);
        let no_segment = Pointer { segment: 99, ..a };
        assert_eq!(s.read(&no_segment), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_segment_is_deleted_once_nothing_in_it_is_live_and_it_is_not_current() {
        let d = dir("release");
        let s = Segments::open(&d).unwrap();
        let big = vec![1u8; (SEGMENT_MAX / 2) as usize + 1];
        let a = s.append(&big).unwrap();
        let b = s.append(&big).unwrap();
        assert_eq!(a.segment, b.segment);
        let c = s.append(b"next segment").unwrap();
        assert_ne!(c.segment, a.segment, "a full segment is closed");
        assert_eq!(s.count(), 2);
        s.release(&a);
        assert_eq!(s.count(), 2, "b is still live");
        s.release(&b);
        assert_eq!(s.count(), 1, "the closed segment went");
        assert_eq!(s.read(&a), None);
        s.release(&c);
        assert_eq!(s.count(), 1, "the current segment stays while appended to");
        let e = s.append(b"more").unwrap();
        assert_eq!(s.read(&e).unwrap(), b"more");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn recovery_keeps_retained_segments_and_sweeps_the_rest() {
        let d = dir("sweep");
        let s = Segments::open(&d).unwrap();
        let big = vec![2u8; SEGMENT_MAX as usize];
        let a = s.append(&big).unwrap();
        let b = s.append(b"in the second segment").unwrap();
        let c = s.append(b"also in the second").unwrap();
        assert!(s.sync());
        drop(s);
        let s = Segments::open(&d).unwrap();
        assert_eq!(s.count(), 2);
        s.retain(&c);
        s.sweep();
        assert_eq!(s.count(), 1, "the first segment held nothing retained");
        assert_eq!(s.read(&a), None);
        assert_eq!(s.read(&b).unwrap(), b"in the second segment");
        let n = s.append(b"new").unwrap();
        assert!(n.segment > c.segment, "segment ids are never reused");
        let _ = std::fs::remove_dir_all(&d);
    }
}
