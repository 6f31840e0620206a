//! Giving freed memory back to the OS when the broker goes idle.
//!
//! mimalloc handles memory that another thread freed only when the owning thread allocates
//! again, and returns freed pages only when it runs again after its purge delay. A broker that
//! went idle after deleting 100,000 queues kept anywhere from 11% to all of the 190 MB they
//! took (bench/queue_memory.sh, repeated runs). A forced collection when a worker parks settles
//! both ([`on_park`]). A busy worker parks thousands of times a second, so a worker collects at
//! most every [`INTERVAL`]; a park that skipped its collection is owed one, and [`run`] wakes
//! the workers again a little later so that the last park of a burst is not the one that
//! skipped.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The shortest time between two collections on one worker.
const INTERVAL: Duration = Duration::from_millis(250);
/// How many times [`run`] wakes the workers for the collections they are owed before it waits
/// for the next skipped one.
const ROUNDS: usize = 20;

/// Workers whose last park skipped its collection.
static OWED: AtomicUsize = AtomicUsize::new(0);
static SKIPPED: Notify = Notify::const_new();

thread_local! {
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    static OWES: Cell<bool> = const { Cell::new(false) };
}

/// The runtime's `on_thread_park` hook: collects this worker's freed memory, at most every
/// [`INTERVAL`].
pub fn on_park() {
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last.get().is_none_or(|t| now.duration_since(t) >= INTERVAL);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        collect();
        if OWES.with(|o| o.replace(false)) {
            OWED.fetch_sub(1, Ordering::Relaxed);
        }
    } else if !OWES.with(|o| o.replace(true)) {
        OWED.fetch_add(1, Ordering::Relaxed);
        SKIPPED.notify_one();
    }
}

/// Wakes the workers after a park skipped its collection, until none is owed one (at most
/// [`ROUNDS`] times, [`INTERVAL`] apart, then again after the next skip). Spawning two empty
/// tasks from a worker puts one in its queue beyond the LIFO slot, which makes tokio wake a
/// parked worker to steal it; each worker that runs and parks again collects. Costs nothing while
/// the broker is idle and collected, and a wake-up per 250 ms while it is busy.
pub async fn run(workers: usize) {
    loop {
        SKIPPED.notified().await;
        for _ in 0..ROUNDS {
            tokio::time::sleep(INTERVAL + Duration::from_millis(50)).await;
            if OWED.load(Ordering::Relaxed) == 0 {
                break;
            }
            for _ in 0..workers.max(2) {
                tokio::spawn(async {});
            }
        }
    }
}

fn collect() {
    // SAFETY: mi_collect takes no arguments but a flag and touches only mimalloc's own state for
    // the calling thread (and, forced, its shared arenas, under its own locks). Measured need:
    // see the module documentation.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}
