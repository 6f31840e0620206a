//! Tutorial 1, "Hello World!": the simplest thing that does something.
//!
//! A producer publishes one message to the queue `hello` through the default
//! exchange (the routing key is the queue name) and a consumer, on its own
//! connection, receives it. Both run as tasks in this one process; it prints what
//! happens and exits 0 once the consumer got exactly what was sent, non-zero on an
//! error or after a 30 s timeout.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default):
//!
//! ```text
//! warren serve &
//! cargo run --example hello_world                    # sends "Hello World!"
//! cargo run --example hello_world -- Hi there        # sends "Hi there"
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5673/%2f cargo run --example hello_world   # another broker
//! ```

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

type Error = Box<dyn std::error::Error + Send + Sync>;

const QUEUE: &str = "hello";

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("hello_world: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("hello_world: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("hello_world: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() {
        "Hello World!".to_string()
    } else {
        args.join(" ")
    };
    let url = amqp_url();
    println!("connecting to {url}");

    // Setup: declare the queue (idempotent; both sides of the tutorial do it) and
    // purge it so that a run starts clean even if an earlier run was interrupted.
    let setup = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = setup.create_channel().await?;
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;

    // receive.rs: a consumer on its own connection, automatic acknowledgement.
    let consumer_conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let consumer_channel = consumer_conn.create_channel().await?;
    consumer_channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    println!(" [*] Waiting for messages on '{QUEUE}'");
    let receiver = tokio::spawn(async move {
        match consumer.next().await {
            Some(Ok(delivery)) => {
                let body = String::from_utf8_lossy(&delivery.data).into_owned();
                println!(" [x] Received '{body}'");
                Ok(body)
            }
            Some(Err(e)) => Err(Error::from(format!("consumer error: {e}"))),
            None => Err(Error::from(
                "consumer stream ended before a message arrived",
            )),
        }
    });

    // send.rs: publish one message to the default exchange, routing key = queue name.
    let producer_conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let producer_channel = producer_conn.create_channel().await?;
    producer_channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    producer_channel
        .basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            message.as_bytes(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent '{message}'");

    let received = receiver.await??;
    if received != message {
        return Err(format!("received {received:?}, expected {message:?}").into());
    }

    producer_conn.close(200, "OK".into()).await?;
    consumer_conn.close(200, "OK".into()).await?;
    channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    setup.close(200, "OK".into()).await?;
    Ok(())
}
