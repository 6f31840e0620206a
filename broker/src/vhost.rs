//! The registry of one virtual host: its exchanges, queues and bindings, and message routing.
//! Definitions sit behind one `RwLock` that is only held for map look-ups, never across an
//! `.await`; routing takes the read side, so publishers on different connections route in
//! parallel.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Destination, Exchange, ExchangeKind};
use crate::queue::{self, QueueCmd, QueueHandle, QueueSpec, QueueStats};
use crate::util::random_token;

/// The options of exchange.declare.
#[derive(Debug, Clone)]
pub struct ExchangeDecl {
    pub name: String,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// The options of queue.declare.
#[derive(Debug, Clone)]
pub struct QueueDecl {
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

#[derive(Default)]
struct Definitions {
    exchanges: HashMap<Arc<str>, Exchange>,
    queues: HashMap<Arc<str>, QueueHandle>,
}

/// One virtual host.
pub struct Vhost {
    /// Its name ("/").
    pub name: String,
    defs: RwLock<Definitions>,
}

fn inequivalent(
    what: &str,
    kind: &str,
    name: &str,
    received: impl std::fmt::Display,
    current: impl std::fmt::Display,
) -> AmqpError {
    AmqpError::precondition(format_args!(
        "inequivalent arg '{what}' for {kind} '{name}' in vhost '/': received '{received}' but current is '{current}'"
    ))
}

fn no_exchange(name: &str) -> AmqpError {
    AmqpError::not_found(format_args!("no exchange '{name}' in vhost '/'"))
}

fn no_queue(name: &str) -> AmqpError {
    AmqpError::not_found(format_args!("no queue '{name}' in vhost '/'"))
}

fn default_exchange_refused() -> AmqpError {
    AmqpError::access_refused("operation not permitted on the default exchange")
}

fn locked(name: &str) -> AmqpError {
    AmqpError::resource_locked(format_args!(
        "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    ))
}

fn value_str(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

/// Checks that two argument tables are the same, naming the first argument that differs.
fn check_args(
    kind: &str,
    name: &str,
    received: &FieldTable,
    current: &FieldTable,
) -> AmqpResult<()> {
    let (r, c) = (received.inner(), current.inner());
    for key in r.keys().chain(c.keys()) {
        let (rv, cv) = (r.get(key.as_str()), c.get(key.as_str()));
        if rv != cv {
            let show = |v: Option<&AMQPValue>| v.map(value_str).unwrap_or_else(|| "none".into());
            return Err(inequivalent(key.as_str(), kind, name, show(rv), show(cv)));
        }
    }
    Ok(())
}

impl Vhost {
    /// A vhost with the default exchange and the `amq.*` exchanges.
    pub fn new(name: &str) -> Arc<Self> {
        let mut defs = Definitions::default();
        for (name, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            let name: Arc<str> = Arc::from(name);
            defs.exchanges.insert(
                name.clone(),
                Exchange::new(name, kind, true, false, false, FieldTable::default()),
            );
        }
        Arc::new(Vhost {
            name: name.to_owned(),
            defs: RwLock::new(defs),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Definitions> {
        self.defs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Definitions> {
        self.defs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// exchange.declare.
    pub fn declare_exchange(&self, d: &ExchangeDecl) -> AmqpResult<()> {
        if d.passive {
            return if self.read().exchanges.contains_key(d.name.as_str()) {
                Ok(())
            } else {
                Err(no_exchange(&d.name))
            };
        }
        let kind = ExchangeKind::parse(&d.kind)?;
        if d.name.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut defs = self.write();
        if let Some(x) = defs.exchanges.get(d.name.as_str()) {
            let n = &d.name;
            if x.kind != kind {
                return Err(inequivalent(
                    "type",
                    "exchange",
                    n,
                    kind.as_str(),
                    x.kind.as_str(),
                ));
            }
            if x.durable != d.durable {
                return Err(inequivalent("durable", "exchange", n, d.durable, x.durable));
            }
            if x.auto_delete != d.auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    "exchange",
                    n,
                    d.auto_delete,
                    x.auto_delete,
                ));
            }
            if x.internal != d.internal {
                return Err(inequivalent(
                    "internal", "exchange", n, d.internal, x.internal,
                ));
            }
            return check_args("exchange", n, &d.arguments, &x.arguments);
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        let name: Arc<str> = Arc::from(d.name.as_str());
        defs.exchanges.insert(
            name.clone(),
            Exchange::new(
                name,
                kind,
                d.durable,
                d.auto_delete,
                d.internal,
                d.arguments.clone(),
            ),
        );
        Ok(())
    }

    /// exchange.delete.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "operation not permitted on exchange '{name}' in vhost '/'"
            )));
        }
        let mut defs = self.write();
        let Some(x) = defs.exchanges.get(name) else {
            return Err(no_exchange(name));
        };
        if if_unused && x.has_bindings() {
            return Err(AmqpError::precondition(format_args!(
                "exchange '{name}' in vhost '/' in use"
            )));
        }
        Self::remove_exchange(&mut defs, name);
        Ok(())
    }

    fn remove_exchange(defs: &mut Definitions, name: &str) {
        defs.exchanges.remove(name);
        Self::remove_destination(defs, &Destination::Exchange(Arc::from(name)));
    }

    /// Removes every binding to `dest`, then deletes auto-delete exchanges left without bindings.
    fn remove_destination(defs: &mut Definitions, dest: &Destination) {
        let mut emptied = Vec::new();
        for x in defs.exchanges.values_mut() {
            if x.remove_destination(dest) > 0 && x.auto_delete && !x.has_bindings() {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            Self::remove_exchange(defs, &name);
        }
    }

    /// queue.declare. Returns the queue (its name may be server-generated) and its counts.
    pub async fn declare_queue(
        self: &Arc<Self>,
        d: &QueueDecl,
        conn_id: u64,
    ) -> AmqpResult<(QueueHandle, QueueStats)> {
        let handle = self.declare_queue_sync(d, conn_id)?;
        let stats = handle.ask(QueueCmd::Stats).await?;
        Ok((handle, stats))
    }

    fn declare_queue_sync(
        self: &Arc<Self>,
        d: &QueueDecl,
        conn_id: u64,
    ) -> AmqpResult<QueueHandle> {
        if d.passive {
            let q = self
                .read()
                .queues
                .get(d.name.as_str())
                .cloned()
                .ok_or_else(|| no_queue(&d.name))?;
            check_exclusive(&q, conn_id)?;
            return Ok(q);
        }
        let mut defs = self.write();
        if let Some(q) = defs.queues.get(d.name.as_str()) {
            check_exclusive(q, conn_id)?;
            let s = q.spec();
            let n = &d.name;
            if s.durable != d.durable {
                return Err(inequivalent("durable", "queue", n, d.durable, s.durable));
            }
            if s.exclusive_owner.is_some() != d.exclusive {
                return Err(locked(n));
            }
            if s.auto_delete != d.auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    "queue",
                    n,
                    d.auto_delete,
                    s.auto_delete,
                ));
            }
            check_args("queue", n, &d.arguments, &s.arguments)?;
            return Ok(q.clone());
        }
        let name = if d.name.is_empty() {
            format!("amq.gen-{}", random_token(22))
        } else if d.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        } else {
            d.name.clone()
        };
        let name: Arc<str> = Arc::from(name);
        let spec = QueueSpec {
            name: name.clone(),
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(conn_id),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
        };
        let handle = queue::spawn(spec, Arc::downgrade(self));
        defs.queues.insert(name, handle.clone());
        Ok(handle)
    }

    /// Looks a queue up for an operation by connection `conn_id` (404, or 405 if another
    /// connection owns it exclusively).
    pub fn queue(&self, name: &str, conn_id: u64) -> AmqpResult<QueueHandle> {
        let q = self
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| no_queue(name))?;
        check_exclusive(&q, conn_id)?;
        Ok(q)
    }

    /// queue.delete. A missing queue is not an error (RabbitMQ answers delete-ok with 0).
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn_id: u64,
    ) -> AmqpResult<u32> {
        let q = match self.queue(name, conn_id) {
            Ok(q) => q,
            Err(e) if e.code == crate::error::ReplyCode::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let count = q
            .ask(|reply| QueueCmd::Delete {
                if_unused,
                if_empty,
                reply,
            })
            .await??;
        self.forget_queue(&q);
        Ok(count)
    }

    /// Removes a queue (already stopped, or stopping) from the registry and its bindings.
    pub(crate) fn forget_queue(&self, q: &QueueHandle) {
        let mut defs = self.write();
        if defs.queues.get(q.name()).is_some_and(|h| h == q) {
            defs.queues.remove(q.name());
            Self::remove_destination(&mut defs, &Destination::Queue(q.name().clone()));
        }
    }

    /// Deletes the exclusive queues of a closed connection.
    pub async fn drop_exclusive_queues(&self, conn_id: u64) {
        let owned: Vec<QueueHandle> = self
            .read()
            .queues
            .values()
            .filter(|q| q.spec().exclusive_owner == Some(conn_id))
            .cloned()
            .collect();
        for q in owned {
            let _ = q
                .ask(|reply| QueueCmd::Delete {
                    if_unused: false,
                    if_empty: false,
                    reply,
                })
                .await;
            self.forget_queue(&q);
        }
    }

    /// queue.bind and exchange.bind.
    pub fn bind(
        &self,
        source: &str,
        dest: Destination,
        key: &str,
        args: &FieldTable,
        conn_id: u64,
    ) -> AmqpResult<()> {
        if source.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut defs = self.write();
        self.check_destination(&defs, &dest, conn_id)?;
        let x = defs
            .exchanges
            .get_mut(source)
            .ok_or_else(|| no_exchange(source))?;
        x.bind(dest, key, args.clone())?;
        Ok(())
    }

    /// queue.unbind and exchange.unbind. Unbinding what is not bound succeeds, as in RabbitMQ.
    pub fn unbind(
        &self,
        source: &str,
        dest: Destination,
        key: &str,
        args: &FieldTable,
        conn_id: u64,
    ) -> AmqpResult<()> {
        if source.is_empty() {
            return Err(default_exchange_refused());
        }
        let mut defs = self.write();
        self.check_destination(&defs, &dest, conn_id)?;
        let x = defs
            .exchanges
            .get_mut(source)
            .ok_or_else(|| no_exchange(source))?;
        if x.unbind(&dest, key, args) && x.auto_delete && !x.has_bindings() {
            let name = x.name.clone();
            Self::remove_exchange(&mut defs, &name);
        }
        Ok(())
    }

    fn check_destination(
        &self,
        defs: &Definitions,
        dest: &Destination,
        conn_id: u64,
    ) -> AmqpResult<()> {
        match dest {
            Destination::Queue(q) => {
                let h = defs.queues.get(q).ok_or_else(|| no_queue(q))?;
                check_exclusive(h, conn_id)
            }
            Destination::Exchange(x) if x.is_empty() => Err(default_exchange_refused()),
            Destination::Exchange(x) => defs
                .exchanges
                .get(x)
                .map(|_| ())
                .ok_or_else(|| no_exchange(x)),
        }
    }

    /// Routes a publish: appends each queue that gets a copy (once, however many paths lead
    /// there). Follows exchange-to-exchange bindings (cycles are harmless) and alternate
    /// exchanges when nothing matched.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<QueueHandle>,
    ) -> AmqpResult<()> {
        let defs = self.read();
        if exchange.is_empty() {
            if let Some(q) = defs.queues.get(routing_key) {
                out.push(q.clone());
            }
            return Ok(());
        }
        let x = defs
            .exchanges
            .get(exchange)
            .ok_or_else(|| no_exchange(exchange))?;
        if x.internal {
            return Err(AmqpError::access_refused(format_args!(
                "cannot publish to internal exchange '{exchange}' in vhost '/'"
            )));
        }
        let mut visited: Vec<&str> = Vec::new();
        let mut next = Some(x);
        while let Some(x) = next.take() {
            if visited.contains(&&*x.name) {
                break;
            }
            Self::route_from(&defs, x, routing_key, headers, &mut visited, out);
            if !out.is_empty() {
                break;
            }
            next = x.alternate.as_deref().and_then(|ae| defs.exchanges.get(ae));
        }
        Ok(())
    }

    fn route_from<'a>(
        defs: &'a Definitions,
        start: &'a Exchange,
        routing_key: &str,
        headers: Option<&FieldTable>,
        visited: &mut Vec<&'a str>,
        out: &mut Vec<QueueHandle>,
    ) {
        let mut pending = vec![start];
        let mut dests = Vec::new();
        while let Some(x) = pending.pop() {
            if visited.contains(&&*x.name) {
                continue;
            }
            visited.push(&x.name);
            dests.clear();
            x.route(routing_key, headers, &mut dests);
            for d in dests.drain(..) {
                match d {
                    Destination::Queue(name) => {
                        if let Some(q) = defs.queues.get(&name) {
                            if !out.contains(q) {
                                out.push(q.clone());
                            }
                        }
                    }
                    Destination::Exchange(name) => {
                        if let Some(next) = defs.exchanges.get(&name) {
                            pending.push(next);
                        }
                    }
                }
            }
        }
    }
}

fn check_exclusive(q: &QueueHandle, conn_id: u64) -> AmqpResult<()> {
    match q.spec().exclusive_owner {
        Some(owner) if owner != conn_id => Err(locked(q.name())),
        _ => Ok(()),
    }
}
