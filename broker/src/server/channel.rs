//! Channels: the state each channel owns (its publish state machine, delivery tags and
//! unacked messages, consumers, confirms, transaction, registry entry), channel.open / close
//! / flow, and the routing of each frame: content frames to the publish state machine, each
//! method to its class's handler file (basic.rs, queue.rs, exchange.rs, confirm.rs, tx.rs).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use amq_protocol::protocol::{basic, channel as chan, AMQPClass};
use bytes::Bytes;

use super::assembly::Assembly;
use super::confirm::Confirms;
use super::connection::Connection;
use super::tx::TxState;
use crate::error::{AmqpError, AmqpResult, ReplyCode};
use crate::protocol::{write_content_shared, write_deliver, write_method, Frame};
use crate::queue::{ChannelQos, ConnEvent, QueueCmd, QueueHandle, ReturnKind, DELIVERY_WINDOW};
use crate::registry::{ChannelCounts, ChannelInfo, ConsumerInfo};

static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

/// A message delivered on this channel and not yet settled by the client.
pub(crate) struct Unacked {
    pub queue: QueueHandle,
    pub msg_id: u64,
    /// Counted against the channel's prefetch (consumer deliveries; not basic.get).
    pub counted: bool,
}

/// A consumer as its channel knows it.
pub(crate) struct ChannelConsumer {
    pub queue: QueueHandle,
    pub no_ack: bool,
    pub in_flight: Arc<AtomicU32>,
    /// How observers see it.
    pub info: Arc<ConsumerInfo>,
}

/// The state of one open channel.
pub(crate) struct Channel {
    pub id: u16,
    /// The broker sent channel.close and waits for close-ok; other frames are dropped.
    pub closing: bool,
    /// Where a published message's frames are (server/assembly.rs).
    pub assembly: Assembly,
    /// Body frames of the publish in progress (usually one, kept without copying); reused, so
    /// a publish allocates no list.
    pub body_parts: Vec<Bytes>,
    /// Last delivery tag used.
    pub last_tag: u64,
    /// Delivered, not yet acked, by delivery tag.
    pub unacked: BTreeMap<u64, Unacked>,
    /// Consumers by tag.
    pub consumers: HashMap<Arc<str>, ChannelConsumer>,
    /// `consumers` changed since the registry's list of them was last rewritten.
    pub consumers_changed: bool,
    /// basic.qos global=false: the prefetch given to consumers created afterwards.
    pub consumer_prefetch: u32,
    /// basic.qos global=true, shared with the queues.
    pub qos: Arc<ChannelQos>,
    /// Confirm mode (after confirm.select): outcomes not yet reported.
    pub confirms: Option<Confirms>,
    /// Ids deduplicating exchanges remembered for publishes not confirmed yet, by publish
    /// sequence number: a nack forgets its id, so the publisher's retry is not a duplicate.
    pub dedup_marks: std::collections::VecDeque<(u64, crate::dedup::Mark)>,
    /// Unique per channel opened on this broker, so late confirms of a closed channel never
    /// reach a new channel with the same number.
    pub epoch: u64,
    /// tx.select state.
    pub tx: Option<TxState>,
    /// The queue most recently declared here (an empty queue name means this one).
    pub last_queue: Option<Arc<str>>,
    /// Its entry in the registry, which observers read.
    pub info: Arc<ChannelInfo>,
    /// What it counted since the counters in `info` were last brought up to date (once per
    /// batch: see [`Channel::publish_counts`]).
    pub counts: ChannelCounts,
}

impl Channel {
    fn new(id: u16, epoch: u64, info: Arc<ChannelInfo>) -> Self {
        Channel {
            info,
            counts: ChannelCounts::default(),
            id,
            closing: false,
            assembly: Assembly::Idle,
            body_parts: Vec::new(),
            last_tag: 0,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            consumers_changed: false,
            consumer_prefetch: 0,
            qos: Arc::new(ChannelQos::default()),
            confirms: None,
            dedup_marks: std::collections::VecDeque::new(),
            epoch,
            tx: None,
            last_queue: None,
        }
    }

    /// Reports the publishes whose outcome is known, in order.
    pub fn flush_confirms(&mut self, out: &mut Vec<u8>) {
        if let (Some(c), false) = (self.confirms.as_mut(), self.closing) {
            self.counts.confirm += c.flush(out, self.id);
        }
    }

    /// Brings the registry's view of this channel up to date: the counts of this batch, and
    /// its consumers, unacked messages and modes. Called for every channel after each batch,
    /// so it only writes what changed (a connection may hold 2,047 idle channels).
    pub fn publish_counts(&mut self) {
        if !self.counts.is_zero() {
            self.info.counters.add(&self.counts);
            self.counts = ChannelCounts::default();
        }
        let info = &self.info;
        let set = |a: &AtomicU32, v: u32| {
            if a.load(Ordering::Relaxed) != v {
                a.store(v, Ordering::Relaxed);
            }
        };
        let flag = |a: &std::sync::atomic::AtomicBool, v: bool| {
            if a.load(Ordering::Relaxed) != v {
                a.store(v, Ordering::Relaxed);
            }
        };
        set(&info.unacked, self.unacked.len() as u32);
        set(
            &info.unconfirmed,
            self.confirms.as_ref().map_or(0, |c| c.pending() as u32),
        );
        let (uncommitted, acks) = self
            .tx
            .as_ref()
            .map_or((0, 0), |t| (t.publishes.len(), t.settles.len()));
        set(&info.uncommitted, uncommitted as u32);
        set(&info.acks_uncommitted, acks as u32);
        set(&info.consumers, self.consumers.len() as u32);
        if self.consumers_changed {
            self.consumers_changed = false;
            info.set_consumers(self.consumers.values().map(|c| c.info.clone()).collect());
        }
        set(&info.prefetch_count, self.consumer_prefetch);
        set(
            &info.global_prefetch_count,
            self.qos.limit.load(Ordering::Relaxed),
        );
        flag(&info.confirm, self.confirms.is_some());
        flag(&info.transactional, self.tx.is_some());
    }

    /// The queue named by a method, where "" means the last one declared on this channel.
    pub fn queue_name<'a>(&'a self, name: &'a str) -> AmqpResult<&'a str> {
        if !name.is_empty() {
            return Ok(name);
        }
        self.last_queue
            .as_deref()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// Cancels the consumers and returns every unacked message to its queue.
    pub fn release(mut self, conn_id: u64) {
        for (tag, c) in self.consumers.drain() {
            c.queue.send_internal(QueueCmd::Cancel {
                conn_id,
                channel: self.id,
                tag,
                done: None,
            });
        }
        let unacked = std::mem::take(&mut self.unacked);
        settle(unacked.into_values(), &self.qos, |_, ids| {
            QueueCmd::Return {
                ids,
                kind: ReturnKind::Closed,
            }
        });
    }
}

/// Groups settled messages by queue and sends each queue one command (settlements skip the
/// queues' publish mailboxes, so this never waits). Releases channel prefetch; returns true
/// when the channel was at its prefetch limit, so every queue it consumes from may deliver
/// again.
pub(crate) fn settle(
    items: impl IntoIterator<Item = Unacked>,
    qos: &ChannelQos,
    make: impl Fn(&QueueHandle, Vec<u64>) -> QueueCmd,
) -> bool {
    let mut groups: Vec<(QueueHandle, Vec<u64>)> = Vec::new();
    let mut counted = 0;
    for u in items {
        counted += u32::from(u.counted);
        match groups.iter_mut().find(|(q, _)| *q == u.queue) {
            Some((_, ids)) => ids.push(u.msg_id),
            None => groups.push((u.queue, vec![u.msg_id])),
        }
    }
    let was_full = qos.release(counted);
    for (q, ids) in groups {
        let cmd = make(&q, ids);
        q.send_internal(cmd);
    }
    was_full
}

impl Connection {
    /// Takes a channel out (closed), and out of the registry with its final counts.
    pub(crate) fn remove_channel(&mut self, id: u16) -> Option<Box<Channel>> {
        let mut ch = self.channels.remove(&id)?;
        ch.publish_counts();
        self.registry.close_channel(id);
        Some(ch)
    }

    /// Frames on channels 1..=channel_max, handled without waiting. A method that may have to
    /// wait (for a queue's answer, or for room in a queue's mailbox) is handed back, to be run
    /// by [`handle_method`](Self::handle_method) after the publishes read before it are sent.
    pub(crate) fn handle_channel_frame(
        &mut self,
        frame: Frame,
    ) -> AmqpResult<Option<Box<AMQPClass>>> {
        let id = frame.channel();
        let Some(ch) = self.channels.get_mut(&id) else {
            return match frame {
                Frame::Method(_, m) => match *m {
                    AMQPClass::Channel(chan::AMQPMethod::Open(_)) => {
                        if self.channels.len() >= usize::from(self.channel_max) {
                            return Err(AmqpError::not_allowed(format_args!(
                                "number of channels opened ({}) has reached the negotiated channel_max ({})",
                                self.channels.len(),
                                self.channel_max
                            ))
                            .during(20, 10));
                        }
                        // The user's max-channels over all its connections: the whole
                        // connection closes, with class and method 0, as in RabbitMQ.
                        self.ctx
                            .access
                            .check_channel_limit(&self.user)
                            .map_err(AmqpError::not_allowed)?;
                        let epoch = NEXT_EPOCH.fetch_add(1, Ordering::Relaxed);
                        let info = self.registry.open_channel(id);
                        self.channels
                            .insert(id, Box::new(Channel::new(id, epoch, info)));
                        write_method(
                            &mut self.out,
                            id,
                            &AMQPClass::Channel(chan::AMQPMethod::OpenOk(chan::OpenOk {})),
                        );
                        Ok(None)
                    }
                    m => Err(
                        AmqpError::channel_error(format_args!("expected 'channel.open'"))
                            .during(m.get_amqp_class_id(), m.get_amqp_method_id()),
                    ),
                },
                Frame::Publish(..) => {
                    Err(AmqpError::channel_error("expected 'channel.open'").during(60, 40))
                }
                Frame::Ack { .. } => {
                    Err(AmqpError::channel_error("expected 'channel.open'").during(60, 80))
                }
                _ => Err(AmqpError::channel_error("expected 'channel.open'")),
            };
        };
        if ch.closing {
            if let Frame::Method(_, m) = &frame {
                match **m {
                    AMQPClass::Channel(chan::AMQPMethod::CloseOk(_)) => {
                        self.remove_channel(id);
                    }
                    AMQPClass::Channel(chan::AMQPMethod::Close(_)) => {
                        self.remove_channel(id);
                        write_method(
                            &mut self.out,
                            id,
                            &AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                        );
                    }
                    _ => {}
                }
            }
            return Ok(None);
        }
        // The publish state machine (server/assembly.rs) decides what may come next; a
        // complete message goes to basic.rs, as does the fast path's basic.ack.
        match frame {
            Frame::Publish(_, p) => {
                ch.assembly.publish(p)?;
                Ok(None)
            }
            Frame::Method(_, m) => {
                ch.assembly.method_allowed()?;
                Ok(Some(m))
            }
            Frame::Ack {
                delivery_tag,
                multiple,
                ..
            } => {
                ch.assembly.method_allowed()?;
                // Acks skip the queues' publish mailboxes, so publishes still pending need not
                // go first.
                self.settle_tags(id, delivery_tag, multiple, super::basic::Settle::Ack)
                    .map_err(|e| e.during(60, 80))?;
                Ok(None)
            }
            Frame::Header {
                class_id,
                body_size,
                properties,
                raw_properties,
                ..
            } => {
                let max = self.ctx.config.max_message_size;
                if let Some(done) =
                    ch.assembly
                        .header(class_id, body_size, properties, raw_properties, max)?
                {
                    self.finish_publish(id, done)?;
                }
                Ok(None)
            }
            Frame::Body(_, bytes) => {
                if let Some(done) = ch.assembly.body(bytes, &mut ch.body_parts)? {
                    self.finish_publish(id, done)?;
                }
                Ok(None)
            }
            Frame::Heartbeat(_) => Ok(None),
        }
    }

    /// Methods on an open channel, dispatched to their class's handler.
    pub(crate) async fn handle_method(&mut self, id: u16, method: AMQPClass) -> AmqpResult<()> {
        match method {
            AMQPClass::Channel(m) => self.handle_channel_method(id, m).await,
            AMQPClass::Exchange(m) => self.handle_exchange_method(id, m).await,
            AMQPClass::Queue(m) => self.handle_queue_method(id, m).await,
            AMQPClass::Basic(m) => self.handle_basic_method(id, m).await,
            AMQPClass::Tx(m) => self.handle_tx_method(id, m).await,
            AMQPClass::Confirm(m) => self.handle_confirm_method(id, m),
            AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::Request(_)) => {
                // Deprecated, but RabbitMQ still answers it.
                write_method(
                    &mut self.out,
                    id,
                    &AMQPClass::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                        amq_protocol::protocol::access::RequestOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Access(_) => Err(AmqpError::command_invalid("unexpected access method")),
            AMQPClass::Connection(_) => Err(AmqpError::command_invalid(
                "connection methods are only allowed on channel 0",
            )),
        }
    }

    async fn handle_channel_method(&mut self, id: u16, method: chan::AMQPMethod) -> AmqpResult<()> {
        match method {
            chan::AMQPMethod::Open(_) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            chan::AMQPMethod::Close(_) => {
                if let Some(ch) = self.remove_channel(id) {
                    ch.release(self.id);
                }
                write_method(
                    &mut self.out,
                    id,
                    &AMQPClass::Channel(chan::AMQPMethod::CloseOk(chan::CloseOk {})),
                );
                Ok(())
            }
            chan::AMQPMethod::CloseOk(_) => Ok(()),
            chan::AMQPMethod::Flow(f) if f.active => {
                write_method(
                    &mut self.out,
                    id,
                    &AMQPClass::Channel(chan::AMQPMethod::FlowOk(chan::FlowOk { active: true })),
                );
                Ok(())
            }
            chan::AMQPMethod::Flow(_) => Err(AmqpError::not_implemented("active=false")),
            chan::AMQPMethod::FlowOk(_) => Ok(()),
            chan::AMQPMethod::OpenOk(_) => {
                Err(AmqpError::command_invalid("unexpected channel.open-ok"))
            }
        }
    }

    /// Closes one channel with an error; the connection and its other channels carry on.
    pub(crate) fn close_channel(&mut self, id: u16, err: AmqpError) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        tracing::debug!(channel = id, code = err.code.code(), text = %err.text, "closing channel");
        ch.closing = true;
        ch.assembly.reset();
        ch.body_parts.clear();
        ch.confirms = None;
        let consumers: Vec<_> = ch.consumers.drain().collect();
        ch.consumers_changed = true;
        let unacked = std::mem::take(&mut ch.unacked);
        let qos = ch.qos.clone();
        for (tag, c) in consumers {
            c.queue.send_internal(QueueCmd::Cancel {
                conn_id: self.id,
                channel: id,
                tag,
                done: None,
            });
        }
        settle(unacked.into_values(), &qos, |_, ids| QueueCmd::Return {
            ids,
            kind: ReturnKind::Closed,
        });
        write_method(
            &mut self.out,
            id,
            &AMQPClass::Channel(chan::AMQPMethod::Close(chan::Close {
                reply_code: err.code.code(),
                reply_text: err.text.as_str().into(),
                class_id: err.class_id,
                method_id: err.method_id,
            })),
        );
    }

    /// A message from a queue: encode it, or hand it back if its consumer is gone.
    pub(crate) fn handle_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Deliver {
                channel,
                consumer_tag,
                queue,
                messages,
            } => {
                let frame_max = self.frame_max;
                let consumer = self
                    .channels
                    .get_mut(&channel)
                    .filter(|ch| !ch.closing)
                    .and_then(|ch| {
                        ch.consumers
                            .get(&consumer_tag)
                            .map(|c| (c.no_ack, c.in_flight.clone()))
                    });
                let Some((no_ack, in_flight)) = consumer else {
                    // Cancelled or closed meanwhile: the messages go back untouched.
                    let ids = messages.iter().map(|m| m.msg_id).collect();
                    queue.send_internal(QueueCmd::Return {
                        ids,
                        kind: ReturnKind::Unsent,
                    });
                    return;
                };
                let n = messages.len() as u32;
                let before = in_flight.fetch_sub(n, Ordering::Relaxed);
                if before >= DELIVERY_WINDOW
                    && before - n < DELIVERY_WINDOW
                    && !self.to_wake.contains(&queue)
                {
                    self.to_wake.push(queue.clone());
                }
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                if no_ack {
                    ch.counts.deliver_no_ack += u64::from(n);
                } else {
                    ch.counts.deliver += u64::from(n);
                }
                for d in messages {
                    ch.counts.redeliver += u64::from(d.redelivered);
                    ch.last_tag += 1;
                    let tag = ch.last_tag;
                    let m = &d.message;
                    write_deliver(
                        &mut self.out,
                        channel,
                        &consumer_tag,
                        tag,
                        d.redelivered,
                        m.exchange_bytes(),
                        m.routing_key_bytes(),
                    );
                    write_content_shared(
                        &mut self.out,
                        channel,
                        m.raw_properties(),
                        m.body(),
                        m.shared_body(),
                        frame_max,
                    );
                    if !no_ack {
                        ch.unacked.insert(
                            tag,
                            Unacked {
                                queue: queue.clone(),
                                msg_id: d.msg_id,
                                counted: true,
                            },
                        );
                    }
                }
            }
            ConnEvent::Confirm {
                channel,
                epoch,
                seq,
                ok,
            } => {
                if let Some(ch) = self.channels.get_mut(&channel).filter(|c| c.epoch == epoch) {
                    if let Some(c) = ch.confirms.as_mut() {
                        c.resolve(seq, ok);
                        if !ch.dedup_marks.is_empty() {
                            if !ok {
                                if let Some(i) = ch.dedup_marks.iter().position(|(s, _)| *s == seq)
                                {
                                    if let Some((_, mark)) = ch.dedup_marks.remove(i) {
                                        mark.forget();
                                    }
                                }
                            }
                            let settled = c.first_pending();
                            while ch.dedup_marks.front().is_some_and(|(s, _)| *s < settled) {
                                ch.dedup_marks.pop_front();
                            }
                        }
                    }
                }
            }
            ConnEvent::ConsumerCancelled {
                channel,
                consumer_tag,
            } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                let removed = ch.consumers.remove(&consumer_tag).is_some();
                ch.consumers_changed |= removed;
                if removed && self.cancel_notify && !ch.closing {
                    write_method(
                        &mut self.out,
                        channel,
                        &AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: consumer_tag.as_ref().into(),
                            nowait: true,
                        })),
                    );
                }
            }
        }
    }

    /// Queues consumed from on channel `id` get a wake-up once this batch is handled (the
    /// channel's prefetch has room again).
    pub(crate) fn wake_channel(&mut self, id: u16) {
        let Some(ch) = self.channels.get(&id) else {
            return;
        };
        for c in ch.consumers.values() {
            if !self.to_wake.contains(&c.queue) {
                self.to_wake.push(c.queue.clone());
            }
        }
    }

    /// The channel a method arrived on (it is open: the dispatcher checked).
    pub(crate) fn ch(&mut self, id: u16) -> AmqpResult<&mut Channel> {
        self.channels
            .get_mut(&id)
            .map(|c| &mut **c)
            .ok_or_else(|| AmqpError::channel_error(format_args!("channel {id} is not open")))
    }

    /// 406 for an ack, nack or reject of a tag that is not outstanding.
    pub(crate) fn unknown_tag(tag: u64) -> AmqpError {
        AmqpError::new(
            ReplyCode::PreconditionFailed,
            format_args!("unknown delivery tag {tag}"),
        )
    }
}
