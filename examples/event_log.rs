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
//! Reading removes nothing: each reader gets the events, in order, independently.
//!
//! Then a consumer group on a partitioned stream: `event_log.orders` is three streams
//! (`event_log.orders-0..2`) behind an `x-consistent-hash` exchange, so each order's events land
//! in one partition, in order (`warren declare stream event_log.orders --partitions 3` declares
//! the same). Two members of the group `shipping` consume every partition with
//! `x-consumer-group`; Warren makes one member active on each partition, so the group reads each
//! event once. When one member leaves, the other takes its partitions over from the group's last
//! acked offset.
//!
//! The example exits 0 when every reader saw what it should, non-zero on an error or after 30 s.
//!
//! ```text
//! warren serve &
//! cargo run --example event_log
//! ```

use std::process::ExitCode;
use std::time::Duration;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

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
    consumer_group(&conn).await?;
    conn.close(200, "done".into())
        .await
        .map_err(|e| format!("closing: {e}"))?;
    Ok(())
}

const ORDERS: &str = "event_log.orders";
const PARTITIONS: u32 = 3;

/// The partitioned stream: an `x-consistent-hash` exchange and a stream per partition, bound
/// with weight 1; `x-stream-partition-order` tells each stream which partition it is.
async fn declare_orders(ch: &Channel) -> Result<(), Error> {
    for p in 0..PARTITIONS {
        ch.queue_delete(
            format!("{ORDERS}-{p}").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await?;
    }
    ch.exchange_delete(ORDERS.into(), ExchangeDeleteOptions::default())
        .await?;
    ch.exchange_declare(
        ORDERS.into(),
        ExchangeKind::Custom("x-consistent-hash".into()),
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    for p in 0..PARTITIONS {
        let q = format!("{ORDERS}-{p}");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            table(&[
                ("x-queue-type", AMQPValue::LongString("stream".into())),
                ("x-stream-partition-order", AMQPValue::LongLongInt(p.into())),
            ]),
        )
        .await?;
        ch.queue_bind(
            q.as_str().into(),
            ORDERS.into(),
            "1".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Publishes `order-<n>:<event>` for orders 0..10 and events `events`, routed by order.
async fn publish_orders(ch: &Channel, events: std::ops::Range<u32>) -> Result<(), Error> {
    for e in events {
        for order in 0..10 {
            let confirm = ch
                .basic_publish(
                    ORDERS.into(),
                    format!("order-{order}").as_str().into(),
                    BasicPublishOptions::default(),
                    format!("order-{order}:{e}").as_bytes(),
                    BasicProperties::default(),
                )
                .await?;
            if !confirm.await?.is_ack() {
                return Err("an order event was not confirmed".into());
            }
        }
    }
    Ok(())
}

/// A member of the group: one channel consuming every partition. Returns what it read, as
/// (partition, body), acking each.
async fn join(conn: &Connection, group: &str) -> Result<Arc<Mutex<Vec<(u32, String)>>>, Error> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(20, BasicQosOptions::default()).await?;
    let got = Arc::new(Mutex::new(Vec::new()));
    for p in 0..PARTITIONS {
        let mut consumer = ch
            .basic_consume(
                format!("{ORDERS}-{p}").as_str().into(),
                format!("partition-{p}").as_str().into(),
                BasicConsumeOptions::default(),
                table(&[
                    ("x-consumer-group", AMQPValue::LongString(group.into())),
                    ("x-stream-offset", AMQPValue::LongString("first".into())),
                ]),
            )
            .await?;
        let got = got.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let body = String::from_utf8_lossy(&d.data).into_owned();
                got.lock().unwrap().push((p, body));
                if d.ack(BasicAckOptions::default()).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(got)
}

async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<(), Error> {
    for _ in 0..1000 {
        if done() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("gave up waiting for {what}").into())
}

/// Each order's events, as one member read them, must be in order.
fn check_order(who: &str, got: &[(u32, String)]) -> Result<(), Error> {
    let mut last: HashMap<&str, u32> = HashMap::new();
    for (_, body) in got {
        let (order, e) = body.split_once(':').ok_or("a malformed event")?;
        let e: u32 = e.parse()?;
        if last.insert(order, e).is_some_and(|prev| prev >= e) {
            return Err(format!("{who} read {order}'s events out of order").into());
        }
    }
    Ok(())
}

async fn consumer_group(conn: &Connection) -> Result<(), Error> {
    let ch = conn.create_channel().await?;
    declare_orders(&ch).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let a_conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let b_conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let a = join(&a_conn, "shipping").await?;
    let b = join(&b_conn, "shipping").await?;
    publish_orders(&ch, 0..6).await?;
    let len = |m: &Arc<Mutex<Vec<(u32, String)>>>| m.lock().unwrap().len();
    wait_until("the group to read 60 events", || len(&a) + len(&b) == 60).await?;
    let partitions = |m: &Arc<Mutex<Vec<(u32, String)>>>| -> BTreeSet<u32> {
        m.lock().unwrap().iter().map(|(p, _)| *p).collect()
    };
    println!(
        "group 'shipping': member A reads partitions {:?}, member B {:?}; 60 events read once",
        partitions(&a),
        partitions(&b)
    );
    if !partitions(&a).is_disjoint(&partitions(&b)) {
        return Err("two members read the same partition".into());
    }
    // Let B's acks arrive, then B leaves; A takes B's partitions over from the group's offset.
    tokio::time::sleep(Duration::from_millis(200)).await;
    b_conn.close(200, "leaving".into()).await?;
    let before = len(&a);
    publish_orders(&ch, 6..9).await?;
    wait_until("member A to read the next 30", || len(&a) >= before + 30).await?;
    check_order("member A", &a.lock().unwrap())?;
    check_order("member B", &b.lock().unwrap())?;
    println!(
        "member B left; member A now reads partitions {:?} and got the next 30 events, each \
         order's in order",
        partitions(&a)
    );
    a_conn
        .close(200, "done".into())
        .await
        .map_err(|e| format!("closing member A: {e}"))?;
    for p in 0..PARTITIONS {
        ch.queue_delete(
            format!("{ORDERS}-{p}").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .map_err(|e| format!("deleting partition {p}: {e}"))?;
    }
    ch.exchange_delete(ORDERS.into(), ExchangeDeleteOptions::default())
        .await
        .map_err(|e| format!("deleting the exchange: {e}"))?;
    ch.close(200, "done".into()).await?;
    Ok(())
}
