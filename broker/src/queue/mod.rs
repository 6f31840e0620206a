//! Queues. Each queue is owned by one task (`actor`), which alone holds its messages and
//! consumers; everything else talks to it through its mailbox, so no lock guards a queue.

mod actor;
pub mod args;
pub mod counters;
pub mod dead_letter;
pub mod kind;
pub(crate) mod mailbox;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use tokio::sync::{mpsc, oneshot};

use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;

pub(crate) use actor::spawn;

/// What a queue may ask of the virtual host that holds it, and nothing more: the queue knows
/// nothing of the registry's maps or locks.
pub trait QueueHost: Send + Sync {
    /// The queue deleted itself (auto-delete, `x-expires`): take it out of the registry and
    /// its bindings.
    fn queue_gone(&self, queue: &QueueHandle);
    /// Routes a message the broker republishes (a dead letter) from `exchange`: appends the
    /// queues it goes to. Internal exchanges are allowed; a missing exchange is an error
    /// (the caller drops the message).
    fn route_dead_letter(
        &self,
        exchange: &str,
        message: &crate::exchange::Envelope<'_>,
        out: &mut Vec<QueueHandle>,
    ) -> AmqpResult<()>;
    /// A message was dead-lettered (`to_exchange`: to the queue's dead-letter exchange; or
    /// dropped, the queue having none), for the broker's counters.
    fn dead_lettered(&self, reason: dead_letter::Reason, to_exchange: bool);
    /// A deduplicating queue dropped a duplicate, for the broker's counters.
    fn deduplicated(&self) {}
}

/// How many deliveries may sit between a queue and a connection that has not written them yet,
/// per consumer. Bounds the broker's memory when a client reads slowly and set no prefetch.
pub const DELIVERY_WINDOW: u32 = 1024;

/// A message handed out by a queue, to a consumer or to basic.get.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it came from, to route the ack back.
    pub queue: QueueHandle,
    /// The queue's id for this message (its sequence number).
    pub msg_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it was delivered before.
    pub redelivered: bool,
}

/// One message in a `ConnEvent::Deliver` batch.
#[derive(Debug)]
pub struct Delivered {
    /// The queue's id for it (acks name it).
    pub msg_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it was delivered before.
    pub redelivered: bool,
}

/// What a queue sends to a connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// Push messages to a consumer (one event per consumer per delivery round).
    Deliver {
        channel: u16,
        consumer_tag: Arc<str>,
        queue: QueueHandle,
        messages: Vec<Delivered>,
    },
    /// The queue went away: tell the client its consumer is cancelled.
    ConsumerCancelled {
        channel: u16,
        consumer_tag: Arc<str>,
    },
    /// A queue finished with a publish in confirm mode: stored (flushed) or refused.
    Confirm {
        channel: u16,
        epoch: u64,
        seq: u64,
        ok: bool,
    },
}

/// What a queue needs to confirm (or nack) one publish to its channel once it is safe. A
/// token dropped unresolved nacks: whatever dropped it (a task that died, a flusher that is
/// gone, a mailbox that closed) cannot vouch that the message is stored. A queue deleted
/// normally resolves the tokens it still holds positively (see [`QueueCmd::queue_deleted`]),
/// as RabbitMQ confirms the messages of a deleted queue.
#[derive(Debug)]
pub struct ConfirmToken {
    /// The publishing connection (None: an early token, see [`ConfirmToken::early`]).
    conn: Option<ConnSender>,
    /// Its channel.
    channel: u16,
    /// Tells apart successive channels that reuse one channel number.
    epoch: u64,
    /// The publish sequence number.
    seq: u64,
    /// Already reported.
    done: bool,
}

impl ConfirmToken {
    /// A token for publish `seq` on a channel.
    pub fn new(conn: ConnSender, channel: u16, epoch: u64, seq: u64) -> Self {
        ConfirmToken {
            conn: Some(conn),
            channel,
            epoch,
            seq,
            done: false,
        }
    }

    /// Marks a publish that its channel confirmed already, when it reached the queue's
    /// mailbox (a message the queue keeps in memory, which could not refuse it when the
    /// channel routed it). The queue must not refuse it now, should a policy have switched it
    /// to `x-overflow` reject-publish meanwhile: it keeps the message, over its limit. Costs
    /// nothing to carry (no connection handle); resolving it does nothing.
    pub fn early() -> Self {
        ConfirmToken {
            conn: None,
            channel: 0,
            epoch: 0,
            seq: 0,
            done: true,
        }
    }

    /// Whether it is an [`early`](Self::early) token.
    pub fn is_early(&self) -> bool {
        self.conn.is_none()
    }

    /// Reports the outcome to the connection.
    pub fn resolve(mut self, ok: bool) {
        self.send(ok);
    }

    fn send(&mut self, ok: bool) {
        if !self.done {
            self.done = true;
            if let Some(conn) = &self.conn {
                let _ = conn.send(ConnEvent::Confirm {
                    channel: self.channel,
                    epoch: self.epoch,
                    seq: self.seq,
                    ok,
                });
            }
        }
    }
}

impl Drop for ConfirmToken {
    fn drop(&mut self) {
        self.send(false);
    }
}

/// The sending side of a connection's event mailbox.
pub type ConnSender = mpsc::UnboundedSender<ConnEvent>;

/// A channel's prefetch state that is shared with every queue the channel consumes from
/// (`basic.qos` with global=true limits the whole channel).
#[derive(Debug, Default)]
pub struct ChannelQos {
    /// Unacked messages allowed on the channel; 0 is unlimited.
    pub limit: AtomicU32,
    /// Unacked messages on the channel now.
    pub unacked: AtomicU32,
}

impl ChannelQos {
    /// Takes one unit of the channel's prefetch, if there is room.
    pub fn try_reserve(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            self.unacked.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.unacked
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Whether the channel could take one more unacked message now.
    pub fn has_room(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        limit == 0 || self.unacked.load(Ordering::Relaxed) < limit
    }

    /// Gives back `n` units; returns whether the channel was full before (so queues must be
    /// woken to deliver again).
    pub fn release(&self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        let before = self
            .unacked
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        let limit = self.limit.load(Ordering::Relaxed);
        limit != 0 && before >= limit
    }
}

/// A consumer as a queue knows it.
#[derive(Debug)]
pub struct Consumer {
    /// The consumer tag.
    pub tag: Arc<str>,
    /// The connection's id (exclusive-use checks, cleanup).
    pub conn_id: u64,
    /// The channel number on that connection.
    pub channel: u16,
    /// Where deliveries go.
    pub conn: ConnSender,
    /// Messages count as acked once sent.
    pub no_ack: bool,
    /// No other consumer may use the queue while this one exists.
    pub exclusive: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u32,
    /// The channel-wide prefetch.
    pub channel_qos: Arc<ChannelQos>,
    /// Deliveries sent to the connection and not yet written to its socket.
    pub in_flight: Arc<AtomicU32>,
    /// `x-priority`: higher-priority consumers get messages first while they have capacity.
    pub priority: i64,
    /// Where a stream consumer starts (`x-stream-offset`; `None` if not given, and on other
    /// queues).
    pub offset: Option<crate::stream::OffsetSpec>,
    /// The name a stream tracks this consumer's acked offset under (`x-stream-consumer-name`,
    /// else a consumer tag the client chose).
    pub tracking: Option<Arc<str>>,
    /// A stream consumer's `x-stream-filter` (and `x-stream-match-unfiltered`).
    pub stream_filter: Option<crate::stream::log::StreamFilter>,
    /// A stream consumer's `x-consumer-group`: the group shares the stream's messages with
    /// one active member at a time.
    pub group: Option<Arc<str>>,
    /// Whether it is the one that gets messages (false: waiting behind a single active
    /// consumer or another member of its group). Shared with the management listing.
    pub active: Arc<std::sync::atomic::AtomicBool>,
}

/// How a delivered message came back to its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnKind {
    /// basic.nack or basic.reject with requeue=true: a failed delivery.
    Failed,
    /// Its channel closed (or basic.recover) before an ack: also counts as a failed delivery
    /// for `x-delivery-limit`, and is "returned" for delayed retry.
    Closed,
    /// It never reached the client (its consumer was cancelled meanwhile): not counted.
    Unsent,
}

/// Requests to a queue's owner.
#[derive(Debug)]
pub enum QueueCmd {
    /// Enqueue a routed message; `confirm` is resolved once it is safe (on disk) or refused.
    /// `handoff` names the stored copy of a dead-lettered message that this queue takes over:
    /// its own write and the settlement of that copy are one atomic batch.
    Publish {
        message: Arc<Message>,
        confirm: Option<ConfirmToken>,
        handoff: Option<Handoff>,
    },
    /// Stored message `seq` of this queue was taken over by another queue, which wrote ack
    /// record `ack` for it (see [`Handoff`]).
    TakenOver { seq: u64, ack: u64 },
    /// The flush that was to make a round's publishes durable finished (the oldest such round
    /// still waiting: flushes finish in order). If it failed, `refused` are the publishes it
    /// nacked: they leave the queue.
    Flushed { ok: bool, refused: Vec<u64> },
    /// Several publishes from one connection's read batch, in order.
    PublishMany(Vec<Publishing>),
    /// Add a consumer.
    Consume {
        consumer: Consumer,
        reply: oneshot::Sender<AmqpResult<()>>,
    },
    /// Remove a consumer (basic.cancel, channel closed).
    Cancel {
        conn_id: u64,
        channel: u16,
        tag: Arc<str>,
        /// Answered once the consumer is gone (basic.cancel-ok waits for it, as RabbitMQ's
        /// does, so a queue.declare after it counts one consumer less).
        done: Option<oneshot::Sender<()>>,
    },
    /// basic.get: one message, if any. The reply carries the count of messages left.
    Get {
        no_ack: bool,
        reply: oneshot::Sender<Option<(Delivery, u32)>>,
    },
    /// Settle delivered messages for good.
    Ack(Vec<u64>),
    /// Put delivered messages back.
    Return { ids: Vec<u64>, kind: ReturnKind },
    /// Rejected without requeue: dead-letter (reason `rejected`) or drop.
    Discard(Vec<u64>),
    /// The queue was used (redeclared): restarts its `x-expires` clock.
    Touch,
    /// Drop all ready messages; replies with how many.
    Purge(oneshot::Sender<u32>),
    /// Delete the queue, if the conditions hold; replies with the messages it held.
    Delete {
        if_unused: bool,
        if_empty: bool,
        reply: oneshot::Sender<AmqpResult<u32>>,
    },
    /// Clean shutdown: record delivered messages in the store, then reply.
    Snapshot(oneshot::Sender<()>),
    /// Capacity freed somewhere (a connection wrote, a channel acked): try to deliver again.
    Wake,
    /// A policy changed: the arguments to run with from now on.
    Policy(Arc<args::QueueArgs>),
}

impl QueueCmd {
    /// How much of a round's intake the command is: its published messages, else 1.
    pub(crate) fn publishes(&self) -> usize {
        (self.publishes_sent() as usize).max(1)
    }

    /// The published messages the command carries (counted as on their way to the queue).
    pub(crate) fn publishes_sent(&self) -> u64 {
        match self {
            QueueCmd::Publish { .. } => 1,
            QueueCmd::PublishMany(list) => list.len() as u64,
            _ => 0,
        }
    }

    /// A queue's owner is done with its mailboxes (the queue was deleted): closes them and
    /// settles what they still hold as [`queue_deleted`](Self::queue_deleted) says.
    pub(crate) fn drain_deleted(
        rx: &mut mailbox::Receiver<QueueCmd>,
        internal: &mut mailbox::Receiver<QueueCmd>,
    ) {
        rx.close();
        internal.close();
        while let Ok(cmd) = internal.try_recv() {
            cmd.queue_deleted();
        }
        while let Ok(cmd) = rx.try_recv() {
            cmd.queue_deleted();
        }
    }

    /// The queue was deleted before it handled this command: a publish in it went with the
    /// queue and is confirmed (RabbitMQ confirms the messages of a deleted queue).
    pub(crate) fn queue_deleted(self) {
        match self {
            QueueCmd::Publish {
                confirm: Some(token),
                ..
            } => token.resolve(true),
            QueueCmd::PublishMany(list) => {
                for token in list.into_iter().filter_map(|(_, t)| t) {
                    token.resolve(true);
                }
            }
            _ => {}
        }
    }
}

/// The stored copy of a dead-lettered message, handed from its queue to the durable queue that
/// takes it: the taker writes its own copy and the source's ack record in one batch, then
/// tells the source (`QueueCmd::TakenOver`), so the copy is in exactly one place on disk.
#[derive(Debug)]
pub struct Handoff {
    /// The queue the message died in.
    pub from: QueueHandle,
    /// Its id in the store.
    pub disk_id: u64,
    /// The message's sequence number there.
    pub seq: u64,
}

/// One publish in a `QueueCmd::PublishMany` batch, with its confirm if the queue owes one.
pub type Publishing = (Arc<Message>, Option<ConfirmToken>);

/// A queue as RabbitMQ's messages name it: `queue 'q' in vhost '/'`.
#[derive(Debug, Clone, Copy)]
pub struct QueueRef<'a> {
    pub vhost: &'a str,
    pub name: &'a str,
}

impl<'a> QueueRef<'a> {
    pub fn new(vhost: &'a str, name: &'a str) -> Self {
        QueueRef { vhost, name }
    }
}

impl std::fmt::Display for QueueRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "queue '{}' in vhost '{}'", self.name, self.vhost)
    }
}

/// A queue's declaration.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    /// Its virtual host's name.
    pub vhost: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// Survives restarts (definition, and its persistent messages).
    pub durable: bool,
    /// Owned by one connection: `Some(connection id)`.
    pub exclusive_owner: Option<u64>,
    /// The connection that declared it (None: recovered at start), for the per-connection
    /// queue limit.
    pub declared_by: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// `x-` arguments.
    pub arguments: FieldTable,
    /// Key prefix of its messages in the durable store (durable queues, when the broker has one).
    pub disk_id: Option<u64>,
    /// The client's `x-` arguments, validated: the queue's type and what no policy changes.
    /// The limits it runs with (its own and its policies') are [`QueueHandle::policy`]'s.
    pub args: args::QueueArgs,
}

/// The policies in force on a queue, and the arguments it runs with: its own `x-` arguments
/// merged with theirs (see [`crate::policy`]).
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub applied: crate::policy::Applied,
    pub args: Arc<args::QueueArgs>,
}

impl QueuePolicy {
    /// The arguments `applied` gives a queue declared with `spec`'s. Validated policies merge
    /// into valid arguments; should they not, the queue keeps its own (and says so).
    pub fn new(spec: &QueueSpec, applied: crate::policy::Applied) -> QueuePolicy {
        if applied.is_empty() {
            return QueuePolicy {
                applied,
                args: Arc::new(spec.args.clone()),
            };
        }
        let table = applied.queue_arguments(&spec.arguments);
        let queue = QueueRef::new(&spec.vhost, &spec.name);
        let args = match args::QueueArgs::parse(&table, &queue) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%queue, error = %e.text, "policy settings not applied");
                spec.args.clone()
            }
        };
        QueuePolicy {
            applied,
            args: Arc::new(args),
        }
    }
}

struct Shared {
    spec: QueueSpec,
    /// Its policies and the arguments it runs with (changed by the vhost, read by observers;
    /// the owner keeps its own copy, sent with [`QueueCmd::Policy`]).
    policy: std::sync::RwLock<Arc<QueuePolicy>>,
    /// Publishes may be refused (a length limit with `x-overflow` reject-publish): confirms
    /// wait for the queue. Once set it stays set, so that a publish never sees it go back.
    rejects: std::sync::atomic::AtomicBool,
    /// Commands from connections; bounded, so publishers feel back-pressure.
    mailbox: mailbox::Sender<QueueCmd>,
    /// Commands from other queues (dead letters), settlements and wake-ups, handled before the
    /// mailbox: never blocks a queue on another queue (dead-letter cycles cannot deadlock) and
    /// never leaves acks behind a publish backlog. Bounded by the messages in the broker.
    internal: mailbox::UnboundedSender<QueueCmd>,
    /// What the owner publishes about the queue (read without asking it).
    counters: counters::QueueCounters,
}

/// A cheap, clonable reference to a queue.
#[derive(Clone)]
pub struct QueueHandle(Arc<Shared>);

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueueHandle({})", self.0.spec.name)
    }
}

impl PartialEq for QueueHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for QueueHandle {}

impl std::hash::Hash for QueueHandle {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl QueueHandle {
    pub(crate) fn new(
        spec: QueueSpec,
        policy: QueuePolicy,
        mailbox: mailbox::Sender<QueueCmd>,
        internal: mailbox::UnboundedSender<QueueCmd>,
    ) -> Self {
        QueueHandle(Arc::new(Shared {
            spec,
            rejects: std::sync::atomic::AtomicBool::new(policy.args.rejects_publishes()),
            policy: std::sync::RwLock::new(Arc::new(policy)),
            mailbox,
            internal,
            counters: counters::QueueCounters::default(),
        }))
    }

    /// A handle to no running queue, named `name`: for tests and benchmarks of routing
    /// indexes, which only compare and hash handles. Commands sent to it fail.
    #[doc(hidden)]
    pub fn detached(name: &str) -> Self {
        let spec = QueueSpec {
            vhost: Arc::from("/"),
            name: Arc::from(name),
            durable: false,
            exclusive_owner: None,
            declared_by: None,
            auto_delete: false,
            arguments: FieldTable::default(),
            disk_id: None,
            args: args::QueueArgs::default(),
        };
        let (tx, _) = mailbox::bounded(1);
        let (itx, _) = mailbox::unbounded();
        let policy = QueuePolicy::new(&spec, Default::default());
        QueueHandle::new(spec, policy, tx, itx)
    }

    /// The queue's counters (messages, consumers, rates), as of its owner's last round, plus
    /// the publishes on their way to it.
    pub fn counters(&self) -> &counters::QueueCounters {
        &self.0.counters
    }

    /// Sends from inside the broker without waiting.
    pub fn send_internal(&self, cmd: QueueCmd) {
        let n = cmd.publishes_sent();
        self.0.counters.sending(n);
        if self.0.internal.send(cmd).is_err() {
            self.0.counters.unsent(n);
        }
    }

    /// The queue's declaration.
    pub fn spec(&self) -> &QueueSpec {
        &self.0.spec
    }

    /// A publish to this queue must wait for the queue before it is confirmed: it goes to
    /// disk (a persistent message in a durable queue, and every message in a stream, which
    /// stores them all), or the queue may refuse it (`x-overflow` reject-publish).
    pub fn confirms_async(&self, message: &Message) -> bool {
        let spec = &self.0.spec;
        (spec.disk_id.is_some() && message.is_persistent())
            || self.0.rejects.load(Ordering::Relaxed)
            || spec.args.stream
    }

    /// Its policies and the arguments it runs with.
    pub fn policy(&self) -> Arc<QueuePolicy> {
        Arc::clone(&self.0.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `applied` in force (a policy changed): the owner is told if it changes anything.
    pub(crate) fn set_policy(&self, applied: crate::policy::Applied) {
        let mut current = self.0.policy.write().unwrap_or_else(|e| e.into_inner());
        if current.applied == applied {
            return;
        }
        let policy = QueuePolicy::new(&self.0.spec, applied);
        let args = Arc::clone(&policy.args);
        *current = Arc::new(policy);
        drop(current);
        if args.rejects_publishes() {
            self.0.rejects.store(true, Ordering::SeqCst);
        }
        self.send_internal(QueueCmd::Policy(args));
    }

    /// The queue's name.
    pub fn name(&self) -> &Arc<str> {
        &self.0.spec.name
    }

    /// The queue's name and vhost, for messages.
    pub fn queue_ref(&self) -> QueueRef<'_> {
        QueueRef::new(&self.0.spec.vhost, &self.0.spec.name)
    }

    /// Sends a request; waits when the mailbox is full (back-pressure on publishers).
    /// Fails only if the queue is gone. Settlements (ack, nack, reject, return), cancels and
    /// wake-ups skip the publish backlog: they only concern messages already delivered, and a
    /// consumer whose acks waited behind millions of publishes would stall at its prefetch.
    /// Everything else stays in order with the publishes before it.
    pub async fn send(&self, cmd: QueueCmd) -> AmqpResult<()> {
        let n = cmd.publishes_sent();
        self.0.counters.sending(n);
        let sent = self.send_uncounted(cmd).await;
        if sent.is_err() {
            self.0.counters.unsent(n);
        }
        sent
    }

    async fn send_uncounted(&self, cmd: QueueCmd) -> AmqpResult<()> {
        if matches!(
            cmd,
            QueueCmd::Ack(_)
                | QueueCmd::TakenOver { .. }
                | QueueCmd::Return { .. }
                | QueueCmd::Discard(_)
                | QueueCmd::Cancel { .. }
                | QueueCmd::Wake
                | QueueCmd::Touch
        ) {
            return self.0.internal.send(cmd).map_err(|_| self.gone());
        }
        let cmd = match self.0.mailbox.try_send(cmd) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(cmd)) => cmd,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.gone()),
        };
        self.0.mailbox.send(cmd).await.map_err(|_| self.gone())
    }

    /// Capacity was freed for this queue's consumers.
    pub fn wake(&self) {
        self.send_internal(QueueCmd::Wake);
    }

    /// Asks and waits for the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> QueueCmd) -> AmqpResult<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| self.gone())
    }

    fn gone(&self) -> AmqpError {
        AmqpError::not_found(format_args!("no {}", self.queue_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_properties;
    use amq_protocol::protocol::BasicProperties;

    #[test]
    fn a_stream_confirms_every_message_only_once_it_is_stored() {
        let transient = {
            let p = BasicProperties::default();
            Message::new(
                "".into(),
                "q".into(),
                &p,
                encode_properties(&p),
                Default::default(),
            )
        };
        let classic = QueueHandle::detached("classic");
        assert!(
            !classic.confirms_async(&transient),
            "a transient message in memory"
        );
        let mut spec = classic.spec().clone();
        spec.args.stream = true;
        spec.disk_id = Some(1);
        let (tx, _) = mailbox::bounded(1);
        let (itx, _) = mailbox::unbounded();
        let policy = QueuePolicy::new(&spec, Default::default());
        let stream = QueueHandle::new(spec, policy, tx, itx);
        assert!(
            stream.confirms_async(&transient),
            "a stream writes transient messages too: their confirm waits for the sync"
        );
    }
}
