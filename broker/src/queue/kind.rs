//! Kinds of queue, and the one place where queues are made. Classic and quorum queues
//! (`x-queue-type` classic and quorum; quorum on one node is a classic queue that counts
//! deliveries) run as the same owner task over a store picked from the queue's arguments and
//! durability: in memory, on disk, with priorities. A stream (`x-queue-type: stream`, an
//! append-only log whose messages stay after they are read) has an owner of its own
//! ([`crate::stream`]); the vhost treats all three alike.

use std::sync::{Arc, Weak};

use super::args::QueueArgs;
use super::{QueueHandle, QueueHost, QueuePolicy, QueueSpec};
use crate::store::disk::Disk;
use crate::store::paging::Pager;
use crate::store::{DurableQueueStore, MemoryQueueStore, PriorityQueueStore, QueueStore};
use crate::stream::log::{Retention, StreamLog};

/// The kinds of queue Warren runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// `x-queue-type: classic` (the default).
    Classic,
    /// `x-queue-type: quorum`: a classic queue here, whose deliveries are counted.
    Quorum,
    /// `x-queue-type: stream`: an append-only log with an owner of its own ([`crate::stream`]).
    Stream,
}

impl QueueKind {
    /// The kind a queue's arguments ask for.
    pub fn of(args: &QueueArgs) -> Self {
        if args.stream {
            QueueKind::Stream
        } else if args.quorum {
            QueueKind::Quorum
        } else {
            QueueKind::Classic
        }
    }

    /// The name RabbitMQ gives it (`type` in the management API).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueKind::Classic => "classic",
            QueueKind::Quorum => "quorum",
            QueueKind::Stream => "stream",
        }
    }
}

/// Starts a new queue: `disk` is the store and the queue's id in it, for a durable queue;
/// `pager` where a transient queue pages its messages out when it is deep (a priority queue
/// keeps them all in memory).
pub(crate) fn create(
    spec: QueueSpec,
    policy: QueuePolicy,
    host: Weak<dyn QueueHost>,
    disk: Option<(Arc<Disk>, u64)>,
    pager: Option<&Arc<Pager>>,
) -> std::io::Result<QueueHandle> {
    if spec.args.stream {
        // The vhost refuses a stream without a data directory before it gets here.
        let (disk, id) =
            disk.ok_or_else(|| std::io::Error::other("a stream needs a data directory"))?;
        let log = StreamLog::open(&disk.stream_dir(id), retention(&policy.args))?;
        return Ok(crate::stream::spawn(spec, policy, log));
    }
    let dedup = dedup_cache(&spec.args, disk.as_ref().map(|(d, id)| (d, *id)));
    let store: Box<dyn QueueStore> = match (disk, spec.args.max_priority) {
        (disk, Some(max)) => Box::new(PriorityQueueStore::new(max, disk)),
        (Some((disk, id)), None) => Box::new(DurableQueueStore::new(disk, id)),
        (None, None) => Box::new(MemoryQueueStore::new(pager)),
    };
    Ok(super::spawn(spec, policy, host, store, 1, dedup))
}

/// A queue's deduplication cache, kept in the store for a durable queue.
fn dedup_cache(args: &QueueArgs, disk: Option<(&Arc<Disk>, u64)>) -> Option<crate::dedup::Cache> {
    let settings = args.dedup.clone()?;
    let persist = disk.map(|(disk, id)| crate::dedup::Persist {
        tree: disk.dedup(),
        prefix: crate::dedup::queue_prefix(id),
    });
    Some(crate::dedup::Cache::new(settings, persist))
}

/// A stream's retention, from its arguments.
pub(crate) fn retention(args: &QueueArgs) -> Retention {
    Retention {
        max_bytes: args.max_length_bytes,
        max_age_ms: args.max_age_ms,
        segment_bytes: args
            .stream_segment_bytes
            .unwrap_or(crate::stream::log::DEFAULT_SEGMENT_BYTES),
    }
}

/// Starts a durable queue found in the store at start, with its messages. Returns it and how
/// many messages it holds.
pub(crate) fn recover(
    spec: QueueSpec,
    policy: QueuePolicy,
    host: Weak<dyn QueueHost>,
    disk: Arc<Disk>,
    id: u64,
    unclean: bool,
) -> std::io::Result<(QueueHandle, usize)> {
    if spec.args.stream {
        let log = StreamLog::open(&disk.stream_dir(id), retention(&policy.args))?;
        let messages = log.len() as usize;
        return Ok((crate::stream::spawn(spec, policy, log), messages));
    }
    let (store, next_seq): (Box<dyn QueueStore>, u64) = match spec.args.max_priority {
        Some(max) => {
            let (s, n) = PriorityQueueStore::recover(max, disk.clone(), id, unclean);
            (Box::new(s), n)
        }
        None => {
            let (s, n) = DurableQueueStore::recover(disk.clone(), id, unclean);
            (Box::new(s), n)
        }
    };
    let messages = store.len();
    let dedup = dedup_cache(&spec.args, Some((&disk, id)));
    Ok((
        super::spawn(spec, policy, host, store, next_seq, dedup),
        messages,
    ))
}
