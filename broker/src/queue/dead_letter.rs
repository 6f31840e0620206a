//! Dead-lettering: the message a queue republishes to its dead-letter exchange, with the
//! `x-death` history exactly as RabbitMQ 3.13+ writes it, and cycle detection.
//!
//! The history is kept inside the message (`Message::death`) as the broker wrote it; an
//! `x-death` header that a publisher sent is not trusted: it is replaced, never counted.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, ShortString};

use crate::message::{without_expiration, Message};
use crate::protocol::encode_properties;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL ran out.
    Expired,
    /// A length limit dropped it.
    Maxlen,
    /// It was returned more times than `x-delivery-limit`.
    DeliveryLimit,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 4] = [
        Reason::Rejected,
        Reason::Expired,
        Reason::Maxlen,
        Reason::DeliveryLimit,
    ];

    /// Its place in [`Reason::ALL`], for counters kept per reason.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name in `x-death`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }

    fn parse(s: &str) -> Option<Reason> {
        Some(match s {
            "rejected" => Reason::Rejected,
            "expired" => Reason::Expired,
            "maxlen" => Reason::Maxlen,
            "delivery_limit" => Reason::DeliveryLimit,
            _ => return None,
        })
    }
}

/// One `x-death` entry: a (queue, reason) pair and how often it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Death {
    pub queue: String,
    pub reason: Reason,
    pub count: i64,
    /// Unix seconds of the first time.
    pub time: u64,
    pub exchange: String,
    pub routing_keys: Vec<String>,
    pub original_expiration: Option<String>,
}

/// A message's dead-lettering history.
#[derive(Debug, Clone, PartialEq)]
pub struct DeathLog {
    /// Most recent first, one entry per (queue, reason).
    pub deaths: Vec<Death>,
    /// `x-first-death-queue`, `-reason`, `-exchange`: set once, never changed.
    pub first: (String, Reason, String),
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

impl Death {
    fn to_table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("count".into(), AMQPValue::LongLongInt(self.count));
        t.insert("reason".into(), long(self.reason.as_str()));
        t.insert("queue".into(), long(&self.queue));
        t.insert("time".into(), AMQPValue::Timestamp(self.time));
        t.insert("exchange".into(), long(&self.exchange));
        let keys: Vec<AMQPValue> = self.routing_keys.iter().map(|k| long(k)).collect();
        t.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(keys)),
        );
        if let Some(e) = &self.original_expiration {
            t.insert("original-expiration".into(), long(e));
        }
        t
    }

    fn from_table(t: &FieldTable) -> Option<Death> {
        let m = t.inner();
        let s = |k: &str| m.get(k).and_then(super::args::as_str);
        Some(Death {
            queue: s("queue")?,
            reason: Reason::parse(&s("reason")?)?,
            count: m.get("count").and_then(super::args::as_int).unwrap_or(1) as i64,
            time: match m.get("time") {
                Some(AMQPValue::Timestamp(t)) => *t,
                _ => 0,
            },
            exchange: s("exchange").unwrap_or_default(),
            routing_keys: match m.get("routing-keys") {
                Some(AMQPValue::FieldArray(a)) => a
                    .as_slice()
                    .iter()
                    .filter_map(super::args::as_str)
                    .collect(),
                _ => Vec::new(),
            },
            original_expiration: s("original-expiration"),
        })
    }
}

impl DeathLog {
    /// Reads back a history the broker itself wrote (messages recovered from disk).
    pub fn from_headers(headers: &FieldTable) -> Option<DeathLog> {
        let h = headers.inner();
        let deaths: Vec<Death> = match h.get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .filter_map(|v| match v {
                    AMQPValue::FieldTable(t) => Death::from_table(t),
                    _ => None,
                })
                .collect(),
            _ => return None,
        };
        let s = |k: &str| h.get(k).and_then(super::args::as_str);
        let first = (
            s("x-first-death-queue")?,
            Reason::parse(&s("x-first-death-reason")?)?,
            s("x-first-death-exchange").unwrap_or_default(),
        );
        Some(DeathLog { deaths, first })
    }

    /// Whether delivering to `target` closes a dead-letter cycle with no rejection in it, in
    /// which case RabbitMQ drops the message rather than loop forever.
    pub fn is_cycle(&self, target: &str) -> bool {
        for d in &self.deaths {
            if d.reason == Reason::Rejected {
                return false;
            }
            if d.queue == target {
                return true;
            }
        }
        false
    }
}

/// The message that `queue` republishes to `dlx` after a death for `reason` at `now` (unix
/// seconds): the history updated (the (queue, reason) entry counted and moved to the front),
/// the `x-first-death-*` and `x-last-death-*` headers set, the expiration removed (kept as
/// `original-expiration`), the routing key replaced if the queue has a dead-letter routing key.
pub fn dead_lettered(
    msg: &Message,
    queue: &str,
    reason: Reason,
    dlx: &str,
    routing_key: Option<&str>,
    now: u64,
) -> Message {
    let mut log = msg.death.as_deref().cloned();
    let props = msg.properties();
    let expiration = props.expiration().as_ref().map(|e| e.as_str().to_owned());
    let entry = Death {
        queue: queue.to_owned(),
        reason,
        count: 1,
        time: now,
        exchange: msg.exchange().to_owned(),
        routing_keys: vec![msg.routing_key().to_owned()],
        original_expiration: expiration,
    };
    match &mut log {
        Some(log) => match log
            .deaths
            .iter()
            .position(|d| d.queue == queue && d.reason == reason)
        {
            Some(pos) => {
                let mut d = log.deaths.remove(pos);
                d.count += 1;
                log.deaths.insert(0, d);
            }
            None => log.deaths.insert(0, entry),
        },
        None => {
            log = Some(DeathLog {
                first: (queue.to_owned(), reason, msg.exchange().to_owned()),
                deaths: vec![entry],
            })
        }
    }
    let log = log.expect("set above");
    let mut headers = props.headers().clone().unwrap_or_default();
    let deaths: Vec<AMQPValue> = log
        .deaths
        .iter()
        .map(|d| AMQPValue::FieldTable(d.to_table()))
        .collect();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    headers.insert("x-first-death-queue".into(), long(&log.first.0));
    headers.insert("x-first-death-reason".into(), long(log.first.1.as_str()));
    headers.insert("x-first-death-exchange".into(), long(&log.first.2));
    headers.insert("x-last-death-queue".into(), long(queue));
    headers.insert("x-last-death-reason".into(), long(reason.as_str()));
    headers.insert("x-last-death-exchange".into(), long(msg.exchange()));
    let properties = without_expiration(&props.with_headers(headers));
    let mut m = Message::new(
        ShortString::from(dlx.to_owned()),
        routing_key.map_or_else(
            || ShortString::from(msg.routing_key().to_owned()),
            |k| ShortString::from(k.to_owned()),
        ),
        &properties,
        encode_properties(&properties),
        msg.body_bytes(),
    );
    m.death = Some(Box::new(log));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;

    fn msg() -> Message {
        let props = BasicProperties::default().with_expiration("60000".into());
        Message::new(
            "orders".into(),
            "new".into(),
            &props,
            encode_properties(&props),
            bytes::Bytes::from_static(b"x"),
        )
    }

    fn entry(m: &Message, i: usize) -> FieldTable {
        match &m.properties().headers().as_ref().unwrap().inner()["x-death"] {
            AMQPValue::FieldArray(a) => match &a.as_slice()[i] {
                AMQPValue::FieldTable(t) => t.clone(),
                _ => panic!(),
            },
            _ => panic!(),
        }
    }

    #[test]
    fn first_death_writes_rabbitmq_headers() {
        let m = dead_lettered(&msg(), "work", Reason::Rejected, "dlx", None, 1_700_000_000);
        let h = m.properties().headers().clone().unwrap();
        let h = h.inner();
        assert_eq!(h["x-first-death-queue"], long("work"));
        assert_eq!(h["x-first-death-reason"], long("rejected"));
        assert_eq!(h["x-first-death-exchange"], long("orders"));
        assert_eq!(h["x-last-death-queue"], long("work"));
        let e = entry(&m, 0);
        let e = e.inner();
        assert_eq!(e["count"], AMQPValue::LongLongInt(1));
        assert_eq!(e["reason"], long("rejected"));
        assert_eq!(e["queue"], long("work"));
        assert_eq!(e["time"], AMQPValue::Timestamp(1_700_000_000));
        assert_eq!(e["exchange"], long("orders"));
        assert_eq!(
            e["routing-keys"],
            AMQPValue::FieldArray(vec![long("new")].into())
        );
        assert_eq!(e["original-expiration"], long("60000"));
        assert_eq!(*m.properties().expiration(), None, "expiration is removed");
        assert_eq!(m.exchange(), "dlx");
    }

    #[test]
    fn repeated_deaths_count_and_move_to_the_front() {
        let a = dead_lettered(&msg(), "work", Reason::Rejected, "dlx", Some("retry"), 1);
        let b = dead_lettered(&a, "retry", Reason::Expired, "", Some("work"), 2);
        let c = dead_lettered(&b, "work", Reason::Rejected, "dlx", Some("retry"), 3);
        let first = entry(&c, 0);
        assert_eq!(first.inner()["queue"], long("work"));
        assert_eq!(first.inner()["count"], AMQPValue::LongLongInt(2));
        assert_eq!(
            first.inner()["time"],
            AMQPValue::Timestamp(1),
            "time of the first death"
        );
        assert_eq!(entry(&c, 1).inner()["queue"], long("retry"));
        let h = c.properties().headers().clone().unwrap();
        assert_eq!(h.inner()["x-first-death-reason"], long("rejected"));
        assert_eq!(h.inner()["x-last-death-queue"], long("work"));
        assert_eq!(c.routing_key(), "retry");
        assert_eq!(DeathLog::from_headers(&h).as_ref(), c.death.as_deref());
    }

    #[test]
    fn a_cycle_without_rejection_is_detected() {
        let a = dead_lettered(&msg(), "q1", Reason::Expired, "", None, 1);
        assert!(a.death.as_ref().unwrap().is_cycle("q1"));
        assert!(!a.death.as_ref().unwrap().is_cycle("q2"));
        let b = dead_lettered(&msg(), "q1", Reason::Rejected, "", None, 1);
        assert!(!b.death.as_ref().unwrap().is_cycle("q1"));
    }

    #[test]
    fn a_publishers_x_death_is_not_counted() {
        let mut forged = FieldTable::default();
        let mut e = FieldTable::default();
        e.insert("queue".into(), long("work"));
        e.insert("reason".into(), long("rejected"));
        e.insert("count".into(), AMQPValue::LongLongInt(99));
        forged.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(e)].into()),
        );
        let props = msg().properties().with_headers(forged);
        let m = Message::new(
            "orders".into(),
            "new".into(),
            &props,
            encode_properties(&props),
            bytes::Bytes::from_static(b"x"),
        );
        let d = dead_lettered(&m, "work", Reason::Rejected, "dlx", None, 1);
        assert_eq!(entry(&d, 0).inner()["count"], AMQPValue::LongLongInt(1));
    }
}
