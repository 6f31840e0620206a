//! Tutorial 6, "RPC": request/reply over queues.
//!
//! An RPC server (rpc_server.rs) consumes requests from the queue `rpc_queue`
//! with prefetch 1 and manual acknowledgement, computes fib(n) and publishes the
//! answer to the queue named in the request's `reply_to` property, copying its
//! `correlation_id`. A client (rpc_client.rs) declares a server-named exclusive
//! callback queue, sends every request at once with a unique correlation id, and
//! matches each reply to its request by that id. Server and client run as tasks in
//! this one process; it exits 0 when every call returned the right number,
//! non-zero on an error or after a 30 s timeout.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default):
//!
//! ```text
//! warren serve &
//! cargo run --example rpc                  # fib(0) fib(1) fib(10) fib(30)
//! cargo run --example rpc -- 5 20 90       # n values, 0..=93
//! ```

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

type Error = Box<dyn std::error::Error + Send + Sync>;

const QUEUE: &str = "rpc_queue";

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("rpc: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("rpc: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("rpc: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// rpc_server: answer requests until the connection closes.
async fn serve(url: String) -> Result<Connection, Error> {
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Start clean even if an earlier run was interrupted.
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            "rpc-server".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    println!(" [x] Awaiting RPC requests on '{QUEUE}'");
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let request = String::from_utf8_lossy(&delivery.data).into_owned();
            let reply = match request.trim().parse::<u64>() {
                Ok(n) if n <= 93 => {
                    println!(" [.] fib({n})");
                    fib(n).to_string()
                }
                _ => format!("error: bad request {request:?}"),
            };
            let props = &delivery.properties;
            match props.reply_to() {
                Some(reply_to) => {
                    let mut reply_props = BasicProperties::default();
                    if let Some(id) = props.correlation_id() {
                        reply_props = reply_props.with_correlation_id(id.clone());
                    }
                    if let Err(e) = channel
                        .basic_publish(
                            "".into(),
                            reply_to.clone(),
                            BasicPublishOptions::default(),
                            reply.as_bytes(),
                            reply_props,
                        )
                        .await
                    {
                        eprintln!(" [!] server: reply failed: {e}");
                    }
                }
                None => eprintln!(" [!] server: request without reply_to, dropped"),
            }
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                eprintln!(" [!] server: ack failed: {e}");
                break;
            }
        }
    });
    Ok(conn)
}

async fn run() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<u64> = if args.is_empty() {
        vec![0, 1, 10, 30]
    } else {
        args.iter()
            .map(|a| match a.parse::<u64>() {
                Ok(n) if n <= 93 => Ok(n),
                _ => Err(format!("not a number in 0..=93: {a:?}")),
            })
            .collect::<Result<_, _>>()?
    };
    let url = amqp_url();
    println!("connecting to {url}");

    let server = serve(url.clone()).await?;

    // rpc_client: an exclusive, server-named callback queue for the replies.
    let client = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = client.create_channel().await?;
    let callback = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut replies = channel
        .basic_consume(
            callback.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;

    let mut pending: HashMap<String, u64> = HashMap::new();
    for (i, n) in numbers.iter().enumerate() {
        let correlation_id = format!("rpc-{}-{i}", std::process::id());
        channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default()
                    .with_reply_to(callback.name().clone())
                    .with_correlation_id(correlation_id.as_str().into()),
            )
            .await?;
        println!(" [x] Requesting fib({n}) as {correlation_id}");
        pending.insert(correlation_id, *n);
    }

    while !pending.is_empty() {
        let delivery = match replies.next().await {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(format!("reply consumer: {e}").into()),
            None => return Err("reply consumer ended".into()),
        };
        let body = String::from_utf8_lossy(&delivery.data).into_owned();
        let Some(id) = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_string())
        else {
            return Err(format!("reply {body:?} without correlation_id").into());
        };
        // A real client ignores replies it did not ask for; here that is a bug.
        let Some(n) = pending.remove(&id) else {
            return Err(format!("reply {body:?} with unknown correlation_id {id:?}").into());
        };
        println!(" [.] Got fib({n}) = {body} for {id}");
        if body != fib(n).to_string() {
            return Err(format!("fib({n}) returned {body:?}, expected {}", fib(n)).into());
        }
    }

    client.close(200, "OK".into()).await?;
    server.close(200, "OK".into()).await?;
    let cleanup = Connection::connect(&url, ConnectionProperties::default()).await?;
    // Keep the channel in a binding: a lapin Channel dropped mid-statement starts
    // closing itself, and the connection close below would then trip over it.
    let cleanup_channel = cleanup.create_channel().await?;
    cleanup_channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    cleanup.close(200, "OK".into()).await?;
    Ok(())
}
