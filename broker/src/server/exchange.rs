//! The exchange class: declare, delete, bind, unbind.

use amq_protocol::protocol::{exchange as ex, AMQPClass};

use super::connection::Connection;
use crate::access::grant::{Perm, Resource};
use crate::error::AmqpResult;
use crate::protocol::write_method;
use crate::vhost::{ExchangeDecl, Target};

impl Connection {
    pub(crate) async fn handle_exchange_method(
        &mut self,
        id: u16,
        method: ex::AMQPMethod,
    ) -> AmqpResult<()> {
        let vhost = self.vhost.clone();
        let reply = match method {
            ex::AMQPMethod::Declare(d) => {
                if !d.passive {
                    let name = d.exchange.as_str();
                    self.check(Perm::Configure, Resource::Exchange, name)?;
                    if let Some(ae) = d.arguments.inner().get("alternate-exchange") {
                        // A new exchange with an alternate: read on it, write on the alternate.
                        if !vhost.has_exchange(name) {
                            if let Some(ae) = crate::queue::args::as_str(ae) {
                                self.check(Perm::Read, Resource::Exchange, name)?;
                                self.check(Perm::Write, Resource::Exchange, &ae)?;
                            }
                        }
                    }
                }
                vhost
                    .declare_exchange(&ExchangeDecl {
                        name: d.exchange.to_string(),
                        kind: d.kind.to_string(),
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    })
                    .await?;
                (!d.nowait).then_some(ex::AMQPMethod::DeclareOk(ex::DeclareOk {}))
            }
            ex::AMQPMethod::Delete(d) => {
                self.check(Perm::Configure, Resource::Exchange, d.exchange.as_str())?;
                vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)
                    .await?;
                (!d.nowait).then_some(ex::AMQPMethod::DeleteOk(ex::DeleteOk {}))
            }
            ex::AMQPMethod::Bind(b) => {
                self.check_binding(
                    b.destination.as_str(),
                    Resource::Exchange,
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Target::Exchange(b.destination.as_str());
                vhost
                    .bind(
                        b.source.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        self.id,
                    )
                    .await?;
                (!b.nowait).then_some(ex::AMQPMethod::BindOk(ex::BindOk {}))
            }
            ex::AMQPMethod::Unbind(b) => {
                self.check_binding(
                    b.destination.as_str(),
                    Resource::Exchange,
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let dest = Target::Exchange(b.destination.as_str());
                vhost
                    .unbind(
                        b.source.as_str(),
                        dest,
                        b.routing_key.as_str(),
                        &b.arguments,
                        self.id,
                    )
                    .await?;
                (!b.nowait).then_some(ex::AMQPMethod::UnbindOk(ex::UnbindOk {}))
            }
            _ => {
                return Err(crate::error::AmqpError::command_invalid(
                    "unexpected exchange method",
                ));
            }
        };
        if let Some(reply) = reply {
            write_method(&mut self.out, id, &AMQPClass::Exchange(reply));
        }
        Ok(())
    }
}
