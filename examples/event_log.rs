//! An event log on a stream: publish once, replay as often as you like.
//!
//! A producer appends 100 events to the stream `event_log.events` (a durable queue declared with
//! `x-queue-type: stream`, kept for 7 days by `x-max-age`). Then:
//!
//! - an auditor replays the whole log from `first`, and every delivery says where it was in
//!   the `x-stream-offset` header;
//! - a dashboard reads only the last ten events, from an absolute offset;
//! - a billing service reads under a name (`x-stream-consumer-name: billing`), acks 30 events
//!   and stops; started again without an offset, it resumes at the 31st, because Warren
//!   tracks a named consumer's acked offset on the server (across restarts too). On RabbitMQ,
//!   which has no server-side offsets over AMQP 0-9-1, it would start at `next` and wait.
//!
//! Reading removes nothing: each reader gets the events, in order, independently. The example
//! exits 0 when every reader saw what it should, non-zero on an error or after 30 s.
//!
//! ```text
//! warren serve &
//! cargo run --example event_log
//! ```

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

type Error = Box<dyn std::error::Error + Send + Sync>;

const STREAM: &str = "event_log.events";
const EVENTS: i64 = 100;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("event_log: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("event_log: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("event_log: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Reads `n` events as one consumer, acking each; returns (offset, body) pairs.
async fn read(
    conn: &Connection,
    tag: &str,
    args: FieldTable,
    n: usize,
) -> Result<Vec<(i64, String)>, Error> {
    let ch = conn.create_channel().await?;
    // A stream consumer must set a prefetch: it is the consumer's credit.
    ch.basic_qos(50, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            STREAM.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await?;
    let mut got = Vec::new();
    while got.len() < n {
        let d = consumer
            .next()
            .await
            .ok_or("the consumer was cancelled")??;
        let offset = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned())
        {
            Some(AMQPValue::LongLongInt(o)) => o,
            other => return Err(format!("a delivery without its offset: {other:?}").into()),
        };
        got.push((offset, String::from_utf8_lossy(&d.data).into_owned()));
        d.ack(BasicAckOptions::default()).await?;
    }
    ch.close(200, "done".into()).await?;
    Ok(got)
}

async fn run() -> Result<(), Error> {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    // Start from an empty log (an earlier run's stream goes).
    ch.queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await?;
    ch.queue_declare(
        STREAM.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table(&[
            ("x-queue-type", AMQPValue::LongString("stream".into())),
            ("x-max-age", AMQPValue::LongString("7D".into())),
        ]),
    )
    .await?;

    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 0..EVENTS {
        let kind = ["order.created", "order.paid", "order.shipped"][i as usize % 3];
        let body = format!("{kind} #{}", i / 3);
        let confirm = ch
            .basic_publish(
                "".into(),
                STREAM.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        if !confirm.await?.is_ack() {
            return Err("an event was not confirmed".into());
        }
    }
    println!("appended {EVENTS} events (each confirmed once on disk)");

    let first = AMQPValue::LongString("first".into());
    let all = read(
        &conn,
        "auditor",
        table(&[("x-stream-offset", first.clone())]),
        EVENTS as usize,
    )
    .await?;
    let base = all[0].0;
    if all
        .iter()
        .enumerate()
        .any(|(i, (o, _))| *o != base + i as i64)
    {
        return Err("the auditor's offsets are not consecutive".into());
    }
    println!(
        "auditor replayed all {} events from offset {base}: {} ... {}",
        all.len(),
        all[0].1,
        all[all.len() - 1].1
    );

    let tail = read(
        &conn,
        "dashboard",
        table(&[(
            "x-stream-offset",
            AMQPValue::LongLongInt(base + EVENTS - 10),
        )]),
        10,
    )
    .await?;
    if tail[..] != all[all.len() - 10..] {
        return Err("the dashboard read other events than the auditor".into());
    }
    println!(
        "dashboard read the last 10 events, from offset {}",
        tail[0].0
    );

    let billing = AMQPValue::LongString("billing".into());
    let part = read(
        &conn,
        "",
        table(&[
            ("x-stream-consumer-name", billing.clone()),
            ("x-stream-offset", first),
        ]),
        30,
    )
    .await?;
    let rest = read(
        &conn,
        "",
        table(&[("x-stream-consumer-name", billing)]),
        (EVENTS - 30) as usize,
    )
    .await?;
    if rest[0].0 != part[29].0 + 1 {
        return Err(format!(
            "billing resumed at offset {} instead of {}",
            rest[0].0,
            part[29].0 + 1
        )
        .into());
    }
    println!(
        "billing acked 30 events, stopped, and resumed at offset {} without being told where",
        rest[0].0
    );

    ch.queue_delete(STREAM.into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "done".into()).await?;
    Ok(())
}
