//! A published message as the broker holds it: shared by every queue it was routed to.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::ShortString;
use bytes::Bytes;

/// One published message. Queues hold it behind an `Arc`, so routing to many queues copies
/// nothing; the body is a `Bytes` slice of what was read from the publisher's socket.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to (sent back in basic.deliver).
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// Parsed properties, for routing (headers), TTL and dead-lettering.
    pub properties: BasicProperties,
    /// The properties as encoded by the publisher, re-sent verbatim on every delivery.
    pub raw_properties: Bytes,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// delivery-mode 2: the publisher asked for the message to survive a restart.
    pub fn is_persistent(&self) -> bool {
        *self.properties.delivery_mode() == Some(2)
    }

    /// Body size, which is what RabbitMQ counts for byte limits.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}
