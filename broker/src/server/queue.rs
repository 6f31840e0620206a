//! The queue class: declare, bind, unbind, purge, delete.

use std::sync::Arc;

use amq_protocol::protocol::{queue as q, AMQPClass};

use super::connection::Connection;
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
                let name = if d.passive {
                    self.ch(id)?.queue_name(d.queue.as_str())?.to_owned()
                } else {
                    d.queue.to_string()
                };
                let (handle, stats) = vhost
                    .declare_queue(
                        &QueueDecl {
                            name,
                            passive: d.passive,
                            durable: d.durable,
                            exclusive: d.exclusive,
                            auto_delete: d.auto_delete,
                            arguments: d.arguments,
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
                let name = self.ch(id)?.queue_name(p.queue.as_str())?;
                let queue = vhost.queue(name, conn_id)?;
                let n = queue.ask(QueueCmd::Purge).await?;
                (!p.nowait).then_some(q::AMQPMethod::PurgeOk(q::PurgeOk { message_count: n }))
            }
            q::AMQPMethod::Delete(d) => {
                let name = self.ch(id)?.queue_name(d.queue.as_str())?.to_owned();
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
}
