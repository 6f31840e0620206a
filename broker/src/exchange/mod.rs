//! Exchanges: one file per type behind one `Router` trait. What is common to every type
//! (the binding set, alternate exchange, auto-delete bookkeeping) lives in `Exchange`.

mod consistent_hash;
mod direct;
mod fanout;
mod headers;
mod topic;

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::queue::QueueHandle;

pub use consistent_hash::ConsistentHashRouter;
pub use direct::DirectRouter;
pub use fanout::FanoutRouter;
pub use headers::HeadersRouter;
pub use topic::TopicRouter;

/// Where a binding leads. A queue is held by its handle, so routing hands out the queues a
/// message goes to without looking each one up again by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A queue.
    Queue(QueueHandle),
    /// Another exchange (exchange-to-exchange binding), by name.
    Exchange(Arc<str>),
}

impl Destination {
    /// The name of the queue or exchange.
    pub fn name(&self) -> &Arc<str> {
        match self {
            Destination::Queue(q) => q.name(),
            Destination::Exchange(x) => x,
        }
    }
}

/// What routing may look at in a message: its routing key, its headers (parsed, if it has
/// any) and its encoded properties (parsed only by an exchange that needs more than headers).
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub routing_key: &'a str,
    pub headers: Option<&'a FieldTable>,
    pub raw_properties: &'a [u8],
}

/// The exchange types Warren implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
    /// `x-consistent-hash`, as RabbitMQ's `rabbitmq_consistent_hash_exchange` plugin.
    ConsistentHash,
    /// `x-delayed-message`, as `rabbitmq-delayed-message-exchange`: routes as its
    /// `x-delayed-type` once a message's `x-delay` has passed (see [`crate::delayed`]).
    Delayed,
}

impl ExchangeKind {
    /// Parses the `type` field of exchange.declare; unknown types are refused with 503 like
    /// RabbitMQ ("invalid exchange type").
    pub fn parse(kind: &str) -> AmqpResult<Self> {
        match kind {
            "direct" => Ok(ExchangeKind::Direct),
            "fanout" => Ok(ExchangeKind::Fanout),
            "topic" => Ok(ExchangeKind::Topic),
            "headers" => Ok(ExchangeKind::Headers),
            "x-consistent-hash" => Ok(ExchangeKind::ConsistentHash),
            "x-delayed-message" => Ok(ExchangeKind::Delayed),
            other => Err(AmqpError::command_invalid(format_args!(
                "unknown exchange type '{other}'"
            ))),
        }
    }

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
            ExchangeKind::ConsistentHash => "x-consistent-hash",
            ExchangeKind::Delayed => "x-delayed-message",
        }
    }

    /// Every type, in the order the API lists them.
    pub const ALL: [ExchangeKind; 6] = [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Headers,
        ExchangeKind::Topic,
        ExchangeKind::ConsistentHash,
        ExchangeKind::Delayed,
    ];

    /// Checks the declaration arguments this type reads (406 PRECONDITION_FAILED, as RabbitMQ's
    /// exchange type `validate` callbacks answer).
    pub fn validate(self, arguments: &FieldTable) -> AmqpResult<()> {
        match self {
            ExchangeKind::ConsistentHash => consistent_hash::HashOn::parse(arguments).map(|_| ()),
            ExchangeKind::Delayed => {
                crate::delayed::delayed_type(arguments).and_then(|inner| inner.validate(arguments))
            }
            _ => Ok(()),
        }
    }

    fn router(self, arguments: &FieldTable) -> Box<dyn Router> {
        match self {
            ExchangeKind::Direct => Box::<DirectRouter>::default(),
            ExchangeKind::Fanout => Box::<FanoutRouter>::default(),
            ExchangeKind::Topic => Box::<TopicRouter>::default(),
            ExchangeKind::Headers => Box::<HeadersRouter>::default(),
            ExchangeKind::ConsistentHash => Box::new(ConsistentHashRouter::new(arguments)),
            // Checked at declare; a stored definition that fails the check routes as direct.
            ExchangeKind::Delayed => crate::delayed::delayed_type(arguments)
                .unwrap_or(ExchangeKind::Direct)
                .router(arguments),
        }
    }
}

/// The routing index of one exchange type. `bind` and `unbind` are only called for bindings the
/// `Exchange` has checked to be new or present, so routers may assume each call is meaningful.
pub trait Router: Send + Sync {
    /// Validates a binding's arguments before it is added (headers checks `x-match`).
    fn validate(&self, _key: &str, _args: &FieldTable) -> AmqpResult<()> {
        Ok(())
    }
    /// Adds a binding to the index.
    fn bind(&mut self, dest: &Destination, key: &str, args: &FieldTable);
    /// Removes one binding from the index.
    fn unbind(&mut self, dest: &Destination, key: &str, args: &FieldTable);
    /// Appends the destinations matching a message. Duplicates are allowed; the caller
    /// de-duplicates so that a queue gets one copy.
    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>);
    /// Appends the destinations of a message; types that look at more than its routing key
    /// and headers read the rest of the envelope here.
    fn route_envelope(&self, message: &Envelope<'_>, out: &mut Vec<Destination>) {
        self.route(message.routing_key, message.headers, out);
    }
}

/// A binding as declared: destination, key and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// One exchange: its declaration and its routing index.
pub struct Exchange {
    /// The exchange's name ("" is the default exchange).
    pub name: Arc<str>,
    /// Its type.
    pub kind: ExchangeKind,
    /// Survives restarts.
    pub durable: bool,
    /// Deleted when its last binding (as a source) goes.
    pub auto_delete: bool,
    /// Clients may not publish to it directly.
    pub internal: bool,
    /// Declaration arguments, compared on redeclare.
    pub arguments: FieldTable,
    /// `alternate-exchange`: where unroutable messages go (its own argument, else its
    /// policy's).
    pub alternate: Option<Arc<str>>,
    /// The policies in force on it.
    pub policy: crate::policy::Applied,
    /// An `x-delayed-message` exchange's scheduler.
    pub delayed: Option<crate::delayed::DelayedHandle>,
    /// `x-message-deduplication`: the ids of messages published to it (see [`crate::dedup`]).
    pub dedup: Option<Arc<std::sync::Mutex<crate::dedup::Cache>>>,
    /// Every binding with this exchange as source, grouped by destination for fast removal.
    bindings: HashMap<Destination, Vec<(String, FieldTable)>>,
    /// The type-specific index.
    router: Box<dyn Router>,
}

impl Exchange {
    /// A new exchange with no bindings.
    pub fn new(
        name: Arc<str>,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate = Self::own_alternate(&arguments);
        let router = kind.router(&arguments);
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            policy: Default::default(),
            dedup: None,
            delayed: None,
            bindings: HashMap::new(),
            router,
        }
    }

    fn own_alternate(arguments: &FieldTable) -> Option<Arc<str>> {
        match arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => {
                Some(Arc::from(String::from_utf8_lossy(s.as_bytes()).as_ref()))
            }
            Some(AMQPValue::ShortString(s)) => Some(Arc::from(s.as_str())),
            _ => None,
        }
    }

    /// Puts policies in force: the alternate exchange is its own argument's, else theirs.
    pub fn set_policy(&mut self, applied: crate::policy::Applied) {
        self.alternate =
            Self::own_alternate(&self.arguments).or_else(|| applied.alternate_exchange());
        self.policy = applied;
    }

    /// Adds a binding; binding twice is a no-op. Returns whether it was new.
    pub fn bind(&mut self, dest: Destination, key: &str, args: FieldTable) -> AmqpResult<bool> {
        self.router.validate(key, &args)?;
        let list = self.bindings.entry(dest.clone()).or_default();
        if list.iter().any(|(k, a)| k == key && *a == args) {
            return Ok(false);
        }
        self.router.bind(&dest, key, &args);
        list.push((key.to_owned(), args));
        Ok(true)
    }

    /// Removes a binding. Returns whether it existed.
    pub fn unbind(&mut self, dest: &Destination, key: &str, args: &FieldTable) -> bool {
        let Some(list) = self.bindings.get_mut(dest) else {
            return false;
        };
        let Some(pos) = list.iter().position(|(k, a)| k == key && a == args) else {
            return false;
        };
        let (key, args) = list.swap_remove(pos);
        if list.is_empty() {
            self.bindings.remove(dest);
        }
        self.router.unbind(dest, &key, &args);
        true
    }

    /// Removes every binding to `dest` (the destination was deleted). Returns their keys and
    /// arguments.
    pub fn remove_destination(&mut self, dest: &Destination) -> Vec<(String, FieldTable)> {
        let Some(list) = self.bindings.remove(dest) else {
            return Vec::new();
        };
        for (key, args) in &list {
            self.router.unbind(dest, key, args);
        }
        list
    }

    /// Whether any binding has this exchange as source.
    pub fn has_bindings(&self) -> bool {
        !self.bindings.is_empty()
    }

    /// Every binding with this exchange as source.
    pub fn bindings(&self) -> impl Iterator<Item = Binding> + '_ {
        self.bindings.iter().flat_map(|(dest, list)| {
            list.iter().map(move |(key, args)| Binding {
                destination: dest.clone(),
                routing_key: key.clone(),
                arguments: args.clone(),
            })
        })
    }

    /// Appends the destinations of a message.
    pub fn route(&self, message: &Envelope<'_>, out: &mut Vec<Destination>) {
        self.router.route_envelope(message, out);
    }
}
