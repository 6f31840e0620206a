//! Tutorial 5, "Topics": receiving messages based on a pattern.
//!
//! An emitter (emit_log_topic.rs) publishes to the topic exchange `topic_logs`
//! with dot-separated routing keys like `quick.orange.rabbit`. Binding keys are
//! patterns in which `*` stands for exactly one word and `#` for zero or more
//! words. Three receivers (receive_logs_topic.rs), each with a server-named
//! exclusive queue, bind:
//!
//! * `Q1`: `*.orange.*`
//! * `Q2`: `*.*.rabbit` and `lazy.#` (a message matching both arrives once)
//! * `all`: `#` (everything)
//!
//! The example computes where each routing key must go, publishes with publisher
//! confirms, checks every queue got exactly that (waiting a moment for strays)
//! and exits 0, or non-zero on a mismatch, an error, or after a 30 s timeout.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default):
//!
//! ```text
//! warren serve &
//! cargo run --example topics                           # the tutorial's routing keys
//! cargo run --example topics -- kern.critical lazy.orange.elephant quick.brown.fox
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

const EXCHANGE: &str = "topic_logs";

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("topics: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("topics: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("topics: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

/// Does the topic binding `pattern` match `routing_key`? Words are separated by
/// dots; `*` matches exactly one word, `#` zero or more.
fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|skip| go(rest, &k[skip..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((word, rest)) => k.first() == Some(word) && go(rest, &k[1..]),
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = routing_key.split('.').collect();
    go(&p, &k)
}

async fn declare_exchange(channel: &lapin::Channel) -> Result<(), Error> {
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

async fn run() -> Result<(), Error> {
    let mut keys: Vec<String> = std::env::args().skip(1).collect();
    if keys.is_empty() {
        // Where each goes besides `all`, which gets every one of them:
        keys = [
            "quick.orange.rabbit",      // Q1, Q2
            "lazy.orange.elephant",     // Q1, Q2
            "quick.orange.fox",         // Q1
            "lazy.brown.fox",           // Q2
            "lazy.pink.rabbit",         // Q2, once although two bindings match
            "quick.brown.fox",          // only `#`
            "orange",                   // only `#`: `*.orange.*` needs three words
            "quick.orange.male.rabbit", // only `#`
            "lazy.orange.male.rabbit",  // Q2 (lazy.#)
            "lazy",                     // Q2: `#` matches zero words
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    let receivers: [(&str, &[&str]); 3] = [
        ("Q1", &["*.orange.*"]),
        ("Q2", &["*.*.rabbit", "lazy.#"]),
        ("all", &["#"]),
    ];
    let url = amqp_url();
    println!("connecting to {url}");

    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, String, String)>();
    let mut conns = Vec::new();
    for (name, patterns) in receivers {
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
        for pattern in patterns {
            channel
                .queue_bind(
                    queue.name().clone(),
                    EXCHANGE.into(),
                    (*pattern).into(),
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
        println!(
            " [*] {name}: queue '{}' bound with {patterns:?}",
            queue.name()
        );
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

    let emitter = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = emitter.create_channel().await?;
    declare_exchange(&channel).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut expected: Vec<(&str, String, String)> = Vec::new();
    for key in &keys {
        let body = format!("message for {key}");
        channel
            .basic_publish(
                EXCHANGE.into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await?
            .await?;
        let targets: Vec<&str> = receivers
            .iter()
            .filter(|(_, patterns)| patterns.iter().any(|p| topic_matches(p, key)))
            .map(|(name, _)| *name)
            .collect();
        println!(" [x] Sent {key}:'{body}' (should reach {targets:?})");
        for name in targets {
            expected.push((name, key.clone(), body.clone()));
        }
    }

    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(rx.recv().await.ok_or("a receiver stopped early")?);
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        return Err(format!("unexpected (or duplicate) delivery {extra:?}").into());
    }
    expected.sort();
    got.sort();
    if got != expected {
        return Err(format!("deliveries {got:?}, expected {expected:?}").into());
    }
    println!(" all {} deliveries matched the topic patterns", got.len());

    emitter.close(200, "OK".into()).await?;
    for conn in conns {
        conn.close(200, "OK".into()).await?;
    }
    Ok(())
}
