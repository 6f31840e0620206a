//! The basic class: qos, consume, cancel, publish, get, ack, nack, reject, recover.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::FieldTable;

use super::assembly::Complete;
use super::channel::{settle, Channel, ChannelConsumer, Unacked};
use super::connection::Connection;
use crate::access::grant::{Perm, Resource};
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::protocol::{write_content_shared, write_method};
use crate::queue::args::{as_int, as_str, parse_expiration};
use crate::queue::{ConfirmToken, Consumer, QueueCmd, ReturnKind};
use crate::registry::ConsumerInfo;
use crate::util::random_token;

/// How a client settles delivered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Reject { requeue: bool },
}

impl Settle {
    pub(crate) fn command(self, ids: Vec<u64>) -> QueueCmd {
        match self {
            Settle::Ack => QueueCmd::Ack(ids),
            Settle::Reject { requeue: true } => QueueCmd::Return {
                ids,
                kind: ReturnKind::Failed,
            },
            Settle::Reject { requeue: false } => QueueCmd::Discard(ids),
        }
    }
}

/// Takes the unacked entries an ack/nack/reject names: one tag, or with `multiple` every tag up
/// to it (0 with `multiple` means all). An unknown tag is 406.
pub(crate) fn take_tags(
    ch: &mut Channel,
    tag: u64,
    multiple: bool,
) -> AmqpResult<Vec<(u64, Unacked)>> {
    if multiple {
        if tag == 0 {
            return Ok(std::mem::take(&mut ch.unacked).into_iter().collect());
        }
        if !ch.unacked.contains_key(&tag) {
            return Err(Connection::unknown_tag(tag));
        }
        let rest = ch.unacked.split_off(&(tag + 1));
        Ok(std::mem::replace(&mut ch.unacked, rest)
            .into_iter()
            .collect())
    } else {
        ch.unacked
            .remove(&tag)
            .map(|u| vec![(tag, u)])
            .ok_or_else(|| Connection::unknown_tag(tag))
    }
}

impl Connection {
    pub(crate) async fn handle_basic_method(
        &mut self,
        id: u16,
        method: basic::AMQPMethod,
    ) -> AmqpResult<()> {
        match method {
            basic::AMQPMethod::Qos(q) => {
                let ch = self.ch(id)?;
                if q.global {
                    ch.qos
                        .limit
                        .store(u32::from(q.prefetch_count), Ordering::Relaxed);
                    // A raised limit may let queues deliver again.
                    let queues: Vec<_> = ch.consumers.values().map(|c| c.queue.clone()).collect();
                    for q in queues {
                        if !self.to_wake.contains(&q) {
                            self.to_wake.push(q);
                        }
                    }
                } else {
                    ch.consumer_prefetch = u32::from(q.prefetch_count);
                }
                self.reply(id, basic::AMQPMethod::QosOk(basic::QosOk {}));
                Ok(())
            }
            basic::AMQPMethod::Consume(c) => self.consume(id, c).await,
            basic::AMQPMethod::Cancel(c) => {
                let ch = self.ch(id)?;
                let tag: Arc<str> = Arc::from(c.consumer_tag.as_str());
                if let Some(consumer) = ch.consumers.remove(&tag) {
                    ch.consumers_changed = true;
                    let (done, gone) = tokio::sync::oneshot::channel();
                    consumer.queue.send_internal(QueueCmd::Cancel {
                        conn_id: self.id,
                        channel: id,
                        tag,
                        done: Some(done),
                    });
                    // Settlements and cancels skip the publish backlog: this waits for the
                    // queue's current round at most. A queue that is gone answers too.
                    let _ = gone.await;
                }
                if !c.nowait {
                    self.reply(
                        id,
                        basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        }),
                    );
                }
                Ok(())
            }
            basic::AMQPMethod::Get(g) => self.get(id, g).await,
            basic::AMQPMethod::Ack(a) => {
                self.settle_tags(id, a.delivery_tag, a.multiple, Settle::Ack)
            }
            basic::AMQPMethod::Nack(n) => self.settle_tags(
                id,
                n.delivery_tag,
                n.multiple,
                Settle::Reject { requeue: n.requeue },
            ),
            basic::AMQPMethod::Reject(r) => self.settle_tags(
                id,
                r.delivery_tag,
                false,
                Settle::Reject { requeue: r.requeue },
            ),
            basic::AMQPMethod::Recover(r) => {
                self.recover(id, r.requeue)?;
                self.reply(id, basic::AMQPMethod::RecoverOk(basic::RecoverOk {}));
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(r) => self.recover(id, r.requeue),
            other => Err(AmqpError::command_invalid(format_args!(
                "basic method {} is sent by servers, not clients",
                AMQPClass::Basic(other).get_amqp_method_id()
            ))),
        }
    }

    pub(crate) fn reply(&mut self, id: u16, method: basic::AMQPMethod) {
        write_method(&mut self.out, id, &AMQPClass::Basic(method));
    }

    async fn consume(&mut self, id: u16, c: basic::Consume) -> AmqpResult<()> {
        let vhost = self.vhost.clone();
        let conn_id = self.id;
        let events = self.events();
        let name = self.ch(id)?.queue_name(c.queue.as_str())?.to_owned();
        self.check(Perm::Read, Resource::Queue, &name)?;
        let ch = self.ch(id)?;
        let queue = vhost.queue(&name, conn_id)?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            Arc::from(format!("amq.ctag-{}", random_token(22)))
        } else {
            Arc::from(c.consumer_tag.as_str())
        };
        if ch.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format_args!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => as_int(v)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    AmqpError::precondition(format_args!(
                        "invalid arg 'x-priority' for consumer '{tag}': {v:?}"
                    ))
                })?,
        };
        let mut tracking = None;
        let mut stream_filter = None;
        let mut group = None;
        let offset = if queue.spec().args.stream {
            // RabbitMQ's checks, in its order and words.
            if ch.consumer_prefetch == 0 {
                return Err(AmqpError::precondition(format_args!(
                    "consumer prefetch count is not set for '{}'",
                    queue.queue_ref()
                )));
            }
            if c.no_ack {
                return Err(AmqpError::not_implemented(format_args!(
                    "automatic acknowledgement not supported by stream queues {}",
                    queue.queue_ref()
                )));
            }
            tracking = match c.arguments.inner().get("x-stream-consumer-name") {
                Some(v) => Some(Arc::from(as_str(v).ok_or_else(|| {
                    AmqpError::precondition(format_args!(
                        "invalid arg 'x-stream-consumer-name' for consumer '{tag}': a string is expected"
                    ))
                })?)),
                None if !c.consumer_tag.as_str().is_empty() => Some(tag.clone()),
                None => None,
            };
            stream_filter = crate::stream::parse_filter(&c.arguments, &tag)?;
            group = match c.arguments.inner().get("x-consumer-group") {
                None => None,
                Some(v) => match as_str(v) {
                    Some(g) if !g.is_empty() => Some(Arc::from(g)),
                    _ => {
                        return Err(AmqpError::precondition(format_args!(
                            "invalid arg 'x-consumer-group' for consumer '{tag}': a non-empty string is expected"
                        )))
                    }
                },
            };
            match c.arguments.inner().get("x-stream-offset") {
                None => None,
                Some(v) => Some(crate::stream::OffsetSpec::parse(Some(v), &tag)?),
            }
        } else {
            if c.arguments.inner().contains_key("x-consumer-group") {
                return Err(AmqpError::precondition(format_args!(
                    "invalid arg 'x-consumer-group' for consumer '{tag}': consumer groups are only \
                     supported by stream queues, and {} is not one",
                    queue.queue_ref()
                )));
            }
            None
        };
        let single_active = group.is_some() || queue.spec().args.single_active_consumer;
        // A member of a group, or a consumer behind a single active one, waits until its
        // queue makes it active.
        let active = Arc::new(std::sync::atomic::AtomicBool::new(!single_active));
        let in_flight = Arc::new(AtomicU32::new(0));
        let consumer = Consumer {
            offset,
            tracking,
            stream_filter,
            group,
            active: active.clone(),
            priority,
            tag: tag.clone(),
            conn_id,
            channel: id,
            conn: events,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch: ch.consumer_prefetch,
            channel_qos: ch.qos.clone(),
            in_flight: in_flight.clone(),
        };
        queue
            .ask(|reply| QueueCmd::Consume { consumer, reply })
            .await??;
        let ch = self.ch(id)?;
        let info = Arc::new(ConsumerInfo {
            tag: tag.clone(),
            queue: queue.name().clone(),
            ack_required: !c.no_ack,
            exclusive: c.exclusive,
            prefetch_count: ch.consumer_prefetch,
            arguments: c.arguments,
            active,
            single_active,
        });
        ch.consumers.insert(
            tag.clone(),
            ChannelConsumer {
                queue,
                no_ack: c.no_ack,
                in_flight,
                info,
            },
        );
        ch.consumers_changed = true;
        if !c.nowait {
            self.reply(
                id,
                basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_ref().into(),
                }),
            );
        }
        Ok(())
    }

    async fn get(&mut self, id: u16, g: basic::Get) -> AmqpResult<()> {
        let vhost = self.vhost.clone();
        let conn_id = self.id;
        let frame_max = self.frame_max;
        let name = self.ch(id)?.queue_name(g.queue.as_str())?.to_owned();
        self.check(Perm::Read, Resource::Queue, &name)?;
        let queue = vhost.queue(&name, conn_id)?;
        if queue.spec().args.stream {
            return Err(AmqpError::not_implemented(format_args!(
                "basic.get not supported by stream queues {}",
                queue.queue_ref()
            )));
        }
        let got = queue
            .ask(|reply| QueueCmd::Get {
                no_ack: g.no_ack,
                reply,
            })
            .await?;
        let Some((d, remaining)) = got else {
            self.ch(id)?.counts.get_empty += 1;
            self.reply(id, basic::AMQPMethod::GetEmpty(basic::GetEmpty {}));
            return Ok(());
        };
        let ch = self.ch(id)?;
        if g.no_ack {
            ch.counts.get_no_ack += 1;
        } else {
            ch.counts.get += 1;
        }
        ch.counts.redeliver += u64::from(d.redelivered);
        ch.last_tag += 1;
        let tag = ch.last_tag;
        if !g.no_ack {
            ch.unacked.insert(
                tag,
                Unacked {
                    queue: d.queue.clone(),
                    msg_id: d.msg_id,
                    counted: false,
                },
            );
        }
        let m = &d.message;
        self.reply(
            id,
            basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: d.redelivered,
                exchange: m.exchange().into(),
                routing_key: m.routing_key().into(),
                message_count: remaining,
            }),
        );
        write_content_shared(
            &mut self.out,
            id,
            m.raw_properties(),
            m.body(),
            m.shared_body(),
            frame_max,
        );
        Ok(())
    }

    pub(crate) fn settle_tags(
        &mut self,
        id: u16,
        tag: u64,
        multiple: bool,
        how: Settle,
    ) -> AmqpResult<()> {
        let ch = self.ch(id)?;
        let taken = take_tags(ch, tag, multiple)?;
        if matches!(how, Settle::Reject { .. }) {
            if let Some((_, u)) = taken.iter().find(|(_, u)| u.queue.spec().args.stream) {
                return Err(AmqpError::not_implemented(format_args!(
                    "basic.nack and basic.reject not supported by stream queues {}",
                    u.queue.queue_ref()
                )));
            }
        }
        if let Some(tx) = ch.tx.as_mut() {
            tx.settles
                .extend(taken.into_iter().map(|(tag, u)| (tag, u, how)));
            return Ok(());
        }
        if matches!(how, Settle::Ack) {
            ch.counts.ack += taken.len() as u64;
        }
        let qos = ch.qos.clone();
        if settle(taken.into_iter().map(|(_, u)| u), &qos, |_, ids| {
            how.command(ids)
        }) {
            self.wake_channel(id);
        }
        Ok(())
    }

    fn recover(&mut self, id: u16, requeue: bool) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let ch = self.ch(id)?;
        let all = std::mem::take(&mut ch.unacked);
        let qos = ch.qos.clone();
        if settle(all.into_values(), &qos, |_, ids| QueueCmd::Return {
            ids,
            kind: ReturnKind::Closed,
        }) {
            self.wake_channel(id);
        }
        Ok(())
    }

    /// The last body frame of a publish arrived: build the message and route it (or hold it
    /// in the transaction).
    pub(crate) fn finish_publish(&mut self, id: u16, done: Complete) -> AmqpResult<()> {
        self.publishing = true;
        if done.method.exchange() == b"warren.signal" {
            // A peer's signal or relayed message: its sender's name is its reply_to.
            // Parsed here only (checked for nesting when the header arrived).
            let props = amq_protocol::protocol::basic::parse_properties(&done.raw_properties[..])
                .map(|(_, p)| p)
                .unwrap_or_default();
            let name = props.reply_to().as_ref().map_or("", |r| r.as_str());
            if let Err(e) = self.check_peer_name(name) {
                if let Some(ch) = self.channels.get_mut(&id) {
                    ch.body_parts.clear();
                }
                return Err(e.during(60, 40));
            }
        }
        if !self.grant().publishes_freely() {
            let exchange = std::str::from_utf8(done.method.exchange()).unwrap_or_default();
            let key = std::str::from_utf8(done.method.routing_key()).unwrap_or_default();
            let allowed = self
                .check(Perm::Write, Resource::Exchange, exchange)
                .and_then(|()| self.check_topic(Perm::Write, exchange, key));
            if let Err(e) = allowed {
                if let Some(ch) = self.channels.get_mut(&id) {
                    ch.body_parts.clear();
                }
                return Err(e.during(60, 40));
            }
        }
        let user = &self.user;
        let ch = self
            .channels
            .get_mut(&id)
            .ok_or_else(|| AmqpError::channel_error(format_args!("channel {id} is not open")))?;
        if !self.rate.is_empty() {
            // Charged to the publish rate limits after this read batch (see `run`).
            let bytes: usize = ch.body_parts.iter().map(|b| b.len()).sum();
            self.rate_owed.0 += 1;
            self.rate_owed.1 += bytes as u64;
        }
        let Complete {
            method,
            properties,
            raw_properties,
        } = done;
        if let Some(uid) = &properties.user_id {
            if uid.as_str() != user {
                ch.body_parts.clear();
                return Err(AmqpError::precondition(format_args!(
                    "user_id property set to '{}' but authenticated user was '{user}'",
                    uid.as_str(),
                ))
                .during(60, 40));
            }
        }
        let expiration_ms = match &properties.expiration {
            Some(e) => match parse_expiration(e.as_str()) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    ch.body_parts.clear();
                    return Err(e.during(60, 40));
                }
            },
            None => None,
        };
        let msg = Arc::new(Message::from_parts(
            method.exchange(),
            method.routing_key(),
            properties.delivery_mode == Some(2),
            properties.priority.unwrap_or(0),
            expiration_ms,
            &raw_properties,
            &ch.body_parts,
        ));
        ch.body_parts.clear();
        let mandatory = method.mandatory;
        if let Some(tx) = ch.tx.as_mut() {
            tx.hold(msg, mandatory)?;
            return Ok(());
        }
        self.publish_message(id, msg, mandatory, properties.headers.as_ref())
    }

    /// Routes a complete message to its queues; returns it to the publisher if it is
    /// mandatory and unroutable (before the confirm, as RabbitMQ does).
    pub(crate) fn publish_message(
        &mut self,
        id: u16,
        msg: Arc<Message>,
        mandatory: bool,
        headers: Option<&FieldTable>,
    ) -> AmqpResult<()> {
        let mut targets = std::mem::take(&mut self.route_buf);
        let envelope = crate::exchange::Envelope {
            routing_key: msg.routing_key(),
            headers,
            raw_properties: msg.raw_properties(),
        };
        let routed = self.vhost.route(msg.exchange(), &envelope, &mut targets)?;
        if let crate::vhost::Routed::Delayed(scheduler, delay) = routed {
            // Held by the exchange: confirmed once stored (fsynced, for a persistent message
            // on a durable exchange), never returned (its routes are known only when due).
            self.route_buf = targets;
            let events = self.events();
            let ch = self.ch(id)?;
            ch.counts.publish += 1;
            ch.counts.received_confirm += u64::from(ch.confirms.is_some());
            ch.counts.routed += 1;
            let waits = u32::from(scheduler.confirms_async(&msg));
            let epoch = ch.epoch;
            let token = match ch.confirms.as_mut().map(|c| c.publish(waits)) {
                Some(seq) if waits > 0 => Some(ConfirmToken::new(events, id, epoch, seq)),
                _ => None,
            };
            scheduler.schedule(msg, delay, token);
            return Ok(());
        }
        let duplicate = matches!(routed, crate::vhost::Routed::Duplicate);
        let mark = match routed {
            crate::vhost::Routed::Routed(mark) => mark,
            _ => None,
        };
        if targets.is_empty() && mandatory && !duplicate {
            self.reply(
                id,
                basic::AMQPMethod::Return(basic::Return {
                    reply_code: 312,
                    reply_text: "NO_ROUTE".into(),
                    exchange: msg.exchange().into(),
                    routing_key: msg.routing_key().into(),
                }),
            );
            write_content_shared(
                &mut self.out,
                id,
                msg.raw_properties(),
                msg.body(),
                msg.shared_body(),
                self.frame_max,
            );
        }
        let mut later = std::mem::take(&mut self.confirm_buf);
        later.clear();
        let ch = self.ch(id)?;
        ch.counts.publish += 1;
        ch.counts.received_confirm += u64::from(ch.confirms.is_some());
        ch.counts.routed += u64::from(!targets.is_empty());
        if targets.is_empty() && !duplicate {
            if mandatory {
                ch.counts.return_unroutable += 1;
            } else {
                ch.counts.drop_unroutable += 1;
            }
        }
        let epoch = ch.epoch;
        let mut waits = 0;
        // Each queue's answer is read once: a policy may switch a queue to confirming later
        // while this runs, and the count must match the tokens handed out.
        let confirm_seq = ch.confirms.as_mut().map(|c| {
            later.extend(targets.iter().map(|q| q.confirms_async(&msg)));
            waits = later.iter().filter(|&&b| b).count() as u32;
            c.publish(waits)
        });
        // A queue may still refuse it: then its id must not make the retry a duplicate.
        if let (Some(mark), Some(seq), true) = (mark, confirm_seq, waits > 0) {
            ch.dedup_marks.push_back((seq, mark));
        }
        // Only publishes a queue must confirm later carry a handle to this connection.
        let events = (waits > 0).then(|| self.events());
        for (i, q) in targets.drain(..).enumerate() {
            let confirm = match (confirm_seq, &events) {
                (Some(seq), Some(events)) if later[i] => {
                    Some(ConfirmToken::new(events.clone(), id, epoch, seq))
                }
                // Confirmed now: the queue must not refuse it later.
                (Some(_), _) => Some(ConfirmToken::early()),
                _ => None,
            };
            self.enqueue(q, msg.clone(), confirm);
        }
        self.confirm_buf = later;
        // Keep the routing buffer's allocation for the next publish.
        self.route_buf = targets;
        Ok(())
    }
}
