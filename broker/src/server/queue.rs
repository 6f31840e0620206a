//! The queue class: declare, bind, unbind, purge, delete.

use std::sync::Arc;

use amq_protocol::protocol::{queue as q, AMQPClass};

use super::connection::Connection;
use crate::access::grant::{Perm, Resource};
use crate::error::{AmqpError, AmqpResult};
use crate::protocol::write_method;
use crate::queue::QueueCmd;
use crate::vhost::{QueueDecl, Target};

impl Connection {
    pub(crate) async fn handle_queue_method(
        &mut self,
        id: u16,
        method: q::AMQPMethod,
    ) -> AmqpResult<()> {
        let vhost = self.vhost.clone();
        let reply = match method {
            q::AMQPMethod::Declare(d) => {
                let server_named = !d.passive && d.queue.as_str().is_empty();
                let name = if d.passive {
                    // A passive declare needs no permission, as in RabbitMQ.
                    self.ch(id)?.queue_name(d.queue.as_str())?.to_owned()
                } else if server_named {
                    // Named first, so that the permission check sees the name, as RabbitMQ's.
                    crate::vhost::generate_queue_name()
                } else {
                    d.queue.to_string()
                };
                if !d.passive {
                    self.check(Perm::Configure, Resource::Queue, &name)?;
                    if let Some(peer) = name.strip_prefix("warren.peer.").and_then(|n| {
                        n.strip_suffix(".signal")
                            .or_else(|| n.strip_suffix(".relay"))
                    }) {
                        self.check_peer_name(peer)?;
                    }
                    if let Some(dlx) = d.arguments.inner().get("x-dead-letter-exchange") {
                        // A new queue that dead-letters into an exchange: read on the queue
                        // and write on the exchange.
                        if vhost.lookup_queue(&name).is_none() {
                            if let Some(dlx) = crate::queue::args::as_str(dlx) {
                                self.check(Perm::Read, Resource::Queue, &name)?;
                                self.check(Perm::Write, Resource::Exchange, &dlx)?;
                            }
                        }
                    }
                }
                let (handle, stats) = vhost
                    .declare_queue(
                        &QueueDecl {
                            name,
                            passive: d.passive,
                            durable: d.durable,
                            exclusive: d.exclusive,
                            auto_delete: d.auto_delete,
                            arguments: d.arguments,
                            server_named,
                        },
                        self.id,
                    )
                    .await?;
                let name: Arc<str> = handle.name().clone();
                self.ch(id)?.last_queue = Some(name.clone());
                (!d.nowait).then(|| {
                    q::AMQPMethod::DeclareOk(q::DeclareOk {
                        queue: name.as_ref().into(),
                        message_count: u32::try_from(stats.ready).unwrap_or(u32::MAX),
                        consumer_count: stats.consumers,
                    })
                })
            }
            q::AMQPMethod::Bind(b) => {
                let name = self.ch(id)?.queue_name(b.queue.as_str())?.to_owned();
                self.check_binding(
                    &name,
                    Resource::Queue,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Target::Queue(&name);
                vhost
                    .bind(
                        b.exchange.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        self.id,
                    )
                    .await?;
                (!b.nowait).then_some(q::AMQPMethod::BindOk(q::BindOk {}))
            }
            q::AMQPMethod::Unbind(b) => {
                let name = self.ch(id)?.queue_name(b.queue.as_str())?.to_owned();
                self.check_binding(
                    &name,
                    Resource::Queue,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Target::Queue(&name);
                vhost
                    .unbind(
                        b.exchange.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        self.id,
                    )
                    .await?;
                Some(q::AMQPMethod::UnbindOk(q::UnbindOk {}))
            }
            q::AMQPMethod::Purge(p) => {
                let conn_id = self.id;
                let name = self.ch(id)?.queue_name(p.queue.as_str())?.to_owned();
                self.check(Perm::Read, Resource::Queue, &name)?;
                let queue = vhost.queue(&name, conn_id)?;
                if queue.spec().args.stream {
                    return Err(AmqpError::not_implemented(format_args!(
                        "queue.purge not supported by stream queues {}",
                        queue.queue_ref()
                    )));
                }
                let n = queue.ask(QueueCmd::Purge).await?;
                (!p.nowait).then_some(q::AMQPMethod::PurgeOk(q::PurgeOk { message_count: n }))
            }
            q::AMQPMethod::Delete(d) => {
                let name = self.ch(id)?.queue_name(d.queue.as_str())?.to_owned();
                self.check(Perm::Configure, Resource::Queue, &name)?;
                let n = vhost
                    .delete_queue(&name, d.if_unused, d.if_empty, self.id)
                    .await?;
                (!d.nowait).then_some(q::AMQPMethod::DeleteOk(q::DeleteOk { message_count: n }))
            }
            _ => return Err(AmqpError::command_invalid("unexpected queue method")),
        };
        if let Some(reply) = reply {
            write_method(&mut self.out, id, &AMQPClass::Queue(reply));
        }
        Ok(())
    }

    /// The permissions a binding (or unbinding) needs, in RabbitMQ's order: write on the
    /// destination, read on the source, and a topic source's read pattern on the key. The
    /// default exchange takes no bindings at all.
    pub(crate) fn check_binding(
        &mut self,
        destination: &str,
        kind: Resource,
        source: &str,
        key: &str,
    ) -> AmqpResult<()> {
        self.check(Perm::Write, kind, destination)?;
        if source.is_empty() || (kind == Resource::Exchange && destination.is_empty()) {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        self.check(Perm::Read, Resource::Exchange, source)?;
        self.check_topic(Perm::Read, source, key)
    }
}
