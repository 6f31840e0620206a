//! Kinds of queue, and the one place where queues are made. Today both kinds RabbitMQ
//! clients declare (`x-queue-type` classic and quorum; quorum on one node is a classic queue
//! that counts deliveries) run as the same owner task over a store picked from the queue's
//! arguments and durability: in memory, on disk, with priorities. A stream (an append-only log
//! whose messages stay after they are read) will be a third kind with an owner of its own;
//! the vhost does not change when it comes.

use std::sync::{Arc, Weak};

use super::args::QueueArgs;
use super::{QueueHandle, QueueHost, QueueSpec};
use crate::store::disk::Disk;
use crate::store::paging::Pager;
use crate::store::{DurableQueueStore, MemoryQueueStore, PriorityQueueStore, QueueStore};

/// The kinds of queue Warren runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// `x-queue-type: classic` (the default).
    Classic,
    /// `x-queue-type: quorum`: a classic queue here, whose deliveries are counted.
    Quorum,
}

impl QueueKind {
    /// The kind a queue's arguments ask for.
    pub fn of(args: &QueueArgs) -> Self {
        if args.quorum {
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
        }
    }
}

/// Starts a new queue: `disk` is the store and the queue's id in it, for a durable queue;
/// `pager` where a transient queue pages its messages out when it is deep (a priority queue
/// keeps them all in memory).
pub(crate) fn create(
    spec: QueueSpec,
    host: Weak<dyn QueueHost>,
    disk: Option<(Arc<Disk>, u64)>,
    pager: Option<&Arc<Pager>>,
) -> QueueHandle {
    let store: Box<dyn QueueStore> = match (disk, spec.args.max_priority) {
        (disk, Some(max)) => Box::new(PriorityQueueStore::new(max, disk)),
        (Some((disk, id)), None) => Box::new(DurableQueueStore::new(disk, id)),
        (None, None) => Box::new(MemoryQueueStore::new(pager)),
    };
    super::spawn(spec, host, store, 1)
}

/// Starts a durable queue found in the store at start, with its messages. Returns it and how
/// many messages it holds.
pub(crate) fn recover(
    spec: QueueSpec,
    host: Weak<dyn QueueHost>,
    disk: Arc<Disk>,
    id: u64,
    unclean: bool,
) -> (QueueHandle, usize) {
    let (store, next_seq): (Box<dyn QueueStore>, u64) = match spec.args.max_priority {
        Some(max) => {
            let (s, n) = PriorityQueueStore::recover(max, disk, id, unclean);
            (Box::new(s), n)
        }
        None => {
            let (s, n) = DurableQueueStore::recover(disk, id, unclean);
            (Box::new(s), n)
        }
    };
    let messages = store.len();
    (super::spawn(spec, host, store, next_seq), messages)
}
