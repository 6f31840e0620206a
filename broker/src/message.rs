//! A published message as the broker holds it: shared by every queue it was routed to.

use amq_protocol::protocol::basic::parse_properties;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, ShortString};
use bytes::Bytes;

use crate::protocol::encode_properties;
use crate::queue::dead_letter::DeathLog;

/// One published message. Queues hold it behind an `Arc`, so routing to many queues copies
/// nothing; the body is a `Bytes` slice of what was read from the publisher's socket. Only the
/// encoded properties are kept (with the few fields queues need on every message): the parsed
/// form is ~340 bytes, and queued messages should cost as little memory as possible.
#[derive(Debug, Clone)]
pub struct Message {
    /// The exchange it was published to (sent back in basic.deliver).
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// The properties as encoded by the publisher, re-sent verbatim on every delivery.
    pub raw_properties: Bytes,
    /// delivery-mode 2.
    persistent: bool,
    /// The `priority` property (0 when absent).
    priority: u8,
    /// The body.
    pub body: Bytes,
    /// The `expiration` property, parsed once at publish (milliseconds).
    pub expiration_ms: Option<u64>,
    /// Dead-lettering history written by the broker (never taken from a publisher).
    pub death: Option<Box<DeathLog>>,
}

impl Message {
    /// A message as published; `properties` are `raw_properties` parsed.
    pub fn new(
        exchange: ShortString,
        routing_key: ShortString,
        properties: &BasicProperties,
        raw_properties: Bytes,
        body: Bytes,
    ) -> Self {
        let expiration_ms = properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse().ok());
        Message {
            exchange,
            routing_key,
            raw_properties,
            persistent: *properties.delivery_mode() == Some(2),
            priority: properties.priority().unwrap_or(0),
            body,
            expiration_ms,
            death: None,
        }
    }

    /// The properties, parsed from their encoded form (dead-lettering, rewriting headers).
    pub fn properties(&self) -> BasicProperties {
        parse_properties(&self.raw_properties[..])
            .map(|(_, p)| p)
            .unwrap_or_default()
    }

    /// delivery-mode 2: the publisher asked for the message to survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Body size, which is what RabbitMQ counts for byte limits.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The `priority` property.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// A copy with one header set (re-encodes the properties).
    pub fn with_header(&self, key: &str, value: AMQPValue) -> Message {
        let properties = self.properties();
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(key.into(), value);
        let properties = properties.with_headers(headers);
        Message {
            raw_properties: encode_properties(&properties),
            ..self.clone()
        }
    }
}

/// The properties without `expiration` (amq-protocol has setters but no way to unset).
pub fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! copy {
        ($get:ident, $set:ident) => {
            if let Some(v) = p.$get().clone() {
                out = out.$set(v);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(headers, with_headers);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_expiration_keeps_everything_else() {
        let p = BasicProperties::default()
            .with_expiration("5".into())
            .with_message_id("m".into())
            .with_type("t".into())
            .with_delivery_mode(2);
        let q = without_expiration(&p);
        assert_eq!(*q.expiration(), None);
        assert_eq!(q.message_id().as_ref().map(|s| s.as_str()), Some("m"));
        assert_eq!(q.kind().as_ref().map(|s| s.as_str()), Some("t"));
        assert_eq!(*q.delivery_mode(), Some(2));
    }
}
