//! Queue `x-` arguments, parsed and validated once at declare. A wrong type or value is 406
//! naming the argument, in RabbitMQ's words.

use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable};

use super::QueueRef;
use crate::error::{AmqpError, AmqpResult};

/// What happens when a length limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (dead-letter) the oldest messages.
    #[default]
    DropHead,
    /// Refuse the new message (basic.nack in confirm mode).
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

/// Which returned messages wait before redelivery (RabbitMQ 4.3's delayed retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryType {
    #[default]
    Disabled,
    /// Every returned message.
    All,
    /// Messages nacked or rejected with requeue.
    Failed,
    /// Messages returned without a failure: their channel closed, basic.recover.
    Returned,
}

/// The validated arguments of one queue.
#[derive(Debug, Clone, Default)]
pub struct QueueArgs {
    pub message_ttl: Option<Duration>,
    pub expires: Option<Duration>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub delivery_limit: Option<u64>,
    pub retry_type: RetryType,
    pub retry_min: Duration,
    pub retry_max: Option<Duration>,
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
    /// `x-queue-type: quorum` (see [`QueueKind`](super::kind::QueueKind)).
    pub quorum: bool,
    /// `x-queue-type: stream`.
    pub stream: bool,
    /// A stream's `x-max-age`, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// A stream's `x-stream-max-segment-size-bytes`.
    pub stream_segment_bytes: Option<u64>,
    /// `x-message-deduplication` and its settings (see [`crate::dedup`]).
    pub dedup: Option<crate::dedup::DedupArgs>,
    /// A partition's place in its partitioned stream (`x-stream-partition-order`, 0 for a
    /// stream on its own): member `order % members` of each consumer group reads it.
    pub stream_partition: u64,
}

fn invalid(arg: &str, queue: &QueueRef, why: impl std::fmt::Display) -> AmqpError {
    AmqpError::precondition(format_args!("invalid arg '{arg}' for {queue}: {why}"))
}

fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Float(_) | AMQPValue::Double(_) => "float",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::Void => "void",
        _ => "number",
    }
}

/// An integer argument of any AMQP integer type.
pub fn as_int(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => i128::from(*n),
        AMQPValue::ShortShortUInt(n) => i128::from(*n),
        AMQPValue::ShortInt(n) => i128::from(*n),
        AMQPValue::ShortUInt(n) => i128::from(*n),
        AMQPValue::LongInt(n) => i128::from(*n),
        AMQPValue::LongUInt(n) => i128::from(*n),
        AMQPValue::LongLongInt(n) => i128::from(*n),
        AMQPValue::Timestamp(n) => i128::from(*n),
        _ => return None,
    })
}

/// A string argument (short or long string).
pub fn as_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn int(arg: &str, queue: &QueueRef, v: &AMQPValue, min: i128) -> AmqpResult<u64> {
    // The person reading this needs the first part; RabbitMQ's clients may match the second.
    let n = as_int(v).ok_or_else(|| {
        invalid(
            arg,
            queue,
            format_args!(
                "expected an integer ({{unacceptable_type,{}}})",
                type_name(v)
            ),
        )
    })?;
    if n < min {
        return Err(invalid(arg, queue, format_args!("{{value_negative,{n}}}")));
    }
    u64::try_from(n).map_err(|_| invalid(arg, queue, format_args!("{{value_too_large,{n}}}")))
}

/// RabbitMQ's ceiling for TTLs: ten years in milliseconds.
pub const MAX_TTL_MS: u64 = 315_360_000_000;

fn ttl(arg: &str, queue: &QueueRef, v: &AMQPValue) -> AmqpResult<u64> {
    let ms = int(arg, queue, v, 0)?;
    if ms > MAX_TTL_MS {
        return Err(invalid(
            arg,
            queue,
            format_args!("{{value_too_large,{ms}}}"),
        ));
    }
    Ok(ms)
}

/// The arguments RabbitMQ compares when a queue is redeclared; others are not compared.
pub const COMPARED: &[&str] = &[
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-queue-type",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-delayed-retry-type",
    "x-delayed-retry-min",
    "x-delayed-retry-max",
];

fn string(arg: &str, queue: &QueueRef, v: &AMQPValue) -> AmqpResult<String> {
    as_str(v).ok_or_else(|| {
        invalid(
            arg,
            queue,
            format_args!("{{unacceptable_type,{}}}", type_name(v)),
        )
    })
}

impl QueueArgs {
    /// Parses and validates a queue's arguments. Unknown arguments are kept but ignored, as
    /// RabbitMQ does.
    pub fn parse(table: &FieldTable, queue: &QueueRef) -> AmqpResult<QueueArgs> {
        let mut a = QueueArgs::default();
        for (key, v) in table.inner() {
            let k = key.as_str();
            match k {
                "x-message-ttl" => a.message_ttl = Some(Duration::from_millis(ttl(k, queue, v)?)),
                "x-expires" => {
                    let ms = ttl(k, queue, v)?;
                    if ms == 0 {
                        return Err(invalid(k, queue, "{value_zero,0}"));
                    }
                    a.expires = Some(Duration::from_millis(ms));
                }
                "x-max-length" => a.max_length = Some(int(k, queue, v, 0)?),
                "x-max-length-bytes" => a.max_length_bytes = Some(int(k, queue, v, 0)?),
                "x-overflow" => {
                    a.overflow = match string(k, queue, v)?.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        other => return Err(invalid(k, queue, format_args!("{{invalid_overflow_value,<<\"{other}\">>}}"))),
                    }
                }
                "x-dead-letter-exchange" => a.dead_letter_exchange = Some(string(k, queue, v)?),
                "x-dead-letter-routing-key" => a.dead_letter_routing_key = Some(string(k, queue, v)?),
                "x-delivery-limit" => a.delivery_limit = Some(int(k, queue, v, 0)?),
                "x-delayed-retry-type" => {
                    a.retry_type = match string(k, queue, v)?.as_str() {
                        "disabled" => RetryType::Disabled,
                        "all" => RetryType::All,
                        "failed" => RetryType::Failed,
                        "returned" => RetryType::Returned,
                        other => {
                            return Err(invalid(
                                k,
                                queue,
                                format_args!("'{other}' is not one of disabled, all, failed, returned"),
                            ))
                        }
                    }
                }
                "x-delayed-retry-min" => a.retry_min = Duration::from_millis(int(k, queue, v, 0)?),
                "x-delayed-retry-max" => a.retry_max = Some(Duration::from_millis(int(k, queue, v, 0)?)),
                "x-max-priority" => {
                    let n = int(k, queue, v, 0)?;
                    if n == 0 || n > 255 {
                        return Err(invalid(k, queue, format_args!("{{value_out_of_range,{n}}}, expected 1 to 255")));
                    }
                    a.max_priority = Some(n as u8);
                }
                "x-single-active-consumer" => match v {
                    AMQPValue::Boolean(b) => a.single_active_consumer = *b,
                    other => return Err(invalid(k, queue, format_args!("{{unacceptable_type,{}}}", type_name(other)))),
                },
                "x-queue-type" => match string(k, queue, v)?.as_str() {
                    "classic" => a.quorum = false,
                    "quorum" => a.quorum = true,
                    "stream" => a.stream = true,
                    other => {
                        return Err(invalid(
                            k,
                            queue,
                            format_args!("queue type '{other}' is not supported by Warren (classic, quorum and stream are)"),
                        ))
                    }
                },
                _ => {}
            }
        }
        if a.stream {
            // Read only on streams, as RabbitMQ (a classic queue ignores them).
            if let Some(v) = table.inner().get("x-max-age") {
                let s = string("x-max-age", queue, v)?;
                a.max_age_ms = Some(crate::stream::parse_interval(&s).ok_or_else(|| {
                    invalid(
                        "x-max-age",
                        queue,
                        format_args!("'{s}' is not a number followed by one of Y, M, D, h, m, s"),
                    )
                })?);
            }
            if let Some(v) = table.inner().get("x-stream-max-segment-size-bytes") {
                let n = int("x-stream-max-segment-size-bytes", queue, v, 1)?;
                a.stream_segment_bytes = Some(n);
            }
            if let Some(v) = table.inner().get("x-stream-partition-order") {
                a.stream_partition = int("x-stream-partition-order", queue, v, 0)?;
            }
        }
        a.dedup = crate::dedup::DedupArgs::parse(table, queue)?;
        if a.dead_letter_routing_key.is_some() && a.dead_letter_exchange.is_none() {
            return Err(AmqpError::precondition(format_args!(
                "invalid arg 'x-dead-letter-routing-key' for {queue}: no_dead_letter_exchange"
            )));
        }
        Ok(a)
    }

    /// The delay before a returned message is redelivered, for the `delivery_count`-th return.
    pub fn retry_delay(&self, failed: bool, delivery_count: u32) -> Option<Duration> {
        let applies = match self.retry_type {
            RetryType::Disabled => false,
            RetryType::All => true,
            RetryType::Failed => failed,
            RetryType::Returned => !failed,
        };
        if !applies {
            return None;
        }
        let d = self.retry_min.saturating_mul(delivery_count.max(1));
        let d = self.retry_max.map_or(d, |max| d.min(max));
        (!d.is_zero()).then_some(d)
    }

    /// A length limit with `x-overflow` reject-publish(-dlx): publishes may be refused.
    pub fn rejects_publishes(&self) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }

    /// Messages carry `x-delivery-count` (quorum-queue features are in use).
    pub fn counts_deliveries(&self) -> bool {
        self.delivery_limit.is_some() || self.retry_type != RetryType::Disabled
    }
}

/// Parses a message's `expiration` property (milliseconds, as a decimal string).
pub fn parse_expiration(s: &str) -> AmqpResult<u64> {
    if let Some(rest) = s.strip_prefix('-') {
        if rest.parse::<u64>().is_ok() {
            return Err(AmqpError::precondition(format_args!(
                "invalid expiration '{s}': {{value_negative,{s}}}"
            )));
        }
    }
    let ms = s.parse::<u64>().map_err(|_| {
        AmqpError::precondition(format_args!("invalid expiration '{s}': no_integer"))
    })?;
    if ms > MAX_TTL_MS {
        return Err(AmqpError::precondition(format_args!(
            "invalid expiration '{s}': {{value_too_large,{ms}}}"
        )));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(k.into(), v);
        }
        t
    }

    #[test]
    fn integers_of_any_width_are_accepted() {
        let a = QueueArgs::parse(
            &table(vec![
                ("x-max-length", AMQPValue::ShortShortUInt(5)),
                ("x-message-ttl", AMQPValue::LongLongInt(1000)),
            ]),
            &QueueRef::new("/", "q"),
        )
        .unwrap();
        assert_eq!(a.max_length, Some(5));
        assert_eq!(a.message_ttl, Some(Duration::from_secs(1)));
    }

    #[test]
    fn wrong_types_and_values_name_the_argument() {
        for (k, v) in [
            ("x-max-length", AMQPValue::LongString("ten".into())),
            ("x-message-ttl", AMQPValue::LongInt(-1)),
            ("x-overflow", AMQPValue::LongString("sometimes".into())),
            ("x-max-priority", AMQPValue::LongInt(300)),
            (
                "x-single-active-consumer",
                AMQPValue::LongString("yes".into()),
            ),
        ] {
            let err = QueueArgs::parse(&table(vec![(k, v)]), &QueueRef::new("/", "q")).unwrap_err();
            assert_eq!(err.code.code(), 406);
            assert!(err.text.contains(k), "{}", err.text);
        }
    }

    #[test]
    fn retry_delay_is_linear_and_capped() {
        let a = QueueArgs {
            retry_type: RetryType::Failed,
            retry_min: Duration::from_millis(100),
            retry_max: Some(Duration::from_millis(250)),
            ..Default::default()
        };
        assert_eq!(a.retry_delay(true, 1), Some(Duration::from_millis(100)));
        assert_eq!(a.retry_delay(true, 2), Some(Duration::from_millis(200)));
        assert_eq!(a.retry_delay(true, 5), Some(Duration::from_millis(250)));
        assert_eq!(a.retry_delay(false, 5), None);
    }

    #[test]
    fn expiration_must_be_a_non_negative_integer() {
        assert_eq!(parse_expiration("1500").unwrap(), 1500);
        assert!(parse_expiration("-5")
            .unwrap_err()
            .text
            .contains("value_negative"));
        assert!(parse_expiration("soon")
            .unwrap_err()
            .text
            .contains("no_integer"));
    }
}
