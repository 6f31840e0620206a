//! Tutorial 3, "Publish/Subscribe": sending messages to many consumers at once.
//!
//! An emitter (emit_log.rs) publishes log lines to the fanout exchange `logs`. Two
//! subscribers (receive_logs.rs), each on its own connection, declare a
//! server-named exclusive queue (empty name; the broker picks one), bind it to
//! `logs` and consume. A fanout exchange ignores the routing key, so every
//! subscriber gets every message. When a subscriber's connection closes, its
//! exclusive queue is deleted; this example checks that too. It exits 0 when all
//! of that happened, non-zero on an error or after a 30 s timeout.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default):
//!
//! ```text
//! warren serve &
//! cargo run --example publish_subscribe                       # emits "info: Hello World!"
//! cargo run --example publish_subscribe -- "first line" "second line"
//! ```

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ErrorKind, ExchangeKind};

type Error = Box<dyn std::error::Error + Send + Sync>;

const EXCHANGE: &str = "logs";
const SUBSCRIBERS: usize = 2;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("publish_subscribe: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("publish_subscribe: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("publish_subscribe: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let mut messages: Vec<String> = std::env::args().skip(1).collect();
    if messages.is_empty() {
        messages.push("info: Hello World!".into());
    }
    let url = amqp_url();
    println!("connecting to {url}");

    // receive_logs: each subscriber gets its own fresh, empty, exclusive queue.
    let mut subscribers = Vec::new();
    for id in 1..=SUBSCRIBERS {
        let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let queue = channel
            .queue_declare(
                "".into(), // let the server name it
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue_name = queue.name().as_str().to_string();
        if queue_name.is_empty() {
            return Err("the server returned an empty name for a server-named queue".into());
        }
        channel
            .queue_bind(
                queue_name.as_str().into(),
                EXCHANGE.into(),
                "".into(), // ignored by a fanout exchange
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue_name.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        println!(" [*] subscriber {id} waiting for logs on server-named queue '{queue_name}'");
        let expected = messages.len();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < expected {
                match consumer.next().await {
                    Some(Ok(delivery)) => {
                        let body = String::from_utf8_lossy(&delivery.data).into_owned();
                        println!(" [x] subscriber {id} received '{body}'");
                        got.push(body);
                    }
                    Some(Err(e)) => return Err(Error::from(format!("subscriber {id}: {e}"))),
                    None => return Err(Error::from(format!("subscriber {id}: consumer ended"))),
                }
            }
            Ok(got)
        });
        // Keep `channel` until the connection is closed: when a lapin Channel and its
        // consumer are both dropped the channel starts closing itself, which can make
        // a Connection::close that follows report an error.
        subscribers.push((conn, channel, queue_name, task));
    }
    let names: std::collections::HashSet<_> = subscribers.iter().map(|s| s.2.clone()).collect();
    if names.len() != SUBSCRIBERS {
        return Err("two subscribers were given the same server-named queue".into());
    }

    // emit_log: publish to the exchange, not to a queue.
    let emitter = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = emitter.create_channel().await?;
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for message in &messages {
        channel
            .basic_publish(
                EXCHANGE.into(),
                "".into(),
                BasicPublishOptions::default(),
                message.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        println!(" [x] Sent '{message}'");
    }

    let mut queue_names = Vec::new();
    for (conn, _channel, queue_name, task) in subscribers {
        let got = task.await??;
        if got != messages {
            return Err(
                format!("subscriber on '{queue_name}' got {got:?}, expected {messages:?}").into(),
            );
        }
        conn.close(200, "OK".into()).await?;
        queue_names.push(queue_name);
    }

    // An exclusive queue goes away with the connection that declared it.
    for queue_name in &queue_names {
        let mut gone = false;
        for _ in 0..20 {
            let probe = emitter.create_channel().await?;
            match probe
                .queue_declare(
                    queue_name.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
            {
                Err(e) if is_not_found(&e) => {
                    gone = true;
                    break;
                }
                Err(e) => return Err(format!("passive declare of '{queue_name}': {e}").into()),
                Ok(_) => {
                    probe.close(200, "OK".into()).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if !gone {
            return Err(format!("exclusive queue '{queue_name}' outlived its connection").into());
        }
        println!(" [x] exclusive queue '{queue_name}' was deleted with its connection");
    }

    emitter.close(200, "OK".into()).await?;
    Ok(())
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}
