//! Helpers for the tests of queue arguments (dead-lettering, TTL, length and delivery limits,
//! delayed retry, priorities): argument tables, queues declared with them, reading the
//! `x-death` history of a delivery, and telling Warren from the RabbitMQ we compare with.
#![allow(dead_code)]

use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Channel};

use crate::common::{within, TestBroker};

/// Whether the tests run against the embedded Warren (not a `WARREN_TEST_URL` broker). Checks
/// of what only Warren and RabbitMQ 3.13+ do are skipped on the RabbitMQ 3.10 we compare with.
pub fn on_warren(broker: &TestBroker) -> bool {
    broker.broker.is_some()
}

/// A long string, as clients send string arguments.
pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A 32-bit signed integer, as most clients send numeric arguments.
pub fn int(n: i32) -> AMQPValue {
    AMQPValue::LongInt(n)
}

/// An argument table from (name, value) pairs.
pub fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Dead-lettering to the default exchange with `target` as routing key: the dead-lettered
/// message goes straight to the queue named `target`.
pub fn dlx_to(target: &str) -> Vec<(&'static str, AMQPValue)> {
    vec![
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(target)),
    ]
}

/// Declares an exclusive, non-durable queue with `args` and returns its name.
pub async fn declare_with(ch: &Channel, name: &str, args: &[(&str, AMQPValue)]) -> String {
    declare_opts(
        ch,
        name,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        args,
    )
    .await
}

/// Declares a queue with the given options and `args`, and returns its name.
pub async fn declare_opts(
    ch: &Channel,
    name: &str,
    opts: QueueDeclareOptions,
    args: &[(&str, AMQPValue)],
) -> String {
    let q = within(
        "queue.declare",
        ch.queue_declare(name.into(), opts, table(args)),
    )
    .await
    .unwrap_or_else(|e| panic!("queue.declare {name}: {e}"));
    q.name().as_str().to_owned()
}

/// Deletes a queue (for the shared, non-exclusive queues some tests need).
pub async fn delete_queue(ch: &Channel, name: &str) {
    let _ = within(
        "queue.delete",
        ch.queue_delete(name.into(), QueueDeleteOptions::default()),
    )
    .await;
}

/// basic.qos prefetch count for the channel's next consumers.
pub async fn prefetch(ch: &Channel, n: u16) {
    within("basic.qos", ch.basic_qos(n, BasicQosOptions::default()))
        .await
        .expect("basic.qos");
}

/// basic.get with manual ack; `None` when the queue is empty.
pub async fn get(ch: &Channel, queue: &str) -> Option<Delivery> {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .expect("basic.get")
    .map(|m| m.delivery)
}

/// Properties with one header.
pub fn with_header(props: BasicProperties, key: &str, value: AMQPValue) -> BasicProperties {
    let mut h = props.headers().clone().unwrap_or_default();
    h.insert(key.into(), value);
    props.with_headers(h)
}

/// A header of a delivery.
pub fn header(d: &Delivery, key: &str) -> Option<AMQPValue> {
    d.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key).cloned())
}

/// A string value (long or short string); panics on any other type.
pub fn string(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// A string header of a delivery, panicking if it is missing or not a string.
pub fn header_str(d: &Delivery, key: &str) -> String {
    string(&header(d, key).unwrap_or_else(|| panic!("no header {key} in {:?}", d.properties)))
}

/// An integer of any AMQP integer type.
pub fn integer(v: &AMQPValue) -> i64 {
    match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// The `x-delivery-count` header, if any.
pub fn delivery_count(d: &Delivery) -> Option<i64> {
    header(d, "x-delivery-count").map(|v| integer(&v))
}

/// One `x-death` entry, read back as a client sees it.
#[derive(Debug, Clone)]
pub struct Death {
    /// The whole table, to check names and types.
    pub table: FieldTable,
}

impl Death {
    fn get(&self, key: &str) -> &AMQPValue {
        self.table
            .inner()
            .get(key)
            .unwrap_or_else(|| panic!("x-death entry without '{key}': {:?}", self.table))
    }

    pub fn queue(&self) -> String {
        string(self.get("queue"))
    }

    pub fn reason(&self) -> String {
        string(self.get("reason"))
    }

    pub fn exchange(&self) -> String {
        string(self.get("exchange"))
    }

    /// `count`, which must be a long (signed 64-bit), as RabbitMQ writes it.
    pub fn count(&self) -> i64 {
        match self.get("count") {
            AMQPValue::LongLongInt(n) => *n,
            other => panic!("x-death count must be a long, got {other:?}"),
        }
    }

    /// `time`, which must be an AMQP timestamp (seconds).
    pub fn time(&self) -> u64 {
        match self.get("time") {
            AMQPValue::Timestamp(t) => *t,
            other => panic!("x-death time must be a timestamp, got {other:?}"),
        }
    }

    /// `routing-keys`, which must be an array of strings.
    pub fn routing_keys(&self) -> Vec<String> {
        match self.get("routing-keys") {
            AMQPValue::FieldArray(a) => a.as_slice().iter().map(string).collect(),
            other => panic!("x-death routing-keys must be an array, got {other:?}"),
        }
    }

    pub fn original_expiration(&self) -> Option<String> {
        self.table.inner().get("original-expiration").map(string)
    }
}

/// The `x-death` array of a delivery (empty if there is none), most recent first.
pub fn x_death(d: &Delivery) -> Vec<Death> {
    match header(d, "x-death") {
        None => Vec::new(),
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => Death { table: t.clone() },
                other => panic!("x-death entries must be tables, got {other:?}"),
            })
            .collect(),
        Some(other) => panic!("x-death must be an array, got {other:?}"),
    }
}

/// The (queue, reason, count) of each `x-death` entry, most recent first.
pub fn deaths(d: &Delivery) -> Vec<(String, String, i64)> {
    x_death(d)
        .iter()
        .map(|e| (e.queue(), e.reason(), e.count()))
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
