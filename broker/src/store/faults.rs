//! Failures a test can inject into the store's file operations: segment writes that fail
//! (after writing part of the chunk, as a full disk does), syncs that fail, and syncs held
//! until released. Every segment write and sync asks here first; when nothing is injected
//! that is one relaxed atomic load.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// The faults injected into one store.
#[derive(Debug, Default)]
pub struct Faults {
    /// Segment writes fail with ENOSPC after writing half their bytes.
    fail_writes: AtomicBool,
    /// While writes fail: how many more succeed first ([`fail_writes_after`]).
    ///
    /// [`fail_writes_after`]: Self::fail_writes_after
    writes_left: AtomicU64,
    /// Segment syncs fail with EIO.
    fail_syncs: AtomicBool,
    /// Anything injected at all (the only load on the fast path).
    any: AtomicBool,
    /// Syncs wait while this is true.
    held: Mutex<bool>,
    released: Condvar,
}

impl Faults {
    /// Makes segment writes fail (true) or work again (false).
    pub fn fail_writes(&self, on: bool) {
        self.writes_left.store(0, Ordering::SeqCst);
        self.fail_writes.store(on, Ordering::SeqCst);
        self.update();
    }

    /// Lets the next `ok` segment writes succeed, then makes writes fail (a disk that fills
    /// in the middle of a round).
    pub fn fail_writes_after(&self, ok: u64) {
        self.writes_left.store(ok, Ordering::SeqCst);
        self.fail_writes.store(true, Ordering::SeqCst);
        self.update();
    }

    /// Makes segment syncs fail (true) or work again (false).
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
        self.update();
    }

    /// Holds every segment sync until called again with false.
    pub fn hold_syncs(&self, on: bool) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = on;
        if !on {
            self.released.notify_all();
        }
        self.update();
    }

    fn update(&self) {
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        let any = held
            || self.fail_writes.load(Ordering::SeqCst)
            || self.fail_syncs.load(Ordering::SeqCst);
        self.any.store(any, Ordering::SeqCst);
    }

    /// Whether a write should fail now.
    pub(crate) fn write_fails(&self) -> bool {
        self.any.load(Ordering::Relaxed)
            && self.fail_writes.load(Ordering::SeqCst)
            && self
                .writes_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
    }

    /// Called before a sync: waits while syncs are held, fails if syncs fail.
    pub(crate) fn before_sync(&self) -> io::Result<()> {
        if !self.any.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while *held {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        drop(held);
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected sync failure"));
        }
        Ok(())
    }
}

/// The error an injected write failure reports.
pub(crate) fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}
