//! Tutorial 4, "Routing": receiving messages selectively.
//!
//! An emitter (emit_log_direct.rs) publishes "<severity>: Hello World!" to the
//! direct exchange `direct_logs` with the severity as routing key. Two receivers
//! (receive_logs_direct.rs), each with a server-named exclusive queue:
//!
//! * `disk` binds only `error` (the one that saves errors to disk);
//! * `console` binds `info`, `warning` and `error` (one queue, several bindings).
//!
//! A direct exchange delivers a message to the queues whose binding key equals
//! its routing key, so `error` goes to both, `info`/`warning` to `console` only,
//! and a severity nobody bound (`debug`) is dropped. The example checks exactly
//! that (waiting a moment for strays) and exits 0, or non-zero on a mismatch, an
//! error, or after a 30 s timeout.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default):
//!
//! ```text
//! warren serve &
//! cargo run --example routing                          # emits info, warning, error, debug
//! cargo run --example routing -- error error info      # the severities to emit
//! ```

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

const EXCHANGE: &str = "direct_logs";

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("routing: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("routing: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("routing: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

async fn declare_exchange(channel: &lapin::Channel) -> Result<(), Error> {
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

async fn run() -> Result<(), Error> {
    let mut severities: Vec<String> = std::env::args().skip(1).collect();
    if severities.is_empty() {
        severities = ["info", "warning", "error", "debug"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    let receivers: [(&str, &[&str]); 2] = [
        ("disk", &["error"]),
        ("console", &["info", "warning", "error"]),
    ];
    let url = amqp_url();
    println!("connecting to {url}");

    // Each receiver reports (receiver name, routing key, body).
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, String, String)>();
    let mut conns = Vec::new();
    for (name, keys) in receivers {
        let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        declare_exchange(&channel).await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        for key in keys {
            channel
                .queue_bind(
                    queue.name().clone(),
                    EXCHANGE.into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        println!(" [*] {name}: queue '{}' bound with {keys:?}", queue.name());
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let key = delivery.routing_key.as_str().to_string();
                let body = String::from_utf8_lossy(&delivery.data).into_owned();
                println!(" [x] {name} received {key}:'{body}'");
                if tx.send((name, key, body)).is_err() {
                    break;
                }
            }
        });
        conns.push(conn);
    }
    drop(tx);

    // emit_log_direct: with publisher confirms so we know the broker has routed
    // every message before we start counting.
    let emitter = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = emitter.create_channel().await?;
    declare_exchange(&channel).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut expected: Vec<(&str, String, String)> = Vec::new();
    for severity in &severities {
        let body = format!("{severity}: Hello World!");
        channel
            .basic_publish(
                EXCHANGE.into(),
                severity.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await?
            .await?;
        println!(" [x] Sent {severity}:'{body}'");
        for (name, keys) in receivers {
            if keys.contains(&severity.as_str()) {
                expected.push((name, severity.clone(), body.clone()));
            }
        }
    }

    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(rx.recv().await.ok_or("a receiver stopped early")?);
    }
    // Give anything that should not have been routed a chance to show up.
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        return Err(format!("unexpected delivery {extra:?}").into());
    }
    expected.sort();
    got.sort();
    if got != expected {
        return Err(format!("deliveries {got:?}, expected {expected:?}").into());
    }
    println!(" all {} deliveries went where the bindings say", got.len());

    emitter.close(200, "OK".into()).await?;
    for conn in conns {
        conn.close(200, "OK".into()).await?;
    }
    Ok(())
}
