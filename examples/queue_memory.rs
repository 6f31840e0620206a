//! What an empty queue costs a broker in memory, and whether the broker gives it back: declares
//! N queues on one connection, deletes them, and reads the broker's resident set size
//! (`VmRSS` in /proc/PID/status, Linux only) before, after declaring and after deleting.
//!
//! ```text
//! bash bench/queue_memory.sh                       # builds and starts a release broker itself
//! cargo run --release --example queue_memory -- --pid PID [--queues 100000] [--durable] \
//!     [--url amqp://guest:guest@127.0.0.1:5672/%2f] [--hold SECS]
//! ```
//!
//! `--pid` is the broker's process id (for RabbitMQ, the `beam.smp` process). Exits 1 when a
//! declare or delete fails, or when the broker closes the connection.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::{stream, StreamExt, TryStreamExt};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Declares and deletes in flight at once on the one channel.
const IN_FLIGHT: usize = 256;

struct Args {
    url: String,
    pid: u32,
    queues: usize,
    durable: bool,
    /// Seconds to keep the connection open after deleting, to inspect the broker by hand.
    hold: u64,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        url: std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
        pid: 0,
        queues: 100_000,
        durable: false,
        hold: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => args.url = value()?,
            "--pid" => args.pid = value()?.parse()?,
            "--queues" => args.queues = value()?.parse()?,
            "--durable" => args.durable = true,
            "--hold" => args.hold = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.pid == 0 {
        return Err("--pid PID (the broker's process id) is required".into());
    }
    Ok(args)
}

/// The resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("empty VmRSS line")?
        .parse()?)
}

/// RSS once it stopped moving: an allocator may hand freed pages back after a delay.
async fn settled_rss_kib(pid: u32) -> Result<u64, Error> {
    let mut last = rss_kib(pid)?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_kib(pid)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queue_memory: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let conn = Connection::connect(&args.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let names: Vec<String> = (0..args.queues).map(|i| format!("qmem-{i}")).collect();
    let before = settled_rss_kib(args.pid).await?;

    let options = QueueDeclareOptions {
        durable: args.durable,
        ..QueueDeclareOptions::default()
    };
    stream::iter(&names)
        .map(|name| channel.queue_declare(name.as_str().into(), options, FieldTable::default()))
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let declared = settled_rss_kib(args.pid).await?;

    stream::iter(&names)
        .map(|name| channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()))
        .buffer_unordered(IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let deleted = settled_rss_kib(args.pid).await?;
    if args.hold > 0 {
        eprintln!(
            "queue_memory: deleted, rss {deleted} KiB; holding the connection {}s",
            args.hold
        );
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    conn.close(200, "done".into()).await?;
    let closed = settled_rss_kib(args.pid).await?;

    let per_queue = (declared as f64 - before as f64) * 1024.0 / args.queues as f64;
    let kind = if args.durable { "durable" } else { "transient" };
    println!(
        "{} {kind} queues declared on one connection, then deleted",
        args.queues
    );
    println!("rss before declaring  {before:>10} KiB");
    println!("rss after declaring   {declared:>10} KiB  ({per_queue:.0} bytes per queue)");
    println!(
        "rss after deleting    {deleted:>10} KiB  ({:+.1}% of before)",
        (deleted as f64 / before as f64 - 1.0) * 100.0
    );
    println!(
        "rss after closing     {closed:>10} KiB  ({:+.1}% of before)",
        (closed as f64 / before as f64 - 1.0) * 100.0
    );
    Ok(())
}
