//! Retries with backoff, then a dead-letter queue.
//!
//! A producer puts six jobs on the queue `retry_dlq.jobs`; each job says how many times the
//! worker will fail it (a flaky dependency, say). The worker nacks a failed job with requeue;
//! the queue's arguments do the rest:
//!
//! - `x-delayed-retry-type: failed`, `x-delayed-retry-min: 200`, `x-delayed-retry-max: 500`:
//!   a failed job waits 200 ms × its delivery count (at most 500 ms) before it is redelivered,
//!   without holding up the jobs behind it;
//! - `x-delivery-limit: 3`: the fourth failure is one too many, and the job is dead-lettered
//!   (`x-dead-letter-exchange` "" with `x-dead-letter-routing-key` `retry_dlq.dead`), reason
//!   `delivery_limit`, to the queue `retry_dlq.dead`, where a second consumer reports it from
//!   its `x-death` header.
//!
//! The queue is a durable quorum queue, so the same program runs on RabbitMQ too (delivery
//! limits need quorum queues there; delayed retry needs RabbitMQ 4.3, older versions redeliver
//! at once). It prints what happened to each job and exits 0 once every job either succeeded
//! or reached the dead-letter queue as expected, non-zero on an error or after 30 s.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default; AMQP_URL
//! overrides the address):
//!
//! ```text
//! warren serve &
//! cargo run --example retry_dlq
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

const JOBS: &str = "retry_dlq.jobs";
const DEAD: &str = "retry_dlq.dead";
const DELIVERY_LIMIT: i64 = 3;
/// The header telling the worker how many times to fail a job.
const FAILURES: &str = "fail-times";

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("retry_dlq: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("retry_dlq: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("retry_dlq: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Acked on its `attempts`-th delivery.
    Done { attempts: u32 },
    /// Reached the dead-letter queue, for `reason`, after `attempts` deliveries.
    Dead { reason: String, attempts: u32 },
}

/// What the consumers report to the main task.
enum Event {
    /// The worker got a delivery of `job` and failed it (`ok` false) or finished it.
    Attempt { job: String, ok: bool },
    /// `job` arrived in the dead-letter queue.
    Dead { job: String, reason: String },
}

async fn run() -> Result<(), Error> {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;

    // Start from scratch: a previous run may have left the queues behind.
    for q in [JOBS, DEAD] {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    declare(&ch, DEAD, FieldTable::default()).await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    args.insert("x-delayed-retry-type".into(), string("failed"));
    args.insert("x-delayed-retry-min".into(), AMQPValue::LongLongInt(200));
    args.insert("x-delayed-retry-max".into(), AMQPValue::LongLongInt(500));
    args.insert("x-dead-letter-exchange".into(), string(""));
    args.insert("x-dead-letter-routing-key".into(), string(DEAD));
    declare(&ch, JOBS, args).await?;

    // (job, failures before it succeeds): up to 3 failures are retried; 4 or more are not.
    let jobs: Vec<(String, i64)> = [0, 1, 2, 3, 4, 9]
        .iter()
        .enumerate()
        .map(|(i, &f)| (format!("job-{}", i + 1), f))
        .collect();
    let expected: BTreeMap<String, Outcome> = jobs
        .iter()
        .map(|(name, failures)| {
            let outcome = if *failures <= DELIVERY_LIMIT {
                Outcome::Done {
                    attempts: *failures as u32 + 1,
                }
            } else {
                Outcome::Dead {
                    reason: "delivery_limit".into(),
                    attempts: DELIVERY_LIMIT as u32 + 1,
                }
            };
            (name.clone(), outcome)
        })
        .collect();

    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // The consumers' channels are kept here too, to be closed in order at the end (a channel
    // dropped with its task would be closing while `conn.close` closes it again).
    let (worker_ch, dead_ch) = (conn.create_channel().await?, conn.create_channel().await?);
    let worker = tokio::spawn(worker(worker_ch.clone(), tx.clone()));
    let dead_letters = tokio::spawn(dead_letter_reader(dead_ch.clone(), tx));

    let producer = conn.create_channel().await?;
    producer
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for (name, failures) in &jobs {
        let mut headers = FieldTable::default();
        headers.insert(FAILURES.into(), AMQPValue::LongLongInt(*failures));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(name.as_str().into())
            .with_headers(headers);
        println!("[producer] {name}: publishing; the worker will fail it {failures} time(s)");
        let confirm = producer
            .basic_publish(
                "".into(),
                JOBS.into(),
                BasicPublishOptions::default(),
                name.as_bytes(),
                props,
            )
            .await?
            .await?;
        if !confirm.is_ack() {
            return Err(format!("the broker refused {name}").into());
        }
    }

    // Deliveries per job, and how each ended. The worker reports an attempt before it nacks,
    // so a job's last attempt is counted before it can reach the dead-letter queue.
    let mut attempts: BTreeMap<String, u32> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    while outcomes.len() < expected.len() {
        let (job, outcome) = match rx.recv().await.ok_or("the consumers stopped")? {
            Event::Attempt { job, ok } => {
                let n = attempts.entry(job.clone()).or_default();
                *n += 1;
                if !ok {
                    continue;
                }
                (job, Outcome::Done { attempts: *n })
            }
            Event::Dead { job, reason } => {
                let attempts = attempts.get(&job).copied().unwrap_or(0);
                (job, Outcome::Dead { reason, attempts })
            }
        };
        if outcomes.insert(job.clone(), outcome).is_some() {
            return Err(format!("{job} ended twice").into());
        }
    }
    worker.abort();
    dead_letters.abort();
    for c in [worker_ch, dead_ch] {
        c.close(200, "done".into()).await?;
    }

    println!("\nsummary:");
    for (name, outcome) in &outcomes {
        match outcome {
            Outcome::Done { attempts } => println!("  {name}: done on attempt {attempts}"),
            Outcome::Dead { reason, attempts } => {
                println!("  {name}: in {DEAD} after {attempts} deliveries ({reason})")
            }
        }
    }
    for q in [JOBS, DEAD] {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bye".into()).await?;
    if outcomes != expected {
        return Err(format!("expected {expected:?}, got {outcomes:?}").into());
    }
    Ok(())
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) -> Result<(), Error> {
    let opts = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(name.into(), opts, args).await?;
    Ok(())
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn header<'a>(d: &'a Delivery, key: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref()?.inner().get(key)
}

fn integer(v: Option<&AMQPValue>) -> i64 {
    match v {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => (*n).into(),
        Some(AMQPValue::LongUInt(n)) => (*n).into(),
        Some(AMQPValue::ShortInt(n)) => (*n).into(),
        Some(AMQPValue::ShortShortUInt(n)) => (*n).into(),
        _ => 0,
    }
}

fn text(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    }
}

/// Consumes the jobs, failing each the number of times its header says.
async fn worker(ch: Channel, events: mpsc::UnboundedSender<Event>) -> Result<(), Error> {
    let mut consumer = ch
        .basic_consume(
            JOBS.into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut last_failure: BTreeMap<String, Instant> = BTreeMap::new();
    while let Some(delivery) = consumer.next().await {
        let d = delivery?;
        let name = String::from_utf8_lossy(&d.data).into_owned();
        // x-delivery-count: how many times it came back before (absent the first time).
        let attempt = integer(header(&d, "x-delivery-count")) + 1;
        let waited = last_failure
            .get(&name)
            .map(|t| format!(", {} ms after the last failure", t.elapsed().as_millis()))
            .unwrap_or_default();
        if attempt <= integer(header(&d, FAILURES)) {
            println!("[worker]   {name}: attempt {attempt} failed{waited}; nack, requeue");
            let _ = events.send(Event::Attempt {
                job: name.clone(),
                ok: false,
            });
            last_failure.insert(name, Instant::now());
            d.nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await?;
        } else {
            println!("[worker]   {name}: attempt {attempt} succeeded{waited}; ack");
            d.ack(BasicAckOptions::default()).await?;
            let _ = events.send(Event::Attempt {
                job: name,
                ok: true,
            });
        }
    }
    Ok(())
}

/// Reports what reaches the dead-letter queue, from its x-death history.
async fn dead_letter_reader(
    ch: Channel,
    events: mpsc::UnboundedSender<Event>,
) -> Result<(), Error> {
    let mut consumer = ch
        .basic_consume(
            DEAD.into(),
            "dead-letters".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let d = delivery?;
        let name = String::from_utf8_lossy(&d.data).into_owned();
        let (queue, reason) = match header(&d, "x-death") {
            Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
                Some(AMQPValue::FieldTable(last)) => (
                    text(last.inner().get("queue")),
                    text(last.inner().get("reason")),
                ),
                _ => Default::default(),
            },
            _ => Default::default(),
        };
        println!("[dlq]      {name}: dead-lettered from {queue}, reason {reason}");
        let _ = events.send(Event::Dead { job: name, reason });
    }
    Ok(())
}
