//! Stream queues (`x-queue-type: stream`), as RabbitMQ's over AMQP 0-9-1: an append-only log
//! whose messages stay after they are read; every consumer reads on its own from an offset
//! (`x-stream-offset`), with its prefetch as credit that acks give back.
//!
//! A stream has an owner task of its own, behind the same [`QueueHandle`] and commands as a
//! queue, so the vhost, routing and channels treat it as any queue. The channel refuses what
//! makes no sense on a stream before it gets here (basic.get, purge, nack and reject, consumers
//! without a prefetch or without acks), with RabbitMQ's reply codes and texts.

pub mod log;
pub mod partitions;

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use amq_protocol::types::AMQPValue;
use tokio::sync::mpsc;

use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::queue::counters::RoundCounts;
use crate::queue::mailbox;
use crate::queue::{
    ConfirmToken, ConnEvent, Consumer, Delivered, QueueCmd, QueueHandle, QueueRef, QueueSpec,
    DELIVERY_WINDOW,
};
use log::{ReadMessage, Reader, StreamLog};

/// Commands a stream's mailbox holds before publishers wait.
const MAILBOX: usize = 256;
/// Published messages taken in per round (whole commands).
const PUBLISH_MESSAGES: usize = 4096;
/// A chunk holds at most this many bytes of messages (a round's publishes may make several).
/// Each consumer keeps the chunk it is in: small chunks keep replaying consumers lean.
const CHUNK_BYTES: usize = 256 << 10;

/// Where a consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first message still in the stream.
    First,
    /// The first message of the last chunk.
    Last,
    /// Only messages published from now on (the default).
    Next,
    /// An absolute offset (clamped to the stream).
    Offset(u64),
    /// The first chunk written at or after this Unix time, in milliseconds.
    Timestamp(i64),
}

/// Parses a RabbitMQ interval (`"7D"`, `"1h"`, `"30m"`): a number and one of `Y M D h m s`.
/// Returns milliseconds.
pub fn parse_interval(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        'Y' => 365 * 24 * 3600,
        'M' => 30 * 24 * 3600,
        'D' => 24 * 3600,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

impl OffsetSpec {
    /// The `x-stream-offset` argument of a basic.consume (absent: `next`). An unknown value is
    /// 406 PRECONDITION_FAILED (RabbitMQ 3.10 crashes the channel on it: 541).
    pub fn parse(v: Option<&AMQPValue>, tag: &str) -> AmqpResult<OffsetSpec> {
        let bad = || {
            AmqpError::precondition(format_args!(
                "invalid arg 'x-stream-offset' for consumer '{tag}': {v:?} is not first, last, \
                 next, an offset, a timestamp or an interval such as 1h"
            ))
        };
        let Some(v) = v else {
            return Ok(OffsetSpec::Next);
        };
        if let AMQPValue::Timestamp(secs) = v {
            return Ok(OffsetSpec::Timestamp((*secs as i64).saturating_mul(1000)));
        }
        if let Some(n) = crate::queue::args::as_int(v) {
            return Ok(match u64::try_from(n) {
                Ok(n) => OffsetSpec::Offset(n),
                Err(_) => OffsetSpec::First,
            });
        }
        let s = crate::queue::args::as_str(v).ok_or_else(bad)?;
        Ok(match s.as_str() {
            "first" => OffsetSpec::First,
            "last" => OffsetSpec::Last,
            "next" => OffsetSpec::Next,
            other => {
                let ms = parse_interval(other).ok_or_else(bad)?;
                OffsetSpec::Timestamp(log::now_ms().saturating_sub(ms as i64))
            }
        })
    }
}

/// A consumer's `x-stream-filter` (a string or an array of strings) and
/// `x-stream-match-unfiltered` (a boolean), as RabbitMQ 3.13 reads them; `None` without a
/// filter.
pub fn parse_filter(
    args: &amq_protocol::types::FieldTable,
    tag: &str,
) -> AmqpResult<Option<log::StreamFilter>> {
    let bad = |arg: &str, what: &str| {
        AmqpError::precondition(format_args!(
            "invalid arg '{arg}' for consumer '{tag}': {what} expected"
        ))
    };
    let Some(v) = args.inner().get("x-stream-filter") else {
        return Ok(None);
    };
    let values: Vec<Vec<u8>> = match v {
        AMQPValue::FieldArray(a) => a
            .as_slice()
            .iter()
            .map(|v| crate::queue::args::as_str(v).map(String::into_bytes))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("x-stream-filter", "a string or an array of strings"))?,
        v => vec![crate::queue::args::as_str(v)
            .ok_or_else(|| bad("x-stream-filter", "a string or an array of strings"))?
            .into_bytes()],
    };
    let match_unfiltered = match args.inner().get("x-stream-match-unfiltered") {
        None => false,
        Some(AMQPValue::Boolean(b)) => *b,
        Some(_) => return Err(bad("x-stream-match-unfiltered", "a boolean")),
    };
    Ok(Some(log::StreamFilter {
        values,
        match_unfiltered,
    }))
}

/// The queue arguments RabbitMQ refuses on a stream.
pub const UNSUPPORTED_ARGS: &[&str] = &[
    "x-message-ttl",
    "x-max-length",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-overflow",
    "x-expires",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-queue-mode",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
    "x-message-deduplication",
];

/// Checks a stream's declaration as RabbitMQ does: durable, not exclusive, not auto-delete,
/// none of the arguments that make no sense on a log.
pub fn check_declare(
    queue: &QueueRef,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: &amq_protocol::types::FieldTable,
) -> AmqpResult<()> {
    let property = |p: &str| {
        Err(AmqpError::precondition(format_args!(
            "invalid property '{p}' for {queue}"
        )))
    };
    if auto_delete {
        return property("auto-delete");
    }
    if exclusive {
        return property("exclusive-owner");
    }
    if !durable {
        return property("non-durable");
    }
    for k in arguments.inner().keys() {
        if UNSUPPORTED_ARGS.contains(&k.as_str()) {
            return Err(AmqpError::precondition(format_args!(
                "invalid arg '{k}' for {queue} of queue type rabbit_stream_queue"
            )));
        }
    }
    Ok(())
}

/// How long acked offsets may wait before they are written to the stream's offsets file.
const SAVE_OFFSETS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// One consumer of the stream.
struct StreamConsumer {
    id: u64,
    /// The name its acked offset is tracked under.
    tracking: Option<Arc<str>>,
    consumer: Consumer,
    reader: Reader,
    /// Deliveries not yet acked (its prefetch is the credit).
    unacked: u32,
    /// It gets messages: always, unless it is a member of a consumer group that another
    /// member reads this stream for.
    active: bool,
}

struct StreamActor {
    handle: QueueHandle,
    log: StreamLog,
    consumers: Vec<StreamConsumer>,
    next_consumer_id: u64,
    /// Delivery ids (the `msg_id` acks name) of unacked deliveries: their consumer and offset.
    deliveries: HashMap<u64, (u64, u64)>,
    /// Server-side offset tracking: the offset after the last one each named consumer acked.
    offsets: HashMap<Arc<str>, u64>,
    /// `offsets` changed since it was last written.
    offsets_dirty: bool,
    offsets_saved: std::time::Instant,
    next_delivery: u64,
    /// This round's publishes, appended at the end of the round.
    appends: Vec<Arc<Message>>,
    confirms: Vec<ConfirmToken>,
    syncer: mpsc::UnboundedSender<(Vec<Arc<File>>, Vec<ConfirmToken>)>,
    round: RoundCounts,
    deleted: bool,
    stopped: bool,
}

/// Starts the owner task of a stream over its log.
pub(crate) fn spawn(
    spec: QueueSpec,
    policy: crate::queue::QueuePolicy,
    log: StreamLog,
) -> QueueHandle {
    let (tx, rx) = mailbox::bounded(MAILBOX);
    let (itx, irx) = mailbox::unbounded();
    let handle = QueueHandle::new(spec, policy, tx, itx);
    let (syncer, sync_rx) = mpsc::unbounded_channel();
    let offsets_path = log.dir().join("offsets.json");
    tokio::spawn(sync_confirms(sync_rx));
    let mut actor = StreamActor {
        handle: handle.clone(),
        log,
        consumers: Vec::new(),
        next_consumer_id: 1,
        deliveries: HashMap::new(),
        offsets: load_offsets(&offsets_path),
        offsets_dirty: false,
        offsets_saved: std::time::Instant::now(),
        next_delivery: 1,
        appends: Vec::new(),
        confirms: Vec::new(),
        syncer,
        round: RoundCounts::default(),
        deleted: false,
        stopped: false,
    };
    actor.update_counters();
    tokio::spawn(actor.run(rx, irx));
    handle
}

/// Group commit for one stream: syncs the files of every round waiting, then confirms them
/// (a confirm means the message is on disk, as for durable queues).
async fn sync_confirms(mut rx: mpsc::UnboundedReceiver<(Vec<Arc<File>>, Vec<ConfirmToken>)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut files: Vec<Arc<File>> = Vec::new();
        for f in batch.iter().flat_map(|(fs, _)| fs) {
            if !files.iter().any(|g| Arc::ptr_eq(g, f)) {
                files.push(f.clone());
            }
        }
        let ok = tokio::task::spawn_blocking(move || {
            files.iter().all(|f| match f.sync_data() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot sync a stream segment");
                    false
                }
            })
        })
        .await
        .unwrap_or(false);
        for (_, tokens) in batch {
            tokens.into_iter().for_each(|t| t.resolve(ok));
        }
    }
}

impl StreamActor {
    async fn run(
        mut self,
        mut rx: mailbox::Receiver<QueueCmd>,
        mut internal: mailbox::Receiver<QueueCmd>,
    ) {
        let mut batch = Vec::new();
        let mut from_queues = Vec::new();
        loop {
            let save_at = self
                .offsets_dirty
                .then(|| self.offsets_saved + SAVE_OFFSETS_EVERY);
            tokio::select! {
                biased;
                _ = internal.recv_many(&mut from_queues, 256) => {}
                _ = tokio::time::sleep_until(save_at.unwrap_or_else(std::time::Instant::now).into()), if save_at.is_some() => {}
                n = rx.recv_many(&mut batch, 1) => {
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
            }
            let mut cmds = from_queues.drain(..).chain(batch.drain(..));
            while let Some(cmd) = cmds.next() {
                self.handle(cmd);
                if self.deleted {
                    cmds.for_each(QueueCmd::queue_deleted);
                    break;
                }
            }
            if self.deleted {
                for t in self.confirms.drain(..) {
                    t.resolve(true);
                }
                QueueCmd::drain_deleted(&mut rx, &mut internal);
                return;
            }
            self.append();
            self.deliver();
            self.update_counters();
            if self.offsets_dirty && self.offsets_saved.elapsed() >= SAVE_OFFSETS_EVERY {
                self.save_offsets();
            }
            if self.stopped {
                return;
            }
        }
    }

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish {
                message, confirm, ..
            } => {
                self.round.handled += 1;
                self.appends.push(message);
                self.confirms.extend(confirm);
            }
            QueueCmd::PublishMany(list) => {
                self.round.handled += list.len() as u64;
                for (message, confirm) in list {
                    self.appends.push(message);
                    self.confirms.extend(confirm);
                }
            }
            QueueCmd::Consume { consumer, reply } => {
                // A group's members share the group's offset; they start where it is when
                // they become active (see `rebalance`).
                let tracking = consumer.group.clone().or_else(|| consumer.tracking.clone());
                // No x-stream-offset: a named consumer resumes after what it acked last.
                let tracked = tracking
                    .as_ref()
                    .filter(|_| consumer.group.is_none())
                    .and_then(|n| self.offsets.get(n))
                    .copied();
                let spec = match (consumer.offset, tracked) {
                    (Some(spec), _) => spec,
                    (None, Some(n)) => OffsetSpec::Offset(n),
                    (None, None) => OffsetSpec::Next,
                };
                let start = match spec {
                    OffsetSpec::First => self.log.first_offset(),
                    OffsetSpec::Last => self.log.last_chunk(),
                    // Includes what this round appends (its publishes came before the consume).
                    OffsetSpec::Next => self.log.next_offset() + self.appends.len() as u64,
                    OffsetSpec::Offset(n) => n,
                    OffsetSpec::Timestamp(ms) => self.log.offset_at_time(ms),
                };
                let id = self.next_consumer_id;
                self.next_consumer_id += 1;
                let active = consumer.group.is_none();
                self.consumers.push(StreamConsumer {
                    id,
                    tracking,
                    reader: self.log.reader(start),
                    consumer,
                    unacked: 0,
                    active,
                });
                self.rebalance();
                let _ = reply.send(Ok(()));
            }
            QueueCmd::Cancel {
                conn_id,
                channel,
                tag,
                done,
            } => {
                self.consumers.retain(|c| {
                    !(c.consumer.conn_id == conn_id
                        && c.consumer.channel == channel
                        && c.consumer.tag == tag)
                });
                self.rebalance();
                if self.offsets_dirty {
                    self.save_offsets();
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            // Refused by the channel before it gets here; answered all the same.
            QueueCmd::Get { reply, .. } => {
                let _ = reply.send(None);
            }
            QueueCmd::Purge(reply) => {
                let _ = reply.send(0);
            }
            // Acks are credit, not removal (and move a named consumer's tracked offset).
            QueueCmd::Ack(ids) => {
                self.round.acked += ids.len() as u64;
                self.credit(ids, true);
            }
            // Deliveries returned by a closed channel only give the credit back.
            QueueCmd::Discard(ids) | QueueCmd::Return { ids, .. } => self.credit(ids, false),
            QueueCmd::Delete { reply, .. } => {
                let _ = reply.send(Ok(0));
                for c in self.consumers.drain(..) {
                    let _ = c.consumer.conn.send(ConnEvent::ConsumerCancelled {
                        channel: c.consumer.channel,
                        consumer_tag: c.consumer.tag.clone(),
                    });
                }
                self.log.destroy();
                self.deleted = true;
            }
            QueueCmd::Snapshot(reply) => {
                self.append();
                self.save_offsets();
                for f in self.log.to_sync() {
                    let _ = f.sync_data();
                }
                let _ = reply.send(());
                self.stopped = true;
            }
            QueueCmd::TakenOver { .. } | QueueCmd::Flushed { .. } => {}
            QueueCmd::Touch | QueueCmd::Wake => {}
            QueueCmd::Policy(args) => {
                // Retention (max-length-bytes, max-age, segment size) follows its policy.
                self.log.set_retention(crate::queue::kind::retention(&args));
            }
        }
    }

    /// Acked (or returned) deliveries give their consumers credit back; acked ones move a
    /// named consumer's tracked offset.
    fn credit(&mut self, ids: Vec<u64>, acked: bool) {
        for id in ids {
            if let Some((cid, offset)) = self.deliveries.remove(&id) {
                if let Some(c) = self.consumers.iter_mut().find(|c| c.id == cid) {
                    c.unacked = c.unacked.saturating_sub(1);
                    if let (true, Some(name)) = (acked, &c.tracking) {
                        let at = self.offsets.entry(name.clone()).or_insert(0);
                        if offset + 1 > *at {
                            *at = offset + 1;
                            self.offsets_dirty = true;
                        }
                    }
                }
            }
        }
    }

    /// Writes the tracked offsets (a new file renamed over the old one). Not synced: after a
    /// crash a consumer may resume a little early, never past what it acked.
    fn save_offsets(&mut self) {
        self.offsets_dirty = false;
        self.offsets_saved = std::time::Instant::now();
        let path = self.log.dir().join("offsets.json");
        let map: std::collections::BTreeMap<&str, u64> =
            self.offsets.iter().map(|(k, v)| (&**k, *v)).collect();
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&map)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(queue = %self.handle.queue_ref(), error = %e, "cannot save a stream's consumer offsets");
        }
    }

    /// Appends this round's publishes as chunks of at most [`CHUNK_BYTES`], then hands their
    /// confirms to the syncer. A write that fails nacks the round's confirms.
    fn append(&mut self) {
        if self.appends.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut self.appends);
        let mut ok = true;
        let mut start = 0;
        while start < messages.len() && ok {
            let mut end = start;
            let mut bytes = 0;
            while end < messages.len() && (end == start || bytes < CHUNK_BYTES) {
                bytes += messages[end].body_len() + messages[end].raw_properties().len();
                end += 1;
            }
            if let Err(e) = self.log.append(&messages[start..end]) {
                tracing::error!(queue = %self.handle.queue_ref(), error = %e, "cannot append to a stream");
                ok = false;
            }
            start = end;
        }
        self.round.published += start as u64;
        let tokens = std::mem::take(&mut self.confirms);
        if !ok {
            tokens.into_iter().for_each(|t| t.resolve(false));
            return;
        }
        if !tokens.is_empty() {
            let files = self.log.to_sync();
            if let Err(mpsc::error::SendError((_, tokens))) = self.syncer.send((files, tokens)) {
                tokens.into_iter().for_each(|t| t.resolve(false));
            }
        }
    }

    /// Sends each consumer what its credit, its channel and its delivery window allow, read
    /// from the log. Each delivery carries its offset in the `x-stream-offset` header.
    fn deliver(&mut self) {
        let mut read: Vec<ReadMessage> = Vec::new();
        let mut gone = Vec::new();
        for c in &mut self.consumers {
            if !c.active {
                continue;
            }
            let k = &c.consumer;
            let credit = k.prefetch.saturating_sub(c.unacked);
            let window = DELIVERY_WINDOW.saturating_sub(k.in_flight.load(Ordering::Relaxed));
            let max = credit.min(window) as usize;
            if max == 0 || c.reader.next_offset() >= self.log.next_offset() {
                continue;
            }
            read.clear();
            if c.reader
                .read(&self.log, max, k.stream_filter.as_ref(), &mut read)
            {
                // Stopped partway through a long filtered scan: go on next round.
                self.handle.wake();
            }
            if read.is_empty() {
                continue;
            }
            let mut messages = Vec::with_capacity(read.len());
            for r in read.drain(..) {
                if !k.channel_qos.try_reserve() {
                    // The channel's global prefetch is full: this message and the ones read
                    // after it go out once acks make room (the reader goes back to it).
                    c.reader.seek(r.offset);
                    break;
                }
                let id = self.next_delivery;
                self.next_delivery += 1;
                self.deliveries.insert(id, (c.id, r.offset));
                let message = r
                    .message
                    .with_header("x-stream-offset", AMQPValue::LongLongInt(r.offset as i64));
                messages.push(Delivered {
                    msg_id: id,
                    message: Arc::new(message),
                    redelivered: false,
                });
            }
            let n = messages.len() as u32;
            if n == 0 {
                continue;
            }
            c.unacked += n;
            self.round.delivered += u64::from(n);
            k.in_flight.fetch_add(n, Ordering::Relaxed);
            let event = ConnEvent::Deliver {
                channel: k.channel,
                consumer_tag: k.tag.clone(),
                queue: self.handle.clone(),
                messages,
            };
            if k.conn.send(event).is_err() {
                gone.push(c.id);
            }
        }
        if !gone.is_empty() {
            self.consumers.retain(|c| !gone.contains(&c.id));
            self.deliveries.retain(|_, (cid, _)| !gone.contains(cid));
            if self.rebalance() {
                self.handle.wake();
            }
        }
    }

    /// Makes one member of each consumer group active, and the others wait: with the members
    /// in (connection, channel, consumer tag) order, member `p % members` reads partition `p`
    /// (`x-stream-partition-order`; 0 for a stream on its own). Members that consume every
    /// partition of a partitioned stream thus share its partitions evenly, each partition
    /// read by one member. A member that becomes active starts at the group's offset: after
    /// the last message any member acked, or, before any ack, where the group's first active
    /// member started. Returns whether any member became active.
    fn rebalance(&mut self) -> bool {
        let partition = self.handle.spec().args.stream_partition;
        let mut groups: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for (i, c) in self.consumers.iter().enumerate() {
            if let Some(g) = &c.consumer.group {
                groups.entry(g.clone()).or_default().push(i);
            }
        }
        let mut woke = false;
        for (group, mut members) in groups {
            let order = |i: &usize| {
                let k = &self.consumers[*i].consumer;
                (k.conn_id, k.channel, k.tag.clone())
            };
            members.sort_by_key(order);
            let chosen = members[(partition % members.len() as u64) as usize];
            for i in members {
                let c = &mut self.consumers[i];
                let active = i == chosen;
                if active && !c.active {
                    let at = match self.offsets.get(&group) {
                        Some(at) => *at,
                        None => {
                            let at = c.reader.next_offset();
                            self.offsets.insert(group.clone(), at);
                            self.offsets_dirty = true;
                            at
                        }
                    };
                    c.reader = self.log.reader(at);
                    woke = true;
                }
                c.active = active;
                c.consumer.active.store(active, Ordering::Relaxed);
            }
        }
        woke
    }

    fn update_counters(&mut self) {
        let c = self.handle.counters();
        c.set_consumers(self.consumers.len());
        let unacked: u64 = self.consumers.iter().map(|c| u64::from(c.unacked)).sum();
        c.update(
            self.log.len(),
            self.log.bytes(),
            unacked,
            0,
            self.log.len(),
            &mut self.round,
        );
    }
}

/// The tracked offsets saved in `path` (none if it does not exist or cannot be read).
fn load_offsets(path: &std::path::Path) -> HashMap<Arc<str>, u64> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashMap::new();
    };
    match serde_json::from_slice::<HashMap<String, u64>>(&bytes) {
        Ok(m) => m.into_iter().map(|(k, v)| (Arc::from(k), v)).collect(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "a stream's offsets file cannot be read; consumers start afresh");
            HashMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_offsets_parse_as_rabbitmq_reads_them() {
        assert_eq!(parse_interval("7D"), Some(7 * 24 * 3600 * 1000));
        assert_eq!(parse_interval("30m"), Some(30 * 60 * 1000));
        assert_eq!(parse_interval("1Y"), Some(365 * 24 * 3600 * 1000));
        assert_eq!(parse_interval("h"), None);
        assert_eq!(parse_interval("10x"), None);
        let p = |v: AMQPValue| OffsetSpec::parse(Some(&v), "t");
        assert_eq!(
            p(AMQPValue::LongString("first".into())).unwrap(),
            OffsetSpec::First
        );
        assert_eq!(p(AMQPValue::LongLongInt(5)).unwrap(), OffsetSpec::Offset(5));
        assert_eq!(p(AMQPValue::LongLongInt(-1)).unwrap(), OffsetSpec::First);
        assert_eq!(
            p(AMQPValue::Timestamp(10)).unwrap(),
            OffsetSpec::Timestamp(10_000)
        );
        assert!(matches!(
            p(AMQPValue::LongString("1h".into())).unwrap(),
            OffsetSpec::Timestamp(_)
        ));
        assert_eq!(
            p(AMQPValue::LongString("bogus".into()))
                .unwrap_err()
                .code
                .code(),
            406
        );
        assert_eq!(OffsetSpec::parse(None, "t").unwrap(), OffsetSpec::Next);
    }
}
