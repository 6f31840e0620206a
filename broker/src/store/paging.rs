//! Page files: where a deep queue's packed messages go when its in-memory backlog grows past
//! [`PAGE_AFTER`](super::ready::PAGE_AFTER), so that a queue nobody consumes from fills the
//! disk, not the broker's memory (RabbitMQ's classic queues v2 page the same way).
//!
//! A queue's packed records are written and read in order, so its page file is a FIFO of
//! blocks: appended at the back, read from the front, never indexed. It is split into files of
//! [`FILE_BYTES`] so that the space of blocks already read is given back a file at a time.
//! Page files hold transient copies (messages that are in memory only, or the index records
//! of persistent ones): nothing in them survives a restart, and [`Pager::open`] empties the
//! directory. Nothing is synced.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Size at which a queue starts a new page file.
pub const FILE_BYTES: u64 = 64 << 20;

/// The page directory of a data directory, shared by every queue.
#[derive(Debug)]
pub struct Pager {
    dir: PathBuf,
    /// Names the page files of each queue apart.
    next_queue: AtomicU64,
    /// Bytes in page files, for the metrics.
    bytes: AtomicU64,
    /// Blocks written that could not be (they stayed in memory).
    failed_writes: AtomicU64,
}

impl Pager {
    /// The page directory `dir`, emptied: what an earlier run paged is of no use now.
    pub fn open(dir: &Path) -> io::Result<Arc<Pager>> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(Pager {
            dir: dir.to_owned(),
            next_queue: AtomicU64::new(1),
            bytes: AtomicU64::new(0),
            failed_writes: AtomicU64::new(0),
        }))
    }

    /// Bytes held in page files now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Blocks that could not be paged (a full disk): they stayed in memory.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Relaxed)
    }

    /// A new, empty page file for one queue (no file is created until a block is written).
    pub fn page_file(self: &Arc<Self>) -> PageFile {
        PageFile {
            pager: Arc::clone(self),
            queue: self.next_queue.fetch_add(1, Relaxed),
            files: VecDeque::new(),
            next_file: 0,
            warned: false,
        }
    }
}

/// Where a paged block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    file: u64,
    offset: u64,
    len: u32,
}

/// One file of a queue's page file.
#[derive(Debug)]
struct OneFile {
    n: u64,
    file: File,
    len: u64,
}

/// One queue's paged blocks.
#[derive(Debug)]
pub struct PageFile {
    pager: Arc<Pager>,
    queue: u64,
    /// Its files, oldest first; blocks are appended to the last.
    files: VecDeque<OneFile>,
    next_file: u64,
    /// A failed write was logged.
    warned: bool,
}

impl PageFile {
    fn path(&self, n: u64) -> PathBuf {
        self.pager.dir.join(format!("{}.{n}.page", self.queue))
    }

    /// Appends a block; `None` (logged once) if it could not be written: it stays in memory.
    pub fn write(&mut self, block: &[u8]) -> Option<Page> {
        match self.try_write(block) {
            Ok(p) => {
                self.pager.bytes.fetch_add(block.len() as u64, Relaxed);
                Some(p)
            }
            Err(e) => {
                self.pager.failed_writes.fetch_add(1, Relaxed);
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        dir = %self.pager.dir.display(),
                        error = %e,
                        "cannot page queued messages out to disk; they stay in memory"
                    );
                }
                None
            }
        }
    }

    fn try_write(&mut self, block: &[u8]) -> io::Result<Page> {
        if self.files.back().is_none_or(|f| f.len >= FILE_BYTES) {
            let n = self.next_file;
            let file = File::options()
                .create_new(true)
                .read(true)
                .append(true)
                .open(self.path(n))?;
            self.next_file += 1;
            self.files.push_back(OneFile { n, file, len: 0 });
        }
        let f = self.files.back_mut().expect("a file to write to");
        if let Err(e) = f.file.write_all(block) {
            // A short write leaves bytes no page points at: the next block starts a new file.
            f.len = FILE_BYTES;
            return Err(e);
        }
        let page = Page {
            file: f.n,
            offset: f.len,
            len: block.len() as u32,
        };
        f.len += block.len() as u64;
        Ok(page)
    }

    /// Reads a block back.
    pub fn read(&self, page: Page) -> io::Result<Vec<u8>> {
        let f = self
            .files
            .iter()
            .find(|f| f.n == page.file)
            .ok_or_else(|| io::Error::other("the page's file is gone"))?;
        let mut buf = vec![0; page.len as usize];
        f.file.read_exact_at(&mut buf, page.offset)?;
        Ok(buf)
    }

    /// Every block before `page` was read: files wholly before it are deleted.
    pub fn read_up_to(&mut self, page: Page) {
        while self.files.front().is_some_and(|f| f.n < page.file) {
            self.remove_front();
        }
    }

    /// Deletes every file (the queue was purged, emptied or deleted).
    pub fn clear(&mut self) {
        while !self.files.is_empty() {
            self.remove_front();
        }
    }

    fn remove_front(&mut self) {
        if let Some(f) = self.files.pop_front() {
            self.pager
                .bytes
                .fetch_sub(f.len.min(self.pager.bytes()), Relaxed);
            drop(f.file);
            let path = self.path(f.n);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a page file");
            }
        }
    }

    /// Files held (for tests).
    pub fn files(&self) -> usize {
        self.files.len()
    }
}

impl Drop for PageFile {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_back_and_read_files_are_deleted() {
        let dir = std::env::temp_dir().join(format!("warren-paging-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("stale")).unwrap();
        let pager = Pager::open(&dir).unwrap();
        assert!(!dir.join("stale").exists(), "emptied at open");
        let mut pf = pager.page_file();
        let block = |i: u64| vec![i as u8; 1 << 20];
        let pages: Vec<Page> = (0..200).map(|i| pf.write(&block(i)).unwrap()).collect();
        assert_eq!(pf.files(), 4, "64 MiB files");
        assert_eq!(pager.bytes(), 200 << 20);
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(pf.read(*p).unwrap(), block(i as u64));
            pf.read_up_to(*p);
        }
        assert_eq!(pf.files(), 1, "files read past are deleted");
        drop(pf);
        assert_eq!(pager.bytes(), 0);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
