//! What a queue's owner publishes about its queue, for anyone to read without asking it:
//! queue.declare-ok's counts, and later the management API and metrics. Atomics written by the
//! owner at the end of each round (and before it answers a request whose answer they must
//! agree with), so reading them never waits behind the queue's mailbox.
//!
//! `queue.declare-ok` must count the messages its own connection published before it, as
//! RabbitMQ's does (the publishes and the declare reach the queue in order there). Publishes
//! still in the mailbox are counted in `in_mailbox` by their sender; the owner moves them to
//! `ready` when it has handled them. The two move together under a sequence lock, so a reader
//! never counts a message twice or not at all.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The counters of one queue.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Odd while the owner moves messages from `in_mailbox` to `ready`.
    version: AtomicU64,
    /// Ready messages, as of the owner's last update.
    ready: AtomicU64,
    /// Published messages sent to the queue that the owner has not accounted for yet.
    in_mailbox: AtomicU64,
    /// Body bytes of the ready messages.
    ready_bytes: AtomicU64,
    /// Delivered and not yet acknowledged.
    unacked: AtomicU64,
    /// Persistent messages held (ready or unacked), in a durable queue.
    persistent: AtomicU64,
    unacked_bytes: AtomicU64,
    /// Ready messages paged out to disk, and their body bytes.
    paged: AtomicU64,
    paged_bytes: AtomicU64,
    /// Consumers attached.
    consumers: AtomicU32,
    /// Messages enqueued, since the queue started.
    published: AtomicU64,
    /// Messages handed to consumers or basic.get, since the queue started.
    delivered: AtomicU64,
    /// Of those, the ones flagged redelivered.
    redelivered: AtomicU64,
    /// Messages acknowledged.
    acked: AtomicU64,
    /// A deduplicating queue's duplicates dropped and ids held.
    dedup_duplicates: AtomicU64,
    dedup_entries: AtomicU64,
    /// The management API's last readings, for its rates. Kept here, not in a map the
    /// sampler owns, so that they go when the queue does: a map keyed by queue held every
    /// deleted queue's name for two more sampling rounds (10 s), megabytes after a mass delete.
    pub readings: Readings,
}

/// The last three readings an observer took of a queue's counters, each tagged with the number
/// of the observer's round (from 1) that took it. Three, not two: while a round records its
/// readings, readers still use the two rounds before it.
#[derive(Debug, Default)]
pub struct Readings(std::sync::Mutex<[(u64, [u64; 6]); 3]>);

impl Readings {
    /// Records round `round`'s reading, forgetting the oldest.
    pub fn record(&self, round: u64, values: [u64; 6]) {
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        r.rotate_left(1);
        r[2] = (round, values);
    }

    /// Round `round`'s reading, if it is one of the last three taken.
    pub fn get(&self, round: u64) -> Option<[u64; 6]> {
        let r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        r.iter()
            .find(|(n, _)| *n == round && round > 0)
            .map(|(_, v)| *v)
    }
}

/// A consistent reading of a queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready messages, including those published to the queue and not yet handled by it.
    pub ready: u64,
    /// Body bytes of the ready messages the queue holds.
    pub ready_bytes: u64,
    /// Delivered and not yet acknowledged.
    pub unacked: u64,
    /// Body bytes of the unacknowledged messages.
    pub unacked_bytes: u64,
    /// Ready messages paged out to disk (RabbitMQ's `messages_paged_out`).
    pub paged_out: u64,
    /// Their body bytes (`message_bytes_paged_out`).
    pub paged_out_bytes: u64,
    /// Persistent messages held (ready or unacked); 0 in a transient queue.
    pub persistent: u64,
    /// Consumers attached.
    pub consumers: u32,
    /// Messages enqueued since the queue started.
    pub published: u64,
    /// Messages delivered (to consumers or basic.get) since the queue started.
    pub delivered: u64,
    /// Of those, redeliveries.
    pub redelivered: u64,
    /// Messages acknowledged since the queue started.
    pub acked: u64,
    /// A deduplicating queue's duplicates dropped since it started, and ids it holds.
    pub dedup_duplicates: u64,
    pub dedup_entries: u64,
}

/// The owner's side: what changed in the current round, applied to the counters at once.
#[derive(Debug, Default)]
pub(crate) struct RoundCounts {
    /// Published messages handled (taken off `in_mailbox`).
    pub handled: u64,
    pub published: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
}

impl QueueCounters {
    /// A sender is about to put `n` published messages in the queue's mailbox.
    pub(crate) fn sending(&self, n: u64) {
        self.in_mailbox.fetch_add(n, Ordering::AcqRel);
    }

    /// Messages sent that will never be handled (the send failed).
    pub(crate) fn unsent(&self, n: u64) {
        self.in_mailbox.fetch_sub(n, Ordering::AcqRel);
    }

    /// The owner publishes its state: `ready` messages of `ready_bytes`, `unacked`, and what
    /// `round` counted since the last update (which it resets).
    pub(crate) fn update(
        &self,
        ready: u64,
        ready_bytes: u64,
        unacked: u64,
        unacked_bytes: u64,
        persistent: u64,
        round: &mut RoundCounts,
    ) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.ready.store(ready, Ordering::Release);
        if round.handled > 0 {
            self.in_mailbox.fetch_sub(round.handled, Ordering::AcqRel);
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        self.ready_bytes.store(ready_bytes, Ordering::Relaxed);
        self.unacked.store(unacked, Ordering::Relaxed);
        self.unacked_bytes.store(unacked_bytes, Ordering::Relaxed);
        self.persistent.store(persistent, Ordering::Relaxed);
        for (counter, n) in [
            (&self.published, round.published),
            (&self.delivered, round.delivered),
            (&self.redelivered, round.redelivered),
            (&self.acked, round.acked),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        *round = RoundCounts::default();
    }

    /// The owner's paged-out messages and their bytes.
    pub(crate) fn set_paged(&self, (messages, bytes): (u64, u64)) {
        self.paged.store(messages, Ordering::Relaxed);
        self.paged_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The owner's deduplication cache: duplicates dropped, ids held.
    pub(crate) fn deduplicated(&self, duplicates: u64, entries: u64) {
        self.dedup_duplicates.store(duplicates, Ordering::Relaxed);
        self.dedup_entries.store(entries, Ordering::Relaxed);
    }

    /// The owner's consumer count changed.
    pub(crate) fn set_consumers(&self, n: usize) {
        self.consumers.store(n as u32, Ordering::Release);
    }

    /// Reads the counters.
    pub fn read(&self) -> QueueCounts {
        let ready = loop {
            let before = self.version.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let ready =
                self.ready.load(Ordering::Acquire) + self.in_mailbox.load(Ordering::Acquire);
            if self.version.load(Ordering::Acquire) == before {
                break ready;
            }
        };
        QueueCounts {
            ready,
            ready_bytes: self.ready_bytes.load(Ordering::Relaxed),
            unacked: self.unacked.load(Ordering::Relaxed),
            unacked_bytes: self.unacked_bytes.load(Ordering::Relaxed),
            paged_out: self.paged.load(Ordering::Relaxed),
            paged_out_bytes: self.paged_bytes.load(Ordering::Relaxed),
            persistent: self.persistent.load(Ordering::Relaxed),
            consumers: self.consumers.load(Ordering::Acquire),
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            dedup_duplicates: self.dedup_duplicates.load(Ordering::Relaxed),
            dedup_entries: self.dedup_entries.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_keep_the_last_three_rounds() {
        let r = Readings::default();
        assert_eq!(r.get(0), None, "round 0 is never taken");
        assert_eq!(r.get(1), None);
        for round in 1..=4 {
            r.record(round, [round; 6]);
        }
        assert_eq!(r.get(1), None, "forgotten");
        assert_eq!(r.get(2), Some([2; 6]));
        assert_eq!(r.get(4), Some([4; 6]));
        assert_eq!(r.get(5), None, "not taken yet");
    }

    #[test]
    fn a_message_is_counted_once_from_mailbox_to_queue() {
        let c = QueueCounters::default();
        c.sending(3);
        assert_eq!(c.read().ready, 3, "in the mailbox");
        let mut round = RoundCounts {
            handled: 3,
            published: 3,
            ..Default::default()
        };
        c.update(3, 48, 0, 0, 0, &mut round);
        let r = c.read();
        assert_eq!((r.ready, r.published, r.ready_bytes), (3, 3, 48));
        let mut round = RoundCounts {
            delivered: 2,
            ..Default::default()
        };
        c.update(1, 16, 2, 32, 0, &mut round);
        let r = c.read();
        assert_eq!(
            (r.ready, r.unacked, r.unacked_bytes, r.delivered),
            (1, 2, 32, 2)
        );
    }

    #[test]
    fn concurrent_readers_never_see_a_message_twice_or_not_at_all() {
        let c = std::sync::Arc::new(QueueCounters::default());
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                for ready in 1..=100_000u64 {
                    c.sending(1);
                    let mut round = RoundCounts {
                        handled: 1,
                        ..Default::default()
                    };
                    c.update(ready, 0, 0, 0, 0, &mut round);
                }
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            let seen = c.read().ready;
            assert!(seen >= last, "went back from {last} to {seen}");
            last = seen;
        }
        writer.join().unwrap();
        assert_eq!(c.read().ready, 100_000);
    }
}
