//! The task that owns one queue: its ready messages, the messages delivered and not yet
//! settled, and its consumers. It drains its mailbox in batches and, after each batch, pushes
//! as many messages as consumers' prefetch and delivery windows allow.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Weak;

use tokio::sync::mpsc;

use super::{
    ConnEvent, Consumer, Delivery, QueueCmd, QueueHandle, QueueSpec, QueueStats, DELIVERY_WINDOW,
};
use crate::error::{AmqpError, AmqpResult};
use crate::store::{QueueStore, StoredMessage};
use crate::vhost::Vhost;

/// Commands a queue's mailbox holds before publishers wait.
const MAILBOX: usize = 8192;

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
}

struct QueueActor {
    handle: QueueHandle,
    vhost: Weak<Vhost>,
    store: Box<dyn QueueStore>,
    next_seq: u64,
    unacked: HashMap<u64, Unacked>,
    consumers: Vec<Attached>,
    next_consumer_id: u64,
    /// Round-robin position among consumers.
    cursor: usize,
    /// For auto-delete: the queue had a consumer at some point.
    had_consumer: bool,
    deleted: bool,
}

/// Starts the owner task of a new queue over `store` (whose messages, if recovered, are
/// numbered below `next_seq`) and returns its handle.
pub(crate) fn spawn(
    spec: QueueSpec,
    vhost: Weak<Vhost>,
    store: Box<dyn QueueStore>,
    next_seq: u64,
) -> QueueHandle {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let handle = QueueHandle::new(spec, tx);
    let actor = QueueActor {
        handle: handle.clone(),
        vhost,
        store,
        next_seq,
        unacked: HashMap::new(),
        consumers: Vec::new(),
        next_consumer_id: 1,
        cursor: 0,
        had_consumer: false,
        deleted: false,
    };
    tokio::spawn(actor.run(rx));
    handle
}

impl QueueActor {
    async fn run(mut self, mut rx: mpsc::Receiver<QueueCmd>) {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            for cmd in batch.drain(..) {
                self.handle(cmd);
                if self.deleted {
                    return;
                }
            }
            self.deliver();
            if self.deleted {
                return;
            }
        }
    }

    fn handle(&mut self, cmd: QueueCmd) {
        match cmd {
            QueueCmd::Publish { message, confirm } => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let written = self.store.push(StoredMessage {
                    seq,
                    message,
                    redelivered: false,
                });
                if let Some(token) = confirm {
                    match self.store.disk() {
                        Some(disk) if written => disk.after_flush(move |ok| token.resolve(ok)),
                        _ => token.resolve(true),
                    }
                }
            }
            QueueCmd::Consume { consumer, reply } => {
                let _ = reply.send(self.add_consumer(consumer));
            }
            QueueCmd::Cancel {
                conn_id,
                channel,
                tag,
            } => {
                self.consumers.retain(|a| {
                    !(a.consumer.conn_id == conn_id
                        && a.consumer.channel == channel
                        && a.consumer.tag == tag)
                });
                self.maybe_auto_delete();
            }
            QueueCmd::Get { no_ack, reply } => {
                let got = self.store.pop().map(|mut msg| {
                    let delivery = self.delivery(&msg);
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
                            },
                        );
                    }
                    (delivery, self.store.len() as u32)
                });
                if let Err(Some((delivery, _))) = reply.send(got) {
                    // The asking channel is gone: the message was never delivered.
                    if let Some(u) = self.unacked.remove(&delivery.msg_id) {
                        self.store.requeue(u.msg);
                    }
                }
            }
            QueueCmd::Ack(ids) => {
                for id in ids {
                    if let Some(u) = self.unacked.remove(&id) {
                        self.release(u.consumer);
                        self.store.settle(&u.msg);
                    }
                }
            }
            QueueCmd::Reject { ids, requeue } => {
                for id in ids {
                    if let Some(mut u) = self.unacked.remove(&id) {
                        self.release(u.consumer);
                        if requeue {
                            u.msg.redelivered = true;
                            self.store.requeue(u.msg);
                        } else {
                            self.store.settle(&u.msg);
                        }
                    }
                }
            }
            QueueCmd::Purge(reply) => {
                let _ = reply.send(self.store.purge() as u32);
            }
            QueueCmd::Stats(reply) => {
                let _ = reply.send(QueueStats {
                    messages: self.store.len() as u32,
                    consumers: self.consumers.len() as u32,
                });
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
            QueueCmd::Wake => {}
        }
    }

    fn check_delete(&self, if_unused: bool, if_empty: bool) -> AmqpResult<u32> {
        let name = self.handle.name();
        if if_unused && !self.consumers.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "queue '{name}' in vhost '/' in use"
            )));
        }
        if if_empty && !self.store.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "queue '{name}' in vhost '/' is not empty"
            )));
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
        self.deleted = true;
    }

    fn add_consumer(&mut self, consumer: Consumer) -> AmqpResult<()> {
        let name = self.handle.name();
        if self.consumers.iter().any(|a| a.consumer.exclusive)
            || (consumer.exclusive && !self.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format_args!(
                "queue '{name}' in vhost '/' in exclusive use"
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
        Ok(())
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
            if let Some(vhost) = self.vhost.upgrade() {
                vhost.forget_queue(&self.handle);
            }
            self.shut_down();
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

    /// Pushes ready messages to consumers, round-robin, within each consumer's prefetch, its
    /// channel's prefetch and its delivery window.
    fn deliver(&mut self) {
        while !self.store.is_empty() && !self.consumers.is_empty() {
            let Some(idx) = self.next_ready_consumer() else {
                return;
            };
            let Some(mut msg) = self.store.pop() else {
                return;
            };
            let a = &mut self.consumers[idx];
            let event = ConnEvent::Deliver {
                channel: a.consumer.channel,
                consumer_tag: a.consumer.tag.clone(),
                delivery: Delivery {
                    queue: self.handle.clone(),
                    msg_id: msg.seq,
                    message: msg.message.clone(),
                    redelivered: msg.redelivered,
                },
            };
            if a.consumer.conn.send(event).is_err() {
                // The connection is gone; its channel cleanup will cancel the consumer.
                if !a.consumer.no_ack {
                    a.consumer.channel_qos.release(1);
                }
                self.consumers.remove(idx);
                self.store.requeue(msg);
                continue;
            }
            a.consumer.in_flight.fetch_add(1, Ordering::Relaxed);
            if a.consumer.no_ack {
                self.store.settle(&msg);
            } else {
                self.store.delivered(&msg);
                a.unacked += 1;
                msg.redelivered = true;
                let id = a.id;
                self.unacked.insert(
                    msg.seq,
                    Unacked {
                        msg,
                        consumer: Some(id),
                    },
                );
            }
            self.cursor = idx + 1;
        }
    }

    fn next_ready_consumer(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        for i in 0..n {
            let idx = (self.cursor + i) % n;
            let a = &self.consumers[idx];
            let c = &a.consumer;
            if c.in_flight.load(Ordering::Relaxed) >= DELIVERY_WINDOW {
                continue;
            }
            if c.no_ack {
                return Some(idx);
            }
            if c.prefetch != 0 && a.unacked >= c.prefetch {
                continue;
            }
            if c.channel_qos.try_reserve() {
                return Some(idx);
            }
        }
        None
    }
}
