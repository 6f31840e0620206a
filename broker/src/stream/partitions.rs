//! Partitioned streams (Kafka's topic and partitions; RabbitMQ's super streams): streams
//! `NAME-0` .. `NAME-(N-1)` behind an `x-consistent-hash` exchange `NAME`, so that one key (the
//! routing key, or the header the exchange's `hash-header` names) always lands in one
//! partition, in order. Each stream carries `x-stream-partition-order: i`, which consumer groups
//! use to share the partitions among their members (see the stream actor's `rebalance`).
//!
//! Declared over AMQP by whoever asks (the CLI, the management API as the requesting user), so
//! each step is checked as the same declaration from a client would be.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

/// The most partitions one stream may have (RabbitMQ also bounds them).
pub const MAX_PARTITIONS: u32 = 1000;

/// The name of partition `i` of `name`.
pub fn partition_name(name: &str, i: u32) -> String {
    format!("{name}-{i}")
}

/// Declares partitioned stream `name` with `partitions` partitions: the exchange (durable,
/// `x-consistent-hash`, with `exchange_args` such as `hash-header`), each partition stream (with
/// `stream_args`: retention), and a binding of weight 1 from the exchange to each. Declaring it
/// again with more partitions adds the new ones; a consistent hash moves only the keys the new
/// partitions take.
pub async fn declare(
    channel: &lapin::Channel,
    name: &str,
    partitions: u32,
    stream_args: &FieldTable,
    exchange_args: FieldTable,
) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Custom("x-consistent-hash".into()),
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            exchange_args,
        )
        .await?;
    for i in 0..partitions {
        let queue = partition_name(name, i);
        let mut args = stream_args.clone();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("stream".into()),
        );
        args.insert(
            "x-stream-partition-order".into(),
            AMQPValue::LongLongInt(i64::from(i)),
        );
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                name.into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
