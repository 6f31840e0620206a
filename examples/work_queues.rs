//! Tutorial 2, "Work Queues": distributing time-consuming tasks among workers.
//!
//! A producer (new_task.rs) puts tasks on the durable queue `task_queue` as
//! persistent messages (delivery-mode 2). Two workers (worker.rs), each on its own
//! connection, consume with manual acknowledgement and `basic.qos` prefetch 1, so
//! the broker never gives a busy worker a second task (fair dispatch). Each dot in
//! a task stands for 100 ms of work. All of it runs in this one process; it exits
//! 0 once every task was done and acknowledged exactly once and both workers got
//! work, non-zero on an error or after a 30 s timeout.
//!
//! Run it against Warren (`warren serve` listens on 127.0.0.1:5672 by default):
//!
//! ```text
//! warren serve &
//! cargo run --example work_queues
//! cargo run --example work_queues -- "First message." "Second message.." "Third message..."
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

const QUEUE: &str = "task_queue";
const WORKERS: usize = 2;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => {
            println!("work_queues: OK");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("work_queues: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("work_queues: FAILED: timed out after 30 s");
            ExitCode::FAILURE
        }
    }
}

/// The durable queue both sides declare; the declarations must agree.
fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

async fn run() -> Result<(), Error> {
    let mut tasks: Vec<String> = std::env::args().skip(1).collect();
    if tasks.is_empty() {
        tasks = [
            "First message.",
            "Second message..",
            "Third message...",
            "Fourth message....",
            "Fifth message.....",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    }
    let url = amqp_url();
    println!("connecting to {url}");

    let setup = Connection::connect(&url, ConnectionProperties::default()).await?;
    let setup_channel = setup.create_channel().await?;
    setup_channel
        .queue_declare(QUEUE.into(), durable(), FieldTable::default())
        .await?;
    // Start clean even if an earlier run was interrupted (the queue is durable).
    setup_channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;

    // Workers: each reports (worker id, task body, redelivered) once it has acked.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, String, bool)>();
    let mut worker_conns = Vec::new();
    for id in 1..=WORKERS {
        let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .queue_declare(QUEUE.into(), durable(), FieldTable::default())
            .await?;
        // Fair dispatch: at most one unacknowledged message per worker.
        channel.basic_qos(1, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                QUEUE.into(),
                format!("worker-{id}").into(),
                BasicConsumeOptions::default(), // no_ack = false: manual acknowledgement
                FieldTable::default(),
            )
            .await?;
        println!(" [*] worker {id} waiting for tasks");
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = match delivery {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!(" [!] worker {id}: consumer error: {e}");
                        return;
                    }
                };
                let body = String::from_utf8_lossy(&delivery.data).into_owned();
                println!(" [x] worker {id} received '{body}'");
                let dots = body.matches('.').count() as u64;
                tokio::time::sleep(Duration::from_millis(100 * dots)).await;
                if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                    eprintln!(" [!] worker {id}: ack failed: {e}");
                    return;
                }
                println!(" [x] worker {id} done with '{body}'");
                if done_tx.send((id, body, delivery.redelivered)).is_err() {
                    return;
                }
            }
        });
        worker_conns.push(conn);
    }
    drop(done_tx);

    // new_task: persistent messages on the durable queue.
    let producer = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = producer.create_channel().await?;
    channel
        .queue_declare(QUEUE.into(), durable(), FieldTable::default())
        .await?;
    for task in &tasks {
        channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                task.as_bytes(),
                BasicProperties::default().with_delivery_mode(2), // persistent
            )
            .await?;
        println!(" [x] Sent '{task}'");
    }

    let mut done: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_worker = [0usize; WORKERS + 1];
    for _ in 0..tasks.len() {
        let (id, body, redelivered) = done_rx
            .recv()
            .await
            .ok_or("all workers stopped before the tasks were done")?;
        if redelivered {
            return Err(format!("task '{body}' was unexpectedly redelivered").into());
        }
        per_worker[id] += 1;
        *done.entry(body).or_default() += 1;
    }
    for task in &tasks {
        let expected = tasks.iter().filter(|t| *t == task).count();
        let got = done.get(task).copied().unwrap_or(0);
        if got != expected {
            return Err(
                format!("task '{task}' was processed {got} times, expected {expected}").into(),
            );
        }
    }
    for (id, count) in per_worker.iter().enumerate().skip(1) {
        println!(" worker {id} did {count} task(s)");
    }
    if tasks.len() >= WORKERS && per_worker.iter().skip(1).any(|&n| n == 0) {
        return Err("a worker got no task: dispatch was not fair".into());
    }

    producer.close(200, "OK".into()).await?;
    for conn in worker_conns {
        conn.close(200, "OK".into()).await?;
    }
    // Nothing may be left behind: had a task not been acknowledged, closing its
    // worker's connection would have put it back on the queue.
    let left = setup_channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..durable()
            },
            FieldTable::default(),
        )
        .await?;
    if left.message_count() != 0 {
        return Err(format!("{} message(s) left in {QUEUE}", left.message_count()).into());
    }

    setup_channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    setup.close(200, "OK".into()).await?;
    Ok(())
}
