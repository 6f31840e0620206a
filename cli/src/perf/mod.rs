//! `warren perf`: load generator and measurements against any AMQP 0-9-1 broker, in the
//! spirit of RabbitMQ's PerfTest and LavinMQ's lavinmqperf, driving the lean client in
//! [`wire`] so the generator is not the bottleneck (`warren perf sink` measures its ceiling).

mod sink;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use anyhow::{bail, Context};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use wire::{ack_multiple, encode_publish, Scan, Wire};

/// `warren perf` and its scenarios.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  warren perf throughput -x 1 -y 1 -s 16 --duration 10
  warren perf throughput --persistent --confirm 1000 --ack manual
  warren perf throughput --exchange-type fanout --queues 10 -y 10
  warren perf latency --rate 10000 --duration 10
  warren perf connections -n 10000 --broker-pid $(pgrep -n warren)
  warren perf backlog -n 1000000 -s 16 --broker-pid $(pgrep -n warren)
  warren perf sink --bind 127.0.0.1:5699   # a broker that discards everything: the client's ceiling
  warren perf sink --echo                  # publishes sent straight back: the latency floor")]
pub struct PerfArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(clap::Subcommand)]
pub enum Scenario {
    /// Producers and consumers flat out (or at --rate): messages per second.
    Throughput(ThroughputArgs),
    /// End-to-end latency percentiles at a fixed rate.
    Latency(LatencyArgs),
    /// How many idle connections (one channel each) the broker holds, and its memory for them.
    Connections(ConnectionsArgs),
    /// Publish N messages with no consumer, report the broker's memory, then drain them.
    Backlog(BacklogArgs),
    /// Run a fake broker that accepts and discards everything, to measure this client's ceiling.
    Sink(sink::SinkArgs),
}

#[derive(clap::Args, Clone)]
pub struct Common {
    /// Broker URL.
    #[arg(
        long,
        env = "WARREN_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub url: String,
    /// Print the final summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

#[derive(clap::Args, Clone)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub common: Common,
    /// Producers (one connection each).
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers (one connection each).
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Persistent messages on durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirm window (0: no confirms).
    #[arg(long, default_value_t = 0)]
    pub confirm: u64,
    /// Consumer prefetch.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// auto (no-ack) or manual (ack with multiple every --ack-every).
    #[arg(long, default_value = "auto")]
    pub ack: String,
    /// Messages per basic.ack(multiple) in manual mode.
    #[arg(long, default_value_t = 100)]
    pub ack_every: u64,
    /// direct (the default exchange), fanout or topic.
    #[arg(long, default_value = "direct")]
    pub exchange_type: String,
    /// Queues (fanout: every queue gets every message).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Topic: wildcard bindings on the exchange (messages match one of them).
    #[arg(long, default_value_t = 100)]
    pub bindings: usize,
    /// Total publish rate in messages per second (0: flat out).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[derive(clap::Args, Clone)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Body size in bytes (at least 8: the send timestamp).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Persistent messages on a durable queue.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms, and report confirm latency (publish to basic.ack) too.
    #[arg(long)]
    pub confirm: bool,
}

#[derive(clap::Args, Clone)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: usize,
    /// The broker's process id, to read its memory (/proc/PID/status).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Seconds a connection may take to open (TCP and AMQP handshake); a broker that stops
    /// accepting (at its open-file limit, say) ends the run with what it holds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
}

#[derive(clap::Args, Clone)]
pub struct BacklogArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages to queue.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// Persistent messages on a durable queue.
    #[arg(long)]
    pub persistent: bool,
    /// The broker's process id, to read its memory.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// Runs a scenario.
pub async fn run(args: PerfArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Throughput(a) => throughput(a).await,
        Scenario::Latency(a) => latency(a).await,
        Scenario::Connections(a) => connections(a).await,
        Scenario::Backlog(a) => backlog(a).await,
        Scenario::Sink(a) => sink::run(a).await,
    }
}

fn tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// The resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn fmt_rate(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

struct Counters {
    published: AtomicU64,
    confirmed: AtomicU64,
    consumed: AtomicU64,
    stop: AtomicBool,
}

/// One producer: pre-encoded publishes written in batches, confirms scanned as they come.
async fn produce(
    url: String,
    frames: Vec<Vec<u8>>,
    confirm: u64,
    rate: u64,
    c: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut w = Wire::connect(&url).await?;
    if confirm > 0 {
        w.confirm_select().await?;
    }
    let mut scan = Scan::default();
    let mut sent: u64 = 0;
    let mut out: Vec<u8> = Vec::with_capacity(256 * 1024);
    let started = Instant::now();
    let mut variant = 0usize;
    while !c.stop.load(Ordering::Relaxed) {
        let mut room = 256u64;
        if confirm > 0 {
            let outstanding = sent - scan.acked_upto;
            if outstanding >= confirm {
                let before = scan.acked_upto;
                w.read_scan(&mut scan, |_| {}).await?;
                c.confirmed
                    .fetch_add(scan.acked_upto - before, Ordering::Relaxed);
                continue;
            }
            room = room.min(confirm - outstanding);
        }
        if rate > 0 {
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if due <= sent {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            room = room.min(due - sent);
        }
        out.clear();
        for _ in 0..room {
            out.extend_from_slice(&frames[variant]);
            variant = (variant + 1) % frames.len();
        }
        w.wr.write_all(&out).await?;
        sent += room;
        c.published.fetch_add(room, Ordering::Relaxed);
        if confirm > 0 {
            // Take whatever confirms already arrived, without waiting.
            let before = scan.acked_upto;
            while let Ok(n) = w.rd.try_read_buf(&mut w.buf) {
                if n == 0 {
                    bail!("the broker closed the connection");
                }
            }
            if !w.buf.is_empty() {
                drain_buffered(&mut w, &mut scan);
            }
            c.confirmed
                .fetch_add(scan.acked_upto - before, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Records the latency of every publish confirmed since the last call.
fn take_confirms(
    scan: &mut Scan,
    upto: &mut u64,
    unconfirmed: &mut std::collections::VecDeque<u64>,
    out: &mut Vec<u64>,
    base: Instant,
) {
    let now = base.elapsed().as_nanos() as u64;
    while *upto < scan.acked_upto {
        match unconfirmed.pop_front() {
            Some(sent) => out.push(now.saturating_sub(sent)),
            None => break,
        }
        *upto += 1;
    }
}

/// Scans frames already in the buffer (no read).
fn drain_buffered(w: &mut Wire, scan: &mut Scan) {
    use bytes::Buf;
    while w.buf.len() >= 7 {
        let size = u32::from_be_bytes([w.buf[3], w.buf[4], w.buf[5], w.buf[6]]) as usize;
        if w.buf.len() < size + 8 {
            break;
        }
        let p = &w.buf[7..7 + size];
        if w.buf[0] == 1 && size >= 12 && p[0..4] == [0, 60, 0, 80] {
            scan.acked_upto = scan
                .acked_upto
                .max(u64::from_be_bytes(p[4..12].try_into().unwrap_or_default()));
        }
        w.buf.advance(size + 8);
    }
}

/// One consumer: counts deliveries, acks with multiple every `ack_every` in manual mode.
async fn consume(
    url: String,
    queue: String,
    prefetch: u16,
    manual: bool,
    ack_every: u64,
    c: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut w = Wire::connect(&url).await?;
    w.consume(&queue, prefetch, !manual).await?;
    let mut scan = Scan::default();
    let mut unacked = 0u64;
    let ack_every = ack_every.clamp(1, (u64::from(prefetch) / 2).max(1));
    loop {
        let before = scan.deliveries;
        tokio::select! {
            r = w.read_scan(&mut scan, |_| {}) => r?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let n = scan.deliveries - before;
        c.consumed.fetch_add(n, Ordering::Relaxed);
        if manual {
            unacked += n;
            if unacked >= ack_every || (n == 0 && unacked > 0) {
                w.cast(ack_multiple(scan.last_tag)).await?;
                unacked = 0;
            }
        }
        if c.stop.load(Ordering::Relaxed) && n == 0 {
            return Ok(());
        }
    }
}

async fn throughput(a: ThroughputArgs) -> anyhow::Result<()> {
    let url = a.common.url.clone();
    let manual = match a.ack.as_str() {
        "auto" => false,
        "manual" => true,
        other => bail!("--ack is auto or manual, not {other:?}"),
    };
    let id = tag();
    let queues: Vec<String> = (0..a.queues.max(1))
        .map(|i| format!("perf-{id}-q{i}"))
        .collect();
    let mut admin = Wire::connect(&url).await?;
    for q in &queues {
        admin
            .declare_queue(q, a.persistent, FieldTable::default())
            .await?;
    }
    let body = vec![b'x'; a.size];
    let frame_max = admin.frame_max;
    let exchange_name = format!("perf-{id}-x");
    let frames: Vec<Vec<u8>> = match a.exchange_type.as_str() {
        "direct" => queues
            .iter()
            .map(|q| encode_publish("", q, a.persistent, &body, frame_max))
            .collect(),
        kind @ ("fanout" | "topic") => {
            admin
                .rpc(AMQPClass::Exchange(exchange::AMQPMethod::Declare(
                    exchange::Declare {
                        exchange: exchange_name.as_str().into(),
                        kind: kind.into(),
                        passive: false,
                        durable: a.persistent,
                        auto_delete: false,
                        internal: false,
                        nowait: false,
                        arguments: FieldTable::default(),
                    },
                )))
                .await?;
            let bind = |q: &str, key: String| {
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: q.into(),
                    exchange: exchange_name.as_str().into(),
                    routing_key: key.into(),
                    nowait: false,
                    arguments: FieldTable::default(),
                }))
            };
            if kind == "fanout" {
                for q in &queues {
                    admin.rpc(bind(q, String::new())).await?;
                }
                vec![encode_publish(
                    &exchange_name,
                    "",
                    a.persistent,
                    &body,
                    frame_max,
                )]
            } else {
                for i in 0..a.bindings.max(1) {
                    admin
                        .rpc(bind(&queues[i % queues.len()], format!("perf.{i}.*")))
                        .await?;
                }
                (0..a.bindings.clamp(1, 64))
                    .map(|i| {
                        encode_publish(
                            &exchange_name,
                            &format!("perf.{i}.msg"),
                            a.persistent,
                            &body,
                            frame_max,
                        )
                    })
                    .collect()
            }
        }
        other => bail!("--exchange-type is direct, fanout or topic, not {other:?}"),
    };
    let c = Arc::new(Counters {
        published: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for i in 0..a.consumers {
        tasks.push(tokio::spawn(consume(
            url.clone(),
            queues[i % queues.len()].clone(),
            a.prefetch,
            manual,
            a.ack_every,
            c.clone(),
        )));
    }
    // Let consumers attach before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_rate = if a.rate > 0 {
        (a.rate / a.producers.max(1) as u64).max(1)
    } else {
        0
    };
    for _ in 0..a.producers {
        tasks.push(tokio::spawn(produce(
            url.clone(),
            frames.clone(),
            a.confirm,
            per_rate,
            c.clone(),
        )));
    }
    let started = Instant::now();
    let (mut p0, mut f0, mut c0) = (0, 0, 0);
    let mut per_second = Vec::new();
    for s in 1..=a.common.duration {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let (p, f, r) = (
            c.published.load(Ordering::Relaxed),
            c.confirmed.load(Ordering::Relaxed),
            c.consumed.load(Ordering::Relaxed),
        );
        if !a.common.json {
            eprintln!(
                "{s:>3}s  sent {:>8}/s  confirmed {:>8}/s  received {:>8}/s",
                fmt_rate((p - p0) as f64),
                fmt_rate((f - f0) as f64),
                fmt_rate((r - c0) as f64)
            );
        }
        per_second.push((r - c0) as f64);
        (p0, f0, c0) = (p, f, r);
        if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
            let _ = t;
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    c.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(5), t).await {
            Ok(Ok(Err(e))) => return Err(e.context("a producer or consumer failed")),
            Ok(Err(e)) => bail!("a task panicked: {e}"),
            _ => {}
        }
    }
    let sent = p0 as f64 / elapsed;
    let received = c0 as f64 / elapsed;
    let confirmed = f0 as f64 / elapsed;
    let deliveries_per_message = if a.exchange_type == "fanout" {
        queues.len()
    } else {
        1
    };
    // Clean up what the run declared.
    for q in &queues {
        let _ = admin
            .cast(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: q.as_str().into(),
                if_unused: false,
                if_empty: false,
                nowait: true,
            })))
            .await;
    }
    if a.exchange_type != "direct" {
        let _ = admin
            .cast(AMQPClass::Exchange(exchange::AMQPMethod::Delete(
                exchange::Delete {
                    exchange: exchange_name.as_str().into(),
                    if_unused: false,
                    nowait: true,
                },
            )))
            .await;
    }
    if a.common.json {
        println!(
            "{}",
            json!({
                "scenario": "throughput",
                "producers": a.producers, "consumers": a.consumers, "size": a.size,
                "persistent": a.persistent, "confirm": a.confirm, "ack": a.ack,
                "exchange_type": a.exchange_type, "queues": a.queues,
                "seconds": elapsed,
                "sent_per_sec": sent, "confirmed_per_sec": confirmed,
                "received_per_sec": received,
                "messages_per_sec": received / deliveries_per_message as f64,
                "bytes_per_sec": received * a.size as f64,
            })
        );
    } else {
        println!(
            "throughput: sent {}/s, confirmed {}/s, received {}/s ({} deliveries/s, {:.1} MB/s) over {elapsed:.1}s",
            fmt_rate(sent),
            fmt_rate(confirmed),
            fmt_rate(received / deliveries_per_message as f64),
            fmt_rate(received),
            received * a.size as f64 / 1e6
        );
    }
    Ok(())
}

async fn latency(a: LatencyArgs) -> anyhow::Result<()> {
    let url = a.common.url.clone();
    let size = a.size.max(8);
    let q = format!("perf-{}-lat", tag());
    let mut admin = Wire::connect(&url).await?;
    admin
        .declare_queue(&q, false, FieldTable::default())
        .await?;
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumer = Wire::connect(&url).await?;
    consumer.consume(&q, 1000, true).await?;
    let expected = a.rate * a.common.duration;
    let stop_c = stop.clone();
    let collector = tokio::spawn(async move {
        let mut samples: Vec<u64> = Vec::with_capacity(expected as usize + 16);
        let mut scan = Scan::default();
        loop {
            let r = tokio::select! {
                r = consumer.read_scan(&mut scan, |body| {
                    if body.len() >= 8 {
                        let sent = u64::from_be_bytes(body[..8].try_into().unwrap_or_default());
                        let now = base.elapsed().as_nanos() as u64;
                        samples.push(now.saturating_sub(sent));
                    }
                }) => r,
                _ = tokio::time::sleep(Duration::from_millis(200)) => Ok(()),
            };
            r?;
            if stop_c.load(Ordering::Relaxed) && samples.len() as u64 >= expected {
                break;
            }
            if stop_c.load(Ordering::Relaxed)
                && base.elapsed() > Duration::from_secs(a.common.duration + 3)
            {
                break;
            }
        }
        anyhow::Ok(samples)
    });
    let mut producer = Wire::connect(&url).await?;
    if a.confirm {
        producer.confirm_select().await?;
    }
    let template = encode_publish("", &q, a.persistent, &vec![0u8; size], producer.frame_max);
    // Confirm latency: send time of every unconfirmed publish, oldest first.
    let mut unconfirmed: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut confirm_samples: Vec<u64> = Vec::new();
    let mut scan = Scan::default();
    let mut confirmed_upto = 0u64;
    // The body is the last bytes before the final frame-end octet.
    let ts_at = template.len() - 1 - size;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    while sent < expected {
        let due = ((started.elapsed().as_secs_f64() * a.rate as f64) as u64).min(expected);
        if due <= sent {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        out.clear();
        let now = base.elapsed().as_nanos() as u64;
        for _ in sent..due {
            let at = out.len();
            out.extend_from_slice(&template);
            out[at + ts_at..at + ts_at + 8].copy_from_slice(&now.to_be_bytes());
        }
        producer.wr.write_all(&out).await?;
        if a.confirm {
            unconfirmed.extend(std::iter::repeat_n(now, (due - sent) as usize));
            while let Ok(n) = producer.rd.try_read_buf(&mut producer.buf) {
                if n == 0 {
                    bail!("the broker closed the connection");
                }
            }
            drain_buffered(&mut producer, &mut scan);
            take_confirms(
                &mut scan,
                &mut confirmed_upto,
                &mut unconfirmed,
                &mut confirm_samples,
                base,
            );
        }
        sent = due;
    }
    if a.confirm {
        let deadline = Instant::now() + Duration::from_secs(5);
        while confirmed_upto < sent && Instant::now() < deadline {
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                producer.read_scan(&mut scan, |_| {}),
            )
            .await;
            take_confirms(
                &mut scan,
                &mut confirmed_upto,
                &mut unconfirmed,
                &mut confirm_samples,
                base,
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = collector.await.context("collector")??;
    let _ = admin
        .cast(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: q.as_str().into(),
            if_unused: false,
            if_empty: false,
            nowait: true,
        })))
        .await;
    if samples.is_empty() {
        bail!("no message came back");
    }
    samples.sort_unstable();
    let pct =
        |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)] as f64 / 1e6;
    let (p50, p99, p999, max) = (
        pct(0.5),
        pct(0.99),
        pct(0.999),
        *samples.last().unwrap_or(&0) as f64 / 1e6,
    );
    confirm_samples.sort_unstable();
    let cpct = |p: f64| {
        let n = confirm_samples.len();
        (n > 0).then(|| confirm_samples[((n as f64 * p) as usize).min(n - 1)] as f64 / 1e6)
    };
    let (c50, c99) = (cpct(0.5), cpct(0.99));
    if a.common.json {
        println!(
            "{}",
            json!({"scenario": "latency", "rate": a.rate, "size": size, "samples": samples.len(),
                   "persistent": a.persistent, "confirm": a.confirm,
                   "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
                   "confirm_p50_ms": c50, "confirm_p99_ms": c99})
        );
    } else {
        println!(
            "latency at {} msg/s, {} samples: p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms{}",
            a.rate,
            samples.len(),
            match (c50, c99) {
                (Some(c50), Some(c99)) => format!("; confirms p50 {c50:.3} ms, p99 {c99:.3} ms"),
                _ => String::new(),
            }
        );
    }
    Ok(())
}

async fn connections(a: ConnectionsArgs) -> anyhow::Result<()> {
    let before = a.broker_pid.and_then(rss_bytes);
    let started = Instant::now();
    let mut held = Vec::with_capacity(a.count);
    let mut failed = None;
    let limit = Duration::from_secs(a.connect_timeout);
    for i in 0..a.count {
        match tokio::time::timeout(limit, Wire::connect(&a.common.url)).await {
            Ok(Ok(w)) => held.push(w),
            Ok(Err(e)) => {
                failed = Some(format!("connection {} failed: {e:#}", i + 1));
                break;
            }
            Err(_) => {
                failed = Some(format!(
                    "connection {} was not opened within {}s: the broker stopped accepting",
                    i + 1,
                    a.connect_timeout
                ));
                break;
            }
        }
        if !a.common.json && (i + 1) % 1000 == 0 {
            eprintln!("{} connections open", i + 1);
        }
    }
    // Give the broker a moment to settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = a.broker_pid.and_then(rss_bytes);
    let per_conn = match (before, after) {
        (Some(b), Some(a2)) if !held.is_empty() => {
            Some(a2.saturating_sub(b) as f64 / held.len() as f64)
        }
        _ => None,
    };
    if a.common.json {
        println!(
            "{}",
            json!({"scenario": "connections", "requested": a.count, "held": held.len(),
                   "seconds": started.elapsed().as_secs_f64(), "rss_before": before, "rss_after": after,
                   "bytes_per_connection": per_conn, "error": failed})
        );
    } else {
        println!(
            "connections: {} of {} held{}{}",
            held.len(),
            a.count,
            per_conn
                .map(|b| format!(", {:.1} KiB of broker RSS each", b / 1024.0))
                .unwrap_or_default(),
            failed.map(|f| format!(" ({f})")).unwrap_or_default()
        );
    }
    Ok(())
}

async fn backlog(a: BacklogArgs) -> anyhow::Result<()> {
    let url = a.common.url.clone();
    let q = format!("perf-{}-backlog", tag());
    let rss0 = a.broker_pid.and_then(rss_bytes);
    let mut p = Wire::connect(&url).await?;
    p.declare_queue(&q, a.persistent, FieldTable::default())
        .await?;
    p.confirm_select().await?;
    let frame = encode_publish("", &q, a.persistent, &vec![b'x'; a.size], p.frame_max);
    let started = Instant::now();
    let mut scan = Scan::default();
    let (mut sent, window) = (0u64, 5000u64);
    let mut out = Vec::with_capacity(256 * 1024);
    while scan.acked_upto < a.count {
        if sent < a.count && sent - scan.acked_upto < window {
            let n = (window - (sent - scan.acked_upto))
                .min(a.count - sent)
                .min(512);
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(&frame);
            }
            p.wr.write_all(&out).await?;
            sent += n;
        } else {
            p.read_scan(&mut scan, |_| {}).await?;
        }
    }
    let publish_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = a.broker_pid.and_then(rss_bytes);
    let mut c = Wire::connect(&url).await?;
    let drain_started = Instant::now();
    c.consume(&q, 2000, false).await?;
    let mut scan = Scan::default();
    let mut unacked = 0;
    while scan.deliveries < a.count {
        let before = scan.deliveries;
        c.read_scan(&mut scan, |_| {}).await?;
        unacked += scan.deliveries - before;
        if unacked >= 500 {
            c.cast(ack_multiple(scan.last_tag)).await?;
            unacked = 0;
        }
    }
    c.cast(ack_multiple(scan.last_tag)).await?;
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let _ = p
        .cast(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: q.as_str().into(),
            if_unused: false,
            if_empty: false,
            nowait: true,
        })))
        .await;
    let per_msg = match (rss0, rss1) {
        (Some(b), Some(a2)) => Some(a2.saturating_sub(b) as f64 / a.count as f64),
        _ => None,
    };
    if a.common.json {
        println!(
            "{}",
            json!({"scenario": "backlog", "count": a.count, "size": a.size, "persistent": a.persistent,
                   "publish_per_sec": a.count as f64 / publish_secs, "rss_before": rss0, "rss_queued": rss1,
                   "rss_bytes_per_message": per_msg, "drain_per_sec": a.count as f64 / drain_secs})
        );
    } else {
        println!(
            "backlog: {} messages queued at {}/s{}; drained at {}/s",
            a.count,
            fmt_rate(a.count as f64 / publish_secs),
            match (rss1, per_msg) {
                (Some(r), Some(m)) => format!(
                    ", broker RSS {:.1} MB ({m:.0} B per message)",
                    r as f64 / 1e6
                ),
                _ => String::new(),
            },
            fmt_rate(a.count as f64 / drain_secs)
        );
    }
    Ok(())
}
