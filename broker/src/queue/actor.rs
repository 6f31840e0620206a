//! The task that owns one queue: its ready messages, the messages delivered and not yet
//! settled, the messages waiting out a retry delay, and its consumers. It drains its mailboxes
//! in batches and, after each batch, expires, promotes and pushes as many messages as its
//! consumers' prefetch and delivery windows allow.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::types::AMQPValue;
use tokio::sync::mpsc;

use super::args::{Overflow, QueueArgs};
use super::counters::RoundCounts;
use super::dead_letter::{dead_lettered, Reason};
use super::mailbox;
use super::{
    ConnEvent, Consumer, Delivered, Delivery, Handoff, QueueCmd, QueueHandle, QueueHost, QueueSpec,
    ReturnKind, DELIVERY_WINDOW,
};
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::store::{QueueStore, StoredMessage};

/// Commands a queue's mailbox holds before publishers wait. Small, so that publishers feel
/// back-pressure as soon as the queue falls behind (a command may carry 256 publishes).
const MAILBOX: usize = 256;
/// Settlements and internal commands handled between two delivery rounds.
const BATCH: usize = 256;
/// Published messages taken from the mailbox between two delivery rounds (whole commands: at
/// least one): about what one round can deliver (two delivery windows), so that deliveries,
/// settlements and the consumers' connections keep pace with a flood of publishes. Counted in
/// commands (16, of any size), a round of 1 KiB messages took in 2,000 and one of 16-byte
/// messages 25,000; 16,384 messages per round cost 10% of the 1 KiB throughput, 2,048 nothing
/// measurable (`warren perf throughput -s 1024`, alternating runs).
const PUBLISH_MESSAGES: usize = 2 * DELIVERY_WINDOW as usize;
/// The resolution of message expiry.
const EXPIRY_GRAIN: Duration = Duration::from_millis(1);
/// Flow control: with consumers draining the queue, a backlog above this many ready messages
/// stops the queue taking publishes until it shrinks, so publishers slow to the consumers'
/// pace instead of starving them of CPU (RabbitMQ's credit flow has the same effect).
const FLOW_HIGH: usize = 20_000;
/// The same limit in body bytes, so that a stream of large messages keeps a small working set
/// (memory the allocator reuses hot, instead of fresh pages the kernel must zero).
const FLOW_HIGH_BYTES: u64 = 16 << 20;
/// ...unless the consumers made no progress for this long (stuck, or at their prefetch
/// waiting for acks that do not come): then publishes are taken and the queue grows.
const FLOW_STALL: Duration = Duration::from_millis(100);

struct Attached {
    /// Unique within this queue, so unacked messages know their consumer.
    id: u64,
    consumer: Consumer,
    /// Unacked deliveries to this consumer (its prefetch count applies to this).
    unacked: u32,
}

struct Unacked {
    msg: StoredMessage,
    /// The consumer it went to (None for basic.get).
    consumer: Option<u64>,
    /// The redelivered flag it was delivered with (restored if it never reached the client).
    was_redelivered: bool,
}

/// Delivered, unsettled messages by sequence, with how many are persistent (a durable
/// queue's `messages_persistent` counts them with its persistent ready messages).
#[derive(Default)]
struct UnackedMap {
    map: HashMap<u64, Unacked>,
    persistent: u64,
    /// Body bytes of the messages in the map.
    bytes: u64,
}

impl UnackedMap {
    fn insert(&mut self, seq: u64, u: Unacked) {
        self.persistent += u64::from(u.msg.message.is_persistent());
        self.bytes += u.msg.message.body_len() as u64;
        if let Some(old) = self.map.insert(seq, u) {
            self.persistent -= u64::from(old.msg.message.is_persistent());
            self.bytes -= old.msg.message.body_len() as u64;
        }
    }

    fn remove(&mut self, seq: &u64) -> Option<Unacked> {
        let u = self.map.remove(seq)?;
        self.persistent -= u64::from(u.msg.message.is_persistent());
        self.bytes -= u.msg.message.body_len() as u64;
        Some(u)
    }

    fn clear(&mut self) {
        self.map.clear();
        self.persistent = 0;
        self.bytes = 0;
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn keys(&self) -> impl Iterator<Item = &u64> {
        self.map.keys()
    }
}

struct QueueActor {
    handle: QueueHandle,
    /// The arguments it runs with: its own and its policies' (see [`QueueCmd::Policy`]).
    args: Arc<QueueArgs>,
    host: Weak<dyn QueueHost>,
    store: Box<dyn QueueStore>,
    next_seq: u64,
    unacked: UnackedMap,
    /// Returned messages waiting out their retry delay, by (due time, sequence).
    delayed: BTreeMap<(Instant, u64), StoredMessage>,
    consumers: Vec<Attached>,
    next_consumer_id: u64,
    /// Round-robin position among consumers.
    cursor: usize,
    /// For auto-delete: the queue had a consumer at some point.
    had_consumer: bool,
    /// For `x-expires`: the last time the queue was used.
    last_used: Instant,
    /// For flow control: the last time consumers took or settled messages.
    last_progress: Instant,
    /// Confirms of this round's stored publishes, registered with the flusher after commit.
    confirms: Vec<super::ConfirmToken>,
    /// The sequence numbers of those publishes (taken out of the queue if the write fails).
    confirm_seqs: Vec<u64>,
    deleted: bool,
    /// Snapshotted for a clean shutdown: the task ends after this round.
    stopped: bool,
    /// What this round changed, for the queue's counters.
    round: RoundCounts,
    /// `x-message-deduplication`: the ids of messages published to it.
    dedup: Option<crate::dedup::Cache>,
    /// This round's publishes that made `dedup` remember an id and wait for the store: the
    /// ids are forgotten if the write fails.
    round_dedup: Vec<(u64, u128)>,
}

/// Starts the owner task of a new queue over `store` (whose messages, if recovered, are
/// numbered below `next_seq`) and returns its handle.
pub(crate) fn spawn(
    spec: QueueSpec,
    policy: super::QueuePolicy,
    host: Weak<dyn QueueHost>,
    store: Box<dyn QueueStore>,
    next_seq: u64,
    dedup: Option<crate::dedup::Cache>,
) -> QueueHandle {
    let (tx, rx) = mailbox::bounded(MAILBOX);
    let (itx, irx) = mailbox::unbounded();
    let args = Arc::clone(&policy.args);
    let handle = QueueHandle::new(spec, policy, tx, itx);
    let mut actor = QueueActor {
        handle: handle.clone(),
        args,
        host,
        store,
        next_seq,
        unacked: UnackedMap::default(),
        delayed: BTreeMap::new(),
        consumers: Vec::new(),
        next_consumer_id: 1,
        cursor: 0,
        had_consumer: false,
        last_used: Instant::now(),
        last_progress: Instant::now(),
        confirms: Vec::new(),
        confirm_seqs: Vec::new(),
        deleted: false,
        stopped: false,
        round: RoundCounts::default(),
        dedup,
        round_dedup: Vec::new(),
    };
    // A recovered queue's counters show its messages before its first round.
    actor.update_counters();
    tokio::spawn(actor.run(rx, irx));
    handle
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl QueueActor {
    /// The arguments the queue runs with: its own `x-` arguments and its policies'.
    fn args(&self) -> &QueueArgs {
        &self.args
    }

    async fn run(
        mut self,
        mut rx: mailbox::Receiver<QueueCmd>,
        mut internal: mailbox::Receiver<QueueCmd>,
    ) {
        let mut batch = Vec::new();
        let mut from_queues = Vec::new();
        loop {
            // About to wait: an idle queue holds no batch buffers: with many queues they added up.
            if batch.capacity() + from_queues.capacity() > 0 && rx.is_empty() && internal.is_empty()
            {
                (batch, from_queues) = (Vec::new(), Vec::new());
            }
            let now = Instant::now();
            let throttled = !self.consumers.is_empty()
                && (self.store.len() >= FLOW_HIGH || self.store.bytes() >= FLOW_HIGH_BYTES)
                && now - self.last_progress < FLOW_STALL;
            let deadline = match throttled {
                true => Some(self.last_progress + FLOW_STALL),
                false => None,
            }
            .into_iter()
            .chain(self.next_deadline())
            .min();
            tokio::select! {
                biased;
                _ = internal.recv_many(&mut from_queues, BATCH) => {}
                n = rx.recv_many(&mut batch, 1), if !throttled => {
                    if n == 0 {
                        return;
                    }
                    let mut taken = batch.iter().map(QueueCmd::publishes).sum::<usize>();
                    while taken < PUBLISH_MESSAGES {
                        let Ok(cmd) = rx.try_recv() else { break };
                        taken += cmd.publishes();
                        batch.push(cmd);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {}
            }
            let mut cmds = from_queues.drain(..).chain(batch.drain(..));
            while let Some(cmd) = cmds.next() {
                self.handle(cmd);
                if self.deleted {
                    cmds.for_each(QueueCmd::queue_deleted);
                    break;
                }
            }
            if !self.deleted {
                self.tick(Instant::now());
            }
            if self.deleted {
                self.finish_deleted(&mut rx, &mut internal);
                return;
            }
            if self.stopped {
                return;
            }
            self.deliver();
            self.commit();
            self.update_counters();
        }
    }

    /// Publishes the queue's counts (see [`QueueCounters`](super::counters::QueueCounters)):
    /// at the end of every round, and before answering a request whose answer a later
    /// queue.declare-ok must agree with.
    fn update_counters(&mut self) {
        let c = self.handle.counters();
        c.set_consumers(self.consumers.len());
        c.set_paged(self.store.paged());
        // RabbitMQ counts persistent messages of durable queues only.
        let persistent = if self.handle.spec().durable {
            self.store.persistent() + self.unacked.persistent
        } else {
            0
        };
        c.update(
            self.store.len() as u64,
            self.store.bytes(),
            self.unacked.len() as u64,
            self.unacked.bytes,
            persistent,
            &mut self.round,
        );
    }

    /// The queue was deleted: the publishes it took this round and those still in its
    /// mailboxes went with it, and are confirmed (as RabbitMQ confirms them).
    fn finish_deleted(
        &mut self,
        rx: &mut mailbox::Receiver<QueueCmd>,
        internal: &mut mailbox::Receiver<QueueCmd>,
    ) {
        self.confirm_seqs.clear();
        for token in self.confirms.drain(..) {
            token.resolve(true);
        }
        QueueCmd::drain_deleted(rx, internal);
    }

    /// Applies this round's store writes, then asks for the flush that confirms them.
    fn commit(&mut self) {
        let round_dedup = std::mem::take(&mut self.round_dedup);
        self.commit_round(&round_dedup);
    }

    fn commit_round(&mut self, round_dedup: &[(u64, u128)]) {
        let awaits_flush = !self.confirms.is_empty() && self.store.barrier().is_some();
        let unwritten = self.store.commit(&self.confirm_seqs, awaits_flush);
        let written = self.store.written_round();
        if self.confirms.is_empty() {
            self.confirm_seqs.clear();
            return;
        }
        let mut tokens = std::mem::take(&mut self.confirms);
        let mut seqs = std::mem::take(&mut self.confirm_seqs);
        if !unwritten.is_empty() {
            // A publish whose message could not be written is nacked at once (and the store
            // took it out of the queue); the others wait for the flush as usual.
            let all = std::mem::take(&mut tokens);
            let mut kept = Vec::with_capacity(all.len());
            for (token, seq) in all.into_iter().zip(seqs) {
                if unwritten.contains(seq) {
                    token.resolve(false);
                    // Nacked: its id must not make the publisher's retry a duplicate.
                    if let (Some(cache), Some(&(_, id))) =
                        (&mut self.dedup, round_dedup.iter().find(|(s, _)| *s == seq))
                    {
                        cache.forget(id);
                    }
                } else {
                    tokens.push(token);
                    kept.push(seq);
                }
            }
            seqs = kept;
        }
        let Some(barrier) = self.store.barrier() else {
            tokens.into_iter().for_each(|t| t.resolve(true));
            return;
        };
        // The queue hears the outcome first: a failed flush takes the nacked publishes out
        // of the queue before their publisher can see the nack.
        let queue = self.handle.clone();
        barrier.after_commit(Box::new(move |ok| {
            if !ok {
                if let Some(round) = written {
                    round.void_refused(&seqs);
                }
            }
            let refused = if ok { Vec::new() } else { seqs };
            queue.send_internal(QueueCmd::Flushed { ok, refused });
            tokens.into_iter().for_each(|t| t.resolve(ok));
        }));
    }

    /// The next moment something happens without a command: a delayed message is due, the
    /// head message expires, the unused queue expires.
    fn next_deadline(&self) -> Option<Instant> {
        let due = self.delayed.keys().next().map(|(t, _)| *t);
        let head = self.store.head_expiry().map(|t| t + EXPIRY_GRAIN);
        let unused = match (self.args().expires, self.consumers.is_empty()) {
            (Some(e), true) => Some(self.last_used + e),
            _ => None,
        };
        [due, head, unused].into_iter().flatten().min()
    }

    fn tick(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let msg = entry.remove();
            self.store.requeue(msg);
        }
        self.expire_head(now);
        if let Some(e) = self.args().expires {
            if self.consumers.is_empty() && now >= self.last_used + e {
                // An expired queue is deleted; its messages are not dead-lettered. Its records go
                // before its definition, so a crash in between leaves no orphans.
                self.shut_down();
                if let Some(host) = self.host.upgrade() {
                    host.queue_gone(&self.handle);
                }
            }
        }
    }

    /// Dead-letters expired messages at the head, so none is ever delivered. Expiry has
    /// millisecond granularity, as in RabbitMQ: a TTL of 0 still reaches a consumer that can
    /// take the message in the round it arrives.
    fn expire_head(&mut self, now: Instant) {
        while self
            .store
            .head_expiry()
            .is_some_and(|t| t + EXPIRY_GRAIN <= now)
        {
            match self.store.pop() {
                Some(msg) => self.dead_letter(msg, Reason::Expired),
                None => break,
            }
        }
    }

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish {
                message,
                confirm,
                handoff,
            } => {
                self.round.handled += 1;
                self.publish(message, confirm, handoff)
            }
            QueueCmd::PublishMany(list) => {
                self.round.handled += list.len() as u64;
                for (message, confirm) in list {
                    self.publish(message, confirm, None);
                }
            }
            QueueCmd::Consume { consumer, reply } => {
                self.last_used = Instant::now();
                let added = self.add_consumer(consumer);
                self.update_counters();
                let _ = reply.send(added);
            }
            QueueCmd::Cancel {
                conn_id,
                channel,
                tag,
                done,
            } => {
                self.last_used = Instant::now();
                self.consumers.retain(|a| {
                    !(a.consumer.conn_id == conn_id
                        && a.consumer.channel == channel
                        && a.consumer.tag == tag)
                });
                self.mark_single_active();
                self.maybe_auto_delete();
                self.update_counters();
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            QueueCmd::Get { no_ack, reply } => {
                let now = Instant::now();
                self.last_used = now;
                self.expire_head(now);
                let got = self.store.pop().map(|mut msg| {
                    let delivery = self.delivery(&msg);
                    let was_redelivered = msg.redelivered;
                    msg.redelivered = true;
                    if no_ack {
                        self.store.settle(&msg);
                    } else {
                        self.store.delivered(&msg);
                        self.unacked.insert(
                            msg.seq,
                            Unacked {
                                msg,
                                consumer: None,
                                was_redelivered,
                            },
                        );
                    }
                    (delivery, self.store.len() as u32)
                });
                if let Some((d, _)) = &got {
                    self.round.delivered += 1;
                    self.round.redelivered += u64::from(d.redelivered);
                }
                self.update_counters();
                if let Err(Some((delivery, _))) = reply.send(got) {
                    // The asking channel is gone: the message was never delivered.
                    self.returned(vec![delivery.msg_id], ReturnKind::Unsent);
                }
            }
            QueueCmd::Ack(ids) => {
                self.last_progress = Instant::now();
                for id in ids {
                    if let Some(u) = self.unacked.remove(&id) {
                        self.release(u.consumer);
                        self.store.settle(&u.msg);
                        self.round.acked += 1;
                    }
                }
            }
            QueueCmd::Return { ids, kind } => self.returned(ids, kind),
            QueueCmd::TakenOver { seq, ack } => self.store.taken_over(seq, ack),
            QueueCmd::Flushed { ok, refused } => self.store.flushed(ok, &refused),
            QueueCmd::Discard(ids) => {
                for id in ids {
                    if let Some(u) = self.unacked.remove(&id) {
                        self.release(u.consumer);
                        self.dead_letter(u.msg, Reason::Rejected);
                    }
                }
            }
            QueueCmd::Purge(reply) => {
                let n = self.store.purge() as u32;
                self.update_counters();
                let _ = reply.send(n);
            }
            QueueCmd::Delete {
                if_unused,
                if_empty,
                reply,
            } => {
                let result = self.check_delete(if_unused, if_empty);
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.shut_down();
                }
            }
            QueueCmd::Touch => self.last_used = Instant::now(),
            QueueCmd::Snapshot(reply) => {
                let delivered: Vec<u64> = self
                    .unacked
                    .keys()
                    .copied()
                    .chain(
                        self.delayed
                            .values()
                            .filter(|m| m.redelivered)
                            .map(|m| m.seq),
                    )
                    .collect();
                self.store.snapshot_delivered(&delivered);
                let _ = reply.send(());
                // The broker is stopping: the task ends, and with it the queue's hold on the
                // store (an embedded broker's data directory can be opened again).
                self.stopped = true;
            }
            QueueCmd::Wake => {}
            QueueCmd::Policy(args) => {
                // As RabbitMQ: new limits apply at once (a shorter max-length drops or
                // dead-letters the oldest messages now); a new TTL applies to messages
                // published from now on.
                self.args = args;
                self.trim();
            }
        }
    }

    fn publish(
        &mut self,
        message: Arc<Message>,
        confirm: Option<super::ConfirmToken>,
        handoff: Option<Handoff>,
    ) {
        // Confirmed by its channel already: never refused (see `ConfirmToken::early`).
        let early = confirm.as_ref().is_some_and(super::ConfirmToken::is_early);
        let confirm = confirm.filter(|t| !t.is_early());
        // An id this publish made the cache remember: forgotten if the message is refused.
        let mut new_id = None;
        if let Some(cache) = &mut self.dedup {
            let props = message.properties();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let checked = cache.check(props.headers().as_ref(), now);
            self.handle
                .counters()
                .deduplicated(cache.duplicates(), cache.len() as u64);
            if let crate::dedup::Check::First(id) = checked {
                new_id = Some(id);
            }
            if checked == crate::dedup::Check::Duplicate {
                // Dropped, and confirmed: its first copy was taken. A dead letter handed
                // over settles its stored copy at the source as a refused one would.
                if let Some(token) = confirm {
                    token.resolve(true);
                }
                if let Some(h) = handoff {
                    if let Some(ack) = self.store.refuse_moved((h.disk_id, h.seq)) {
                        h.from
                            .send_internal(QueueCmd::TakenOver { seq: h.seq, ack });
                    }
                }
                if let Some(host) = self.host.upgrade() {
                    host.deduplicated();
                }
                return;
            }
        }
        let size = message.body_len() as u64;
        let over =
            |store: &dyn QueueStore, extra_len: usize, extra_bytes: u64, args: &QueueArgs| {
                args.max_length
                    .is_some_and(|m| (store.len() + extra_len) as u64 > m)
                    || args
                        .max_length_bytes
                        .is_some_and(|m| store.bytes() + extra_bytes > m)
            };
        let seq = self.next_seq;
        self.next_seq += 1;
        let ttl = self.args().message_ttl.map(|t| t.as_millis() as u64);
        let expires_at = match (ttl, message.expiration_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|ms| Instant::now() + Duration::from_millis(ms));
        let msg = StoredMessage::new(seq, message, expires_at);
        if self.args().overflow != Overflow::DropHead
            && !early
            && over(&*self.store, 1, size, self.args())
        {
            // Refused: the publisher gets basic.nack in confirm mode (and may retry).
            if let Some(token) = confirm {
                token.resolve(false);
            }
            if let (Some(cache), Some(id)) = (&mut self.dedup, new_id) {
                cache.forget(id);
            }
            // A dead letter handed over to this queue is gone (or dead-lettered on from here):
            // its stored copy at the source must not come back after a restart.
            if let Some(h) = handoff {
                if let Some(ack) = self.store.refuse_moved((h.disk_id, h.seq)) {
                    h.from
                        .send_internal(QueueCmd::TakenOver { seq: h.seq, ack });
                }
            }
            if self.args().overflow == Overflow::RejectPublishDlx {
                self.dead_letter(msg, Reason::Maxlen);
            }
            return;
        }
        let written = match handoff {
            Some(h) => {
                let (written, ack) = self.store.push_moved(msg, (h.disk_id, h.seq));
                if let Some(ack) = ack {
                    h.from
                        .send_internal(QueueCmd::TakenOver { seq: h.seq, ack });
                }
                written
            }
            None => self.store.push(msg),
        };
        self.round.published += 1;
        if let Some(token) = confirm {
            if written {
                self.confirms.push(token);
                self.confirm_seqs.push(seq);
                if let Some(id) = new_id {
                    self.round_dedup.push((seq, id));
                }
            } else {
                token.resolve(true);
            }
        }
        self.trim();
    }

    /// Delivered messages come back: counted, maybe dead-lettered past the delivery limit,
    /// maybe delayed, else requeued in their place.
    fn returned(&mut self, ids: Vec<u64>, kind: ReturnKind) {
        let now = Instant::now();
        for id in ids {
            let Some(u) = self.unacked.remove(&id) else {
                continue;
            };
            self.release(u.consumer);
            let mut msg = u.msg;
            if kind == ReturnKind::Unsent {
                msg.redelivered = u.was_redelivered;
                self.store.requeue(msg);
                continue;
            }
            msg.delivery_count += 1;
            if self
                .args()
                .delivery_limit
                .is_some_and(|limit| u64::from(msg.delivery_count) > limit)
            {
                self.dead_letter(msg, Reason::DeliveryLimit);
                continue;
            }
            if self.args().counts_deliveries() {
                let count = AMQPValue::LongLongInt(i64::from(msg.delivery_count));
                msg.message = Arc::new(msg.message.with_header("x-delivery-count", count));
                self.store.rewrite(&msg);
            }
            match self
                .args()
                .retry_delay(kind == ReturnKind::Failed, msg.delivery_count)
            {
                Some(delay) => {
                    self.delayed.insert((now + delay, msg.seq), msg);
                }
                None => self.store.requeue(msg),
            }
        }
        self.trim();
    }

    /// Drop-head: while over a length limit, the oldest messages are dead-lettered (`maxlen`).
    fn trim(&mut self) {
        if self.args().overflow != Overflow::DropHead {
            return;
        }
        while self
            .args()
            .max_length
            .is_some_and(|m| self.store.len() as u64 > m)
            || self
                .args()
                .max_length_bytes
                .is_some_and(|m| self.store.bytes() > m)
        {
            match self.store.pop() {
                Some(head) => self.dead_letter(head, Reason::Maxlen),
                None => break,
            }
        }
    }

    /// Republishes a message to the queue's dead-letter exchange, or drops it if there is none
    /// (or the exchange is missing, or every target would close a cycle).
    fn dead_letter(&mut self, msg: StoredMessage, reason: Reason) {
        if let Some(host) = self.host.upgrade() {
            host.dead_lettered(reason, self.args().dead_letter_exchange.is_some());
        }
        let (Some(dlx), Some(host)) = (
            self.args().dead_letter_exchange.clone(),
            self.host.upgrade(),
        ) else {
            self.store.settle(&msg);
            return;
        };
        let name = self.handle.name().clone();
        let dl = dead_lettered(
            &msg.message,
            &name,
            reason,
            &dlx,
            self.args().dead_letter_routing_key.as_deref(),
            unix_now(),
        );
        let mut targets = Vec::new();
        let props = dl.properties();
        let routed = host.route_dead_letter(
            &dlx,
            &crate::exchange::Envelope {
                routing_key: dl.routing_key(),
                headers: props.headers().as_ref(),
                raw_properties: dl.raw_properties(),
            },
            &mut targets,
        );
        if let Some(log) = &dl.death {
            targets.retain(|q| !log.is_cycle(q.name()));
        }
        let from = self
            .handle
            .spec()
            .disk_id
            .filter(|_| msg.message.is_persistent());
        let dl = Arc::new(dl);
        let mut handed_off = false;
        if routed.is_ok() {
            for q in &targets {
                // The first durable target takes over the stored copy atomically (see
                // `Handoff`); any other writes a copy of its own.
                let handoff = from
                    .filter(|_| !handed_off && q.spec().disk_id.is_some())
                    .map(|disk_id| Handoff {
                        from: self.handle.clone(),
                        disk_id,
                        seq: msg.seq,
                    });
                handed_off |= handoff.is_some();
                q.send_internal(QueueCmd::Publish {
                    message: dl.clone(),
                    confirm: None,
                    handoff,
                });
            }
        }
        if !handed_off {
            self.store.settle(&msg);
        }
    }

    fn check_delete(&self, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        let name = self.handle.queue_ref();
        if if_unused && !self.consumers.is_empty() {
            return Err(AmqpError::precondition(format_args!("{name} in use")));
        }
        if if_empty && !self.store.is_empty() {
            return Err(AmqpError::precondition(format_args!("{name} not empty")));
        }
        Ok(self.store.len() as u32)
    }

    /// Stops the queue: consumers are told (basic.cancel), messages are dropped.
    fn shut_down(&mut self) {
        for a in self.consumers.drain(..) {
            let _ = a.consumer.conn.send(ConnEvent::ConsumerCancelled {
                channel: a.consumer.channel,
                consumer_tag: a.consumer.tag.clone(),
            });
        }
        self.store.destroy();
        self.unacked.clear();
        self.delayed.clear();
        self.deleted = true;
    }

    fn add_consumer(&mut self, consumer: Consumer) -> AmqpResult<()> {
        let name = self.handle.queue_ref();
        if self.consumers.iter().any(|a| a.consumer.exclusive)
            || (consumer.exclusive && !self.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format_args!(
                "{name} in exclusive use"
            )));
        }
        let id = self.next_consumer_id;
        self.next_consumer_id += 1;
        self.consumers.push(Attached {
            id,
            consumer,
            unacked: 0,
        });
        self.had_consumer = true;
        self.mark_single_active();
        Ok(())
    }

    /// With `x-single-active-consumer`, the first consumer is the active one: flags it for the
    /// management listing.
    fn mark_single_active(&self) {
        if let Some(first) = self.consumers.first() {
            first.consumer.active.store(true, Ordering::Relaxed);
        }
    }

    fn release(&mut self, consumer: Option<u64>) {
        if let Some(id) = consumer {
            if let Some(a) = self.consumers.iter_mut().find(|a| a.id == id) {
                a.unacked = a.unacked.saturating_sub(1);
            }
        }
    }

    fn maybe_auto_delete(&mut self) {
        if self.handle.spec().auto_delete && self.had_consumer && self.consumers.is_empty() {
            self.shut_down();
            if let Some(host) = self.host.upgrade() {
                host.queue_gone(&self.handle);
            }
        }
    }

    fn delivery(&self, msg: &StoredMessage) -> Delivery {
        Delivery {
            queue: self.handle.clone(),
            msg_id: msg.seq,
            message: msg.message.clone(),
            redelivered: msg.redelivered,
        }
    }

    /// Pushes ready messages to consumers within each consumer's prefetch, its channel's
    /// prefetch and its delivery window: highest consumer priority first, round-robin among
    /// equals, only the first consumer with `x-single-active-consumer`. Each consumer gets its
    /// messages of this round in one event.
    fn deliver(&mut self) {
        if self.consumers.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut outbox: Vec<Vec<Delivered>> = Vec::new();
        while !self.store.is_empty() {
            self.expire_head(now);
            let Some(idx) = self.next_ready_consumer() else {
                break;
            };
            let Some(mut msg) = self.store.pop() else {
                self.unreserve(idx);
                break;
            };
            if outbox.len() < self.consumers.len() {
                outbox.resize_with(self.consumers.len(), Vec::new);
            }
            let a = &mut self.consumers[idx];
            a.consumer.in_flight.fetch_add(1, Ordering::Relaxed);
            self.round.delivered += 1;
            self.round.redelivered += u64::from(msg.redelivered);
            outbox[idx].push(Delivered {
                msg_id: msg.seq,
                message: msg.message.clone(),
                redelivered: msg.redelivered,
            });
            if a.consumer.no_ack {
                self.store.settle(&msg);
            } else {
                a.unacked += 1;
                let id = a.id;
                self.store.delivered(&msg);
                let was_redelivered = msg.redelivered;
                msg.redelivered = true;
                self.unacked.insert(
                    msg.seq,
                    Unacked {
                        msg,
                        consumer: Some(id),
                        was_redelivered,
                    },
                );
            }
            self.cursor = idx + 1;
        }
        if outbox.iter().any(|m| !m.is_empty()) {
            self.last_progress = now;
        }
        let mut gone = Vec::new();
        for (idx, messages) in outbox.into_iter().enumerate() {
            if messages.is_empty() {
                continue;
            }
            let c = &self.consumers[idx].consumer;
            let ids: Vec<u64> = if c.no_ack {
                Vec::new()
            } else {
                messages.iter().map(|m| m.msg_id).collect()
            };
            let event = ConnEvent::Deliver {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
                queue: self.handle.clone(),
                messages,
            };
            if let Err(mpsc::error::SendError(ConnEvent::Deliver { messages, .. })) =
                c.conn.send(event)
            {
                // The connection is gone; its channel cleanup would cancel the consumer.
                if !c.no_ack {
                    c.channel_qos.release(ids.len() as u32);
                }
                for id in ids {
                    if let Some(u) = self.unacked.remove(&id) {
                        let mut m = u.msg;
                        m.redelivered = u.was_redelivered;
                        self.store.requeue(m);
                    }
                }
                if c.no_ack {
                    for d in messages {
                        self.store.requeue(StoredMessage {
                            seq: d.msg_id,
                            message: d.message,
                            redelivered: d.redelivered,
                            delivery_count: 0,
                            expires_at: None,
                        });
                    }
                }
                gone.push(self.consumers[idx].id);
            }
        }
        if !gone.is_empty() {
            self.consumers.retain(|a| !gone.contains(&a.id));
            self.mark_single_active();
        }
    }

    fn unreserve(&self, idx: usize) {
        let c = &self.consumers[idx].consumer;
        if !c.no_ack {
            c.channel_qos.release(1);
        }
    }

    fn can_take(a: &Attached) -> bool {
        let c = &a.consumer;
        c.in_flight.load(Ordering::Relaxed) < DELIVERY_WINDOW
            && (c.no_ack
                || ((c.prefetch == 0 || a.unacked < c.prefetch) && c.channel_qos.has_room()))
    }

    /// Picks the consumer for the next message and reserves its channel prefetch.
    fn next_ready_consumer(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        let pick = if self.args().single_active_consumer {
            Self::can_take(&self.consumers[0]).then_some(0)
        } else {
            let best = self
                .consumers
                .iter()
                .filter(|a| Self::can_take(a))
                .map(|a| a.consumer.priority)
                .max()?;
            (0..n).map(|i| (self.cursor + i) % n).find(|&idx| {
                self.consumers[idx].consumer.priority == best
                    && Self::can_take(&self.consumers[idx])
            })
        }?;
        let c = &self.consumers[pick].consumer;
        (c.no_ack || c.channel_qos.try_reserve()).then_some(pick)
    }
}
