//! A published message as the broker holds it: shared by every queue it was routed to.

use amq_protocol::protocol::basic::parse_properties;
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, ShortString};
use bytes::Bytes;

use crate::protocol::encode_properties;
use crate::queue::dead_letter::DeathLog;

/// One published message. Queues hold it behind an `Arc`, so routing to many queues copies
/// nothing. The exchange, routing key, encoded properties and (for bodies up to
/// [`INLINE_BODY`] bytes) the body share one exact allocation; a larger body stays the
/// `Bytes` slice of the publisher's read buffer it arrived in, written to consumers without a
/// copy. Only the encoded properties are kept, with the few fields queues need on every
/// message: the parsed form is ~340 bytes, and queued messages should cost little memory.
#[derive(Debug, Clone)]
pub struct Message {
    /// Exchange, routing key, properties and, when `large_body` is `None`, the body.
    data: Bytes,
    /// Length of the exchange name at the start of `data`.
    x_len: u8,
    /// Length of the routing key after it.
    rk_len: u8,
    /// Length of the encoded properties after that.
    props_len: u32,
    /// A body kept out of `data`.
    large_body: Option<Bytes>,
    /// delivery-mode 2.
    persistent: bool,
    /// The `priority` property (0 when absent).
    priority: u8,
    /// The `expiration` property, parsed once at publish (milliseconds).
    pub expiration_ms: Option<u64>,
    /// Dead-lettering history written by the broker (never taken from a publisher).
    pub death: Option<Box<DeathLog>>,
}

/// Bodies up to this size are copied next to the message's other fields; larger ones are
/// shared with the buffer they were read into.
pub const INLINE_BODY: usize = 4096;

/// Exchange names and routing keys are short strings: at most 255 bytes.
fn short(s: &[u8]) -> &[u8] {
    &s[..s.len().min(255)]
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
        Message::from_parts(
            exchange.as_str().as_bytes(),
            routing_key.as_str().as_bytes(),
            *properties.delivery_mode() == Some(2),
            properties.priority().unwrap_or(0),
            expiration_ms,
            &raw_properties,
            std::slice::from_ref(&body),
        )
    }

    /// A message from its wire parts: exchange and routing key (UTF-8, as the decoder checked),
    /// the few property fields the broker uses, the encoded properties, and the body as the
    /// frames it arrived in.
    pub fn from_parts(
        exchange: &[u8],
        routing_key: &[u8],
        persistent: bool,
        priority: u8,
        expiration_ms: Option<u64>,
        raw_properties: &[u8],
        body: &[Bytes],
    ) -> Self {
        let body_len: usize = body.iter().map(|b| b.len()).sum();
        let large_body = match body {
            _ if body_len <= INLINE_BODY => None,
            [one] => Some(one.clone()),
            parts => {
                let mut all = Vec::with_capacity(body_len);
                parts.iter().for_each(|b| all.extend_from_slice(b));
                Some(Bytes::from(all))
            }
        };
        let inline: &[Bytes] = if large_body.is_some() { &[] } else { body };
        let mut m = Message::build(exchange, routing_key, raw_properties, inline, large_body);
        m.persistent = persistent;
        m.priority = priority;
        m.expiration_ms = expiration_ms;
        m
    }

    /// A message from borrowed parts (read back from a packed or stored record).
    pub fn from_slices(
        exchange: &[u8],
        routing_key: &[u8],
        persistent: bool,
        priority: u8,
        expiration_ms: Option<u64>,
        raw_properties: &[u8],
        body: &[u8],
    ) -> Self {
        let (inline, large_body) = match body.len() <= INLINE_BODY {
            true => (body, None),
            false => (&[][..], Some(Bytes::copy_from_slice(body))),
        };
        let mut m = Message::build(
            exchange,
            routing_key,
            raw_properties,
            std::slice::from_ref(&inline),
            large_body,
        );
        m.persistent = persistent;
        m.priority = priority;
        m.expiration_ms = expiration_ms;
        m
    }

    /// The exchange, routing key, properties and inline body parts in one exact allocation.
    fn build<B: AsRef<[u8]>>(
        exchange: &[u8],
        routing_key: &[u8],
        raw_properties: &[u8],
        inline_body: &[B],
        large_body: Option<Bytes>,
    ) -> Self {
        let (exchange, routing_key) = (short(exchange), short(routing_key));
        let inline_len: usize = inline_body.iter().map(|b| b.as_ref().len()).sum();
        // Exact capacity: `Bytes::from` a full Vec takes it over without another allocation.
        let mut data = Vec::with_capacity(
            exchange.len() + routing_key.len() + raw_properties.len() + inline_len,
        );
        data.extend_from_slice(exchange);
        data.extend_from_slice(routing_key);
        data.extend_from_slice(raw_properties);
        inline_body
            .iter()
            .for_each(|b| data.extend_from_slice(b.as_ref()));
        Message {
            data: Bytes::from(data),
            x_len: exchange.len() as u8,
            rk_len: routing_key.len() as u8,
            props_len: raw_properties.len() as u32,
            large_body,
            persistent: false,
            priority: 0,
            expiration_ms: None,
            death: None,
        }
    }

    /// Sets the dead-lettering history from the `x-death` header: for a message the broker
    /// itself stored (a publisher's `x-death` is never trusted).
    pub fn restore_death(&mut self) {
        self.death = self
            .properties()
            .headers()
            .as_ref()
            .and_then(DeathLog::from_headers)
            .map(Box::new);
    }

    fn rk_start(&self) -> usize {
        usize::from(self.x_len)
    }

    fn props_start(&self) -> usize {
        usize::from(self.x_len) + usize::from(self.rk_len)
    }

    /// The exchange it was published to, as bytes (sent back in basic.deliver).
    pub fn exchange_bytes(&self) -> &[u8] {
        &self.data[..self.rk_start()]
    }

    /// The routing key it was published with, as bytes.
    pub fn routing_key_bytes(&self) -> &[u8] {
        &self.data[self.rk_start()..self.props_start()]
    }

    /// The exchange it was published to.
    pub fn exchange(&self) -> &str {
        std::str::from_utf8(self.exchange_bytes()).unwrap_or_default()
    }

    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        std::str::from_utf8(self.routing_key_bytes()).unwrap_or_default()
    }

    /// The properties as encoded by the publisher, re-sent verbatim on every delivery.
    pub fn raw_properties(&self) -> &[u8] {
        let at = self.props_start();
        &self.data[at..at + self.props_len as usize]
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match &self.large_body {
            Some(b) => b,
            None => &self.data[self.props_start() + self.props_len as usize..],
        }
    }

    /// A body kept apart from the other fields (large bodies), to be written without a copy.
    pub fn shared_body(&self) -> Option<&Bytes> {
        self.large_body.as_ref()
    }

    /// The body as an owned `Bytes` (a copy for small bodies).
    pub fn body_bytes(&self) -> Bytes {
        match &self.large_body {
            Some(b) => b.clone(),
            None => Bytes::copy_from_slice(self.body()),
        }
    }

    /// The properties, parsed from their encoded form (dead-lettering, rewriting headers).
    /// Properties nested too deeply (never accepted from a client; a damaged record read back
    /// from disk could hold them) read as empty rather than recursing without bound.
    pub fn properties(&self) -> BasicProperties {
        if crate::protocol::nesting::check_properties(self.raw_properties()).is_err() {
            return BasicProperties::default();
        }
        parse_properties(self.raw_properties())
            .map(|(_, p)| p)
            .unwrap_or_default()
    }

    /// delivery-mode 2: the publisher asked for the message to survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Body size, which is what RabbitMQ counts for byte limits.
    pub fn body_len(&self) -> usize {
        self.body().len()
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
        let mut m = Message::from_parts(
            self.exchange_bytes(),
            self.routing_key_bytes(),
            self.persistent,
            self.priority,
            self.expiration_ms,
            &encode_properties(&properties),
            &[self.body_bytes()],
        );
        m.death = self.death.clone();
        m
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
