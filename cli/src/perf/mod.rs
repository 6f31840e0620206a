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

use crate::table::{self, Entry};
use wire::{ack_multiple, encode_publish, Confirms, Scan, Wire};

/// `warren perf` and its scenarios.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  warren perf throughput -x 1 -y 1 -s 16 --duration 10
  warren perf throughput --persistent --confirm 1000 --ack manual
  warren perf throughput --exchange-type fanout --queues 10 -y 10
  warren perf latency --rate 10000 --duration 10
  warren perf latency --rate 2000 --persistent --confirm   # confirm latency after fsync
  warren perf throughput -y 0 --confirm 100 --queue-arg x-max-length=1000 --queue-arg x-overflow=reject-publish
  warren perf connections -n 10000 --broker-pid $(pgrep -n warren)
  warren perf backlog -n 1000000 -s 16 --broker-pid $(pgrep -n warren)
  warren perf stream -n 1000000 -s 1024 --consumers 10 --broker-pid $(pgrep -n warren)
  warren perf sink --bind 127.0.0.1:5699   # a broker that discards everything: the client's ceiling
  warren perf sink --echo                  # publishes sent straight back: the latency floor

Throughput, latency and backlog runs account for every message: sent, confirmed, nacked,
unconfirmed (no basic.ack or basic.nack by the end), received, left in the run's queues
(counted before they are deleted) and lost (neither received nor left in a queue). A run
with any message nacked, unconfirmed or lost prints its summary and then fails (exit 1).")]
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
    /// Append N messages to a stream with confirms, then replay them to several consumers.
    Stream(StreamArgs),
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
    /// direct (the default exchange), fanout, topic or x-consistent-hash (each queue bound
    /// with weight 1; messages carry 1,024 routing keys in turn).
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
    /// Seconds to run before --duration starts, left out of the rates.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// An argument for the queues the run declares, repeatable, typed as for
    /// `warren declare queue --arg`: --queue-arg x-max-length=1000.
    #[arg(long = "queue-arg", value_name = "KEY=VALUE", value_parser = table::parse_arg)]
    pub queue_args: Vec<Entry>,
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
    /// Seconds to send at the rate before --duration starts, left out of the percentiles.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Use this queue (declared if missing, durable with --persistent; kept after the run)
    /// instead of a temporary one. It should be empty and have no other consumer.
    #[arg(long)]
    pub queue: Option<String>,
    /// An argument for the queue the run declares, repeatable: --queue-arg x-max-length=1000.
    #[arg(long = "queue-arg", value_name = "KEY=VALUE", value_parser = table::parse_arg)]
    pub queue_args: Vec<Entry>,
    /// Definition churn during the run: another connection declares a durable queue, binds it
    /// to amq.direct and deletes it, in a loop, as fast as the broker answers. The summary
    /// gives the cycles per second.
    #[arg(long)]
    pub churn: bool,
    /// With --churn: at most this many cycles per second (0: as fast as the broker answers),
    /// to compare brokers under the same definition load.
    #[arg(long, default_value_t = 0, requires = "churn")]
    pub churn_rate: u32,
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
    /// An argument for the queue the run declares, repeatable: --queue-arg x-max-length=1000.
    #[arg(long = "queue-arg", value_name = "KEY=VALUE", value_parser = table::parse_arg)]
    pub queue_args: Vec<Entry>,
}

#[derive(clap::Args, Clone)]
pub struct StreamArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages to append.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Body size in bytes.
    #[arg(short = 's', long, default_value_t = 1024)]
    pub size: usize,
    /// Consumers replaying the stream at once, each from the start (one connection each).
    #[arg(short = 'y', long, default_value_t = 10)]
    pub consumers: usize,
    /// Each consumer's prefetch (its credit).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Publisher confirm window while appending.
    #[arg(long, default_value_t = 5000)]
    pub confirm: u64,
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
        Scenario::Stream(a) => stream(a).await,
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

/// How long, after the last publish, a run waits for the broker's outstanding confirms.
const CONFIRM_GRACE: Duration = Duration::from_secs(10);
/// How long consumers may receive nothing before a run stops waiting for what it still expects.
const DRAIN_QUIET: Duration = Duration::from_secs(5);

/// What became of the messages a run sent, counted at its end: the figures it is judged by.
struct Outcome {
    /// Messages published.
    sent: u64,
    /// With publisher confirms: the final tally of basic.ack and basic.nack.
    confirms: Option<Confirmed>,
    /// Deliveries the run should have seen: every message not nacked, once per queue it
    /// reaches.
    expected: u64,
    /// Deliveries the consumers received.
    received: u64,
    /// Messages still in the run's queues at the end (ready ones, counted before deletion).
    left: u64,
}

/// The publisher-confirm part of an [`Outcome`].
#[derive(Clone, Copy)]
struct Confirmed {
    /// Publishes the broker acked.
    acked: u64,
    /// Publishes the broker nacked: refused, not a confirm.
    nacked: u64,
    /// Publishes neither acked nor nacked within [`CONFIRM_GRACE`] of the last one.
    unconfirmed: u64,
}

impl Confirmed {
    fn of(c: &Confirms) -> Confirmed {
        Confirmed {
            acked: c.acked,
            nacked: c.nacked,
            unconfirmed: c.outstanding(),
        }
    }
}

impl Outcome {
    /// Expected deliveries that were neither received nor left in a queue.
    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received + self.left)
    }

    /// The counts, as fields of a `--json` summary.
    fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let c = self.confirms;
        let v = json!({
            "sent": self.sent,
            "confirmed": c.map(|c| c.acked),
            "nacked": c.map(|c| c.nacked),
            "unconfirmed": c.map(|c| c.unconfirmed),
            "expected": self.expected,
            "received": self.received,
            "left_in_queues": self.left,
            "lost": self.lost(),
        });
        match v {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    /// One line for people: `sent 1000, confirmed 990, nacked 10, unconfirmed 0; ...`.
    fn line(&self) -> String {
        let confirms = match self.confirms {
            Some(c) => format!(
                ", confirmed {}, nacked {}, unconfirmed {}",
                c.acked, c.nacked, c.unconfirmed
            ),
            None => String::new(),
        };
        format!(
            "messages: sent {}{confirms}; received {} of {} expected deliveries, {} left in queues, {} lost",
            self.sent,
            self.received,
            self.expected,
            self.left,
            self.lost()
        )
    }

    /// Fails the run if the broker nacked a message, never confirmed one, or lost one.
    fn verdict(&self) -> anyhow::Result<()> {
        let mut wrong = Vec::new();
        if let Some(c) = self.confirms {
            if c.nacked > 0 {
                wrong.push(format!("{} nacked by the broker", c.nacked));
            }
            if c.unconfirmed > 0 {
                wrong.push(format!(
                    "{} neither acked nor nacked within {}s of the last publish",
                    c.unconfirmed,
                    CONFIRM_GRACE.as_secs()
                ));
            }
        }
        if self.lost() > 0 {
            wrong.push(format!(
                "{} of {} expected deliveries lost (neither received nor left in a queue)",
                self.lost(),
                self.expected
            ));
        }
        if wrong.is_empty() {
            return Ok(());
        }
        bail!(
            "the run failed: of {} messages sent, {}",
            self.sent,
            wrong.join("; ")
        )
    }
}

/// Merges the outcome's counts into a `--json` summary.
fn with_outcome(mut summary: serde_json::Value, outcome: &Outcome) -> serde_json::Value {
    if let serde_json::Value::Object(m) = &mut summary {
        m.extend(outcome.json_fields());
    }
    summary
}

/// The `--queue-arg` entries as a queue.declare argument table.
fn queue_arguments(entries: &[Entry]) -> FieldTable {
    let mut t = FieldTable::default();
    for e in entries {
        t.insert(e.key.clone(), e.value.clone());
    }
    t
}

/// Deletes a queue the run declared, without waiting for the reply.
async fn delete_queue(admin: &mut Wire, name: &str) {
    let _ = admin
        .cast(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: name.into(),
            if_unused: false,
            if_empty: false,
            nowait: true,
        })))
        .await;
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    consumed: AtomicU64,
    /// Consumers whose basic.consume was answered.
    attached: AtomicU64,
    /// Tells producers to stop publishing (they then wait for their outstanding confirms).
    stop_producers: AtomicBool,
    /// Tells consumers to stop once nothing more arrives.
    stop_consumers: AtomicBool,
}

impl Counters {
    /// Adds what `confirms` settled since `seen` (acked, nacked) to the shared counts.
    fn credit(&self, confirms: &Confirms, seen: &mut (u64, u64)) {
        self.confirmed
            .fetch_add(confirms.acked - seen.0, Ordering::Relaxed);
        self.nacked
            .fetch_add(confirms.nacked - seen.1, Ordering::Relaxed);
        *seen = (confirms.acked, confirms.nacked);
    }
}

/// One producer: pre-encoded publishes written in batches; confirms are read as they arrive,
/// also while the producer waits for its window or its rate.
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
    let mut seen = (0, 0);
    let mut out: Vec<u8> = Vec::with_capacity(256 * 1024);
    let started = Instant::now();
    let mut variant = 0usize;
    while !c.stop_producers.load(Ordering::Relaxed) {
        let sent = scan.confirms.published;
        let mut room = 256u64;
        let mut wait = Duration::from_millis(100);
        if confirm > 0 {
            room = room.min(confirm.saturating_sub(scan.confirms.outstanding()));
        }
        if rate > 0 {
            let elapsed = started.elapsed();
            let due = (elapsed.as_secs_f64() * rate as f64) as u64;
            room = room.min(due.saturating_sub(sent));
            let next = Duration::from_secs_f64((sent + 1) as f64 / rate as f64);
            wait = wait.min(next.saturating_sub(elapsed));
        }
        if room == 0 {
            // The window is full or the rate is ahead: take confirms (or a close) as they come.
            tokio::select! {
                r = w.read_scan(&mut scan, |_| {}) => r?,
                _ = tokio::time::sleep(wait) => {}
            }
            c.credit(&scan.confirms, &mut seen);
            continue;
        }
        out.clear();
        for _ in 0..room {
            out.extend_from_slice(&frames[variant]);
            variant = (variant + 1) % frames.len();
        }
        w.wr.write_all(&out).await?;
        scan.confirms.publish(room, 0);
        c.published.fetch_add(room, Ordering::Relaxed);
        if confirm > 0 {
            w.try_read_scan(&mut scan, |_| {})?;
            c.credit(&scan.confirms, &mut seen);
        }
    }
    if confirm > 0 {
        let deadline = tokio::time::Instant::now() + CONFIRM_GRACE;
        while scan.confirms.outstanding() > 0 {
            match tokio::time::timeout_at(deadline, w.read_scan(&mut scan, |_| {})).await {
                Ok(r) => r?,
                Err(_) => break,
            }
            c.credit(&scan.confirms, &mut seen);
        }
    }
    w.close().await;
    Ok(())
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
    c.attached.fetch_add(1, Ordering::Relaxed);
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
        if c.stop_consumers.load(Ordering::Relaxed) && n == 0 {
            w.close().await;
            return Ok(());
        }
    }
}

/// Waits until `counter` reaches `expected`, or stops moving for [`DRAIN_QUIET`].
async fn wait_for(counter: &AtomicU64, expected: u64) {
    let mut last = counter.load(Ordering::Relaxed);
    let mut moved = Instant::now();
    while last < expected && moved.elapsed() < DRAIN_QUIET {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
}

/// Joins tasks, giving each `limit`; the first error (or panic) fails the run.
async fn join_all(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    limit: Duration,
) -> anyhow::Result<()> {
    for t in tasks {
        match tokio::time::timeout(limit, t).await {
            Ok(Ok(Err(e))) => return Err(e.context("a producer or consumer failed")),
            Ok(Err(e)) => bail!("a task panicked: {e}"),
            _ => {}
        }
    }
    Ok(())
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
            .declare_queue(q, a.persistent, queue_arguments(&a.queue_args))
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
        kind @ ("fanout" | "topic" | "x-consistent-hash") => {
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
            if kind == "x-consistent-hash" {
                for q in &queues {
                    admin.rpc(bind(q, "1".to_owned())).await?;
                }
                (0..1024)
                    .map(|i| {
                        encode_publish(
                            &exchange_name,
                            &format!("key-{i}"),
                            a.persistent,
                            &body,
                            frame_max,
                        )
                    })
                    .collect()
            } else if kind == "fanout" {
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
        other => {
            bail!("--exchange-type is direct, fanout, topic or x-consistent-hash, not {other:?}")
        }
    };
    let c = Arc::new(Counters::default());
    let mut consumers = Vec::new();
    for i in 0..a.consumers {
        consumers.push(tokio::spawn(consume(
            url.clone(),
            queues[i % queues.len()].clone(),
            a.prefetch,
            manual,
            a.ack_every,
            c.clone(),
        )));
    }
    // The clock starts once every consumer is attached (basic.consume-ok).
    let attach_by = Instant::now() + Duration::from_secs(30);
    while c.attached.load(Ordering::Relaxed) < consumers.len() as u64 {
        if let Some(t) = consumers.iter_mut().find(|t| t.is_finished()) {
            t.await.context("consumer")??;
            bail!("a consumer ended before the run started");
        }
        if Instant::now() > attach_by {
            bail!("the consumers did not attach within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let per_rate = if a.rate > 0 {
        (a.rate / a.producers.max(1) as u64).max(1)
    } else {
        0
    };
    let mut producers = Vec::new();
    for _ in 0..a.producers {
        producers.push(tokio::spawn(produce(
            url.clone(),
            frames.clone(),
            a.confirm,
            per_rate,
            c.clone(),
        )));
    }
    let started = Instant::now();
    let counts = || {
        (
            c.published.load(Ordering::Relaxed),
            c.confirmed.load(Ordering::Relaxed),
            c.consumed.load(Ordering::Relaxed),
        )
    };
    // The counts and time when the measured part began (after the warm-up).
    let mut from = ((0, 0, 0), started);
    let mut prev = (0, 0, 0);
    // What each second moved (warm-up included): [sent, confirmed, received].
    let mut seconds = Vec::new();
    for s in 1..=a.warmup + a.common.duration {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let now = counts();
        seconds.push([now.0 - prev.0, now.1 - prev.1, now.2 - prev.2]);
        if !a.common.json {
            let warm = if s <= a.warmup { "  (warm-up)" } else { "" };
            eprintln!(
                "{s:>3}s  sent {:>8}/s  confirmed {:>8}/s  received {:>8}/s{warm}",
                fmt_rate((now.0 - prev.0) as f64),
                fmt_rate((now.1 - prev.1) as f64),
                fmt_rate((now.2 - prev.2) as f64)
            );
        }
        prev = now;
        if s == a.warmup {
            from = (now, Instant::now());
        }
        if producers.iter().chain(&consumers).any(|t| t.is_finished()) {
            break;
        }
    }
    let elapsed = from.1.elapsed().as_secs_f64();
    let (sent, confirmed, received) = (
        (prev.0 - from.0 .0) as f64 / elapsed,
        (prev.1 - from.0 .1) as f64 / elapsed,
        (prev.2 - from.0 .2) as f64 / elapsed,
    );
    c.stop_producers.store(true, Ordering::Relaxed);
    join_all(producers, CONFIRM_GRACE + Duration::from_secs(5)).await?;
    let deliveries_per_message = if a.exchange_type == "fanout" {
        queues.len()
    } else {
        1
    };
    let published = c.published.load(Ordering::Relaxed);
    let nacked = c.nacked.load(Ordering::Relaxed);
    let expected = (published - nacked) * deliveries_per_message as u64;
    if a.consumers > 0 {
        // Let the consumers take what is still on its way.
        wait_for(&c.consumed, expected).await;
    }
    c.stop_consumers.store(true, Ordering::Relaxed);
    join_all(consumers, Duration::from_secs(5)).await?;
    // Count what is left before cleaning up what the run declared.
    let mut left = 0u64;
    for q in &queues {
        left += u64::from(admin.message_count(q).await?);
    }
    for q in &queues {
        delete_queue(&mut admin, q).await;
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
    admin.close().await;
    let outcome = Outcome {
        sent: published,
        confirms: (a.confirm > 0).then(|| Confirmed {
            acked: c.confirmed.load(Ordering::Relaxed),
            nacked,
            unconfirmed: published
                - c.confirmed.load(Ordering::Relaxed)
                - c.nacked.load(Ordering::Relaxed),
        }),
        expected,
        received: c.consumed.load(Ordering::Relaxed),
        left,
    };
    if a.common.json {
        let summary = json!({
            "scenario": "throughput",
            "producers": a.producers, "consumers": a.consumers, "size": a.size,
            "persistent": a.persistent, "confirm": a.confirm, "ack": a.ack,
            "exchange_type": a.exchange_type, "queues": a.queues,
            "warmup_seconds": a.warmup, "seconds": elapsed,
            "sent_per_sec": sent, "confirmed_per_sec": confirmed,
            "received_per_sec": received,
            "messages_per_sec": received / deliveries_per_message as f64,
            "bytes_per_sec": received * a.size as f64,
            "per_second": seconds.iter().map(|[s, c, r]| json!({"sent": s, "confirmed": c, "received": r})).collect::<Vec<_>>(),
        });
        println!("{}", with_outcome(summary, &outcome));
    } else {
        println!(
            "throughput: sent {}/s, confirmed {}/s, received {}/s ({} deliveries/s, {:.1} MB/s) over {elapsed:.1}s",
            fmt_rate(sent),
            fmt_rate(confirmed),
            fmt_rate(received / deliveries_per_message as f64),
            fmt_rate(received),
            received * a.size as f64 / 1e6
        );
        println!("{}", outcome.line());
    }
    outcome.verdict()
}

/// The `p`th percentile of sorted nanosecond samples, in milliseconds.
fn percentile_ms(sorted: &[u64], p: f64) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((n as f64 * p) as usize).min(n - 1)] as f64 / 1e6)
}

async fn latency(a: LatencyArgs) -> anyhow::Result<()> {
    let url = a.common.url.clone();
    let size = a.size.max(8);
    let q = a
        .queue
        .clone()
        .unwrap_or_else(|| format!("perf-{}-lat", tag()));
    let mut admin = Wire::connect(&url).await?;
    admin
        .declare_queue(&q, a.persistent, queue_arguments(&a.queue_args))
        .await?;
    let base = Instant::now();
    let mut consumer = Wire::connect(&url).await?;
    consumer.consume(&q, 1000, true).await?;
    let expected = a.rate * (a.warmup + a.common.duration);
    // Deliveries the collector waits for, set once the producer knows what was not nacked.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let target_c = target.clone();
    let collector = tokio::spawn(async move {
        // (send time, latency) of every message that came back, in nanoseconds.
        let mut samples: Vec<(u64, u64)> = Vec::with_capacity(expected as usize + 16);
        let mut scan = Scan::default();
        let mut quiet_since = Instant::now();
        loop {
            let before = samples.len();
            let r = tokio::select! {
                r = consumer.read_scan(&mut scan, |body| {
                    if body.len() >= 8 {
                        let sent = u64::from_be_bytes(body[..8].try_into().unwrap_or_default());
                        let now = base.elapsed().as_nanos() as u64;
                        samples.push((sent, now.saturating_sub(sent)));
                    }
                }) => r,
                _ = tokio::time::sleep(Duration::from_millis(200)) => Ok(()),
            };
            r?;
            if samples.len() > before {
                quiet_since = Instant::now();
            }
            let target = target_c.load(Ordering::Relaxed);
            if samples.len() as u64 >= target
                || (target != u64::MAX && quiet_since.elapsed() > DRAIN_QUIET)
            {
                break;
            }
        }
        consumer.close().await;
        anyhow::Ok(samples)
    });
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churn = if a.churn {
        let mut w = Wire::connect(&url).await?;
        let (stop, name) = (stop_churn.clone(), format!("perf-{}-churn", tag()));
        let every = (a.churn_rate > 0).then(|| Duration::from_secs(1) / a.churn_rate);
        Some(tokio::spawn(async move {
            let started = Instant::now();
            let mut cycles = 0u64;
            while !stop.load(Ordering::Relaxed) {
                churn_cycle(&mut w, &name).await?;
                cycles += 1;
                if let Some(every) = every {
                    // Cycle n starts n/rate seconds after the first (a late one: at once).
                    let due = started + every * cycles as u32;
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            let secs = started.elapsed().as_secs_f64();
            w.close().await;
            anyhow::Ok((cycles, secs))
        }))
    } else {
        None
    };
    let mut producer = Wire::connect(&url).await?;
    if a.confirm {
        producer.confirm_select().await?;
    }
    let template = encode_publish("", &q, a.persistent, &vec![0u8; size], producer.frame_max);
    let mut scan = Scan {
        confirms: Confirms::timed(base),
        ..Scan::default()
    };
    // The body is the last bytes before the final frame-end octet.
    let ts_at = template.len() - 1 - size;
    let started = Instant::now();
    // Messages sent before this (nanoseconds since `base`) are the warm-up.
    let measured_from = (started + Duration::from_secs(a.warmup) - base).as_nanos() as u64;
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    while sent < expected {
        let due = ((started.elapsed().as_secs_f64() * a.rate as f64) as u64).min(expected);
        if due > sent {
            out.clear();
            let now = base.elapsed().as_nanos() as u64;
            for _ in sent..due {
                let at = out.len();
                out.extend_from_slice(&template);
                out[at + ts_at..at + ts_at + 8].copy_from_slice(&now.to_be_bytes());
            }
            producer.wr.write_all(&out).await?;
            scan.confirms.publish(due - sent, now);
            sent = due;
            continue;
        }
        // Until the next message is due, read confirms as they arrive: each is timed when it
        // comes, not when the next publish goes out.
        let next = started + Duration::from_secs_f64((sent + 1) as f64 / a.rate.max(1) as f64);
        tokio::select! {
            r = producer.read_scan(&mut scan, |_| {}) => r?,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
    if a.confirm {
        let deadline = tokio::time::Instant::now() + CONFIRM_GRACE;
        while scan.confirms.outstanding() > 0 {
            match tokio::time::timeout_at(deadline, producer.read_scan(&mut scan, |_| {})).await {
                Ok(r) => r?,
                Err(_) => break,
            }
        }
    }
    let confirms = a.confirm.then(|| Confirmed::of(&scan.confirms));
    stop_churn.store(true, Ordering::Relaxed);
    let churned = match churn {
        Some(t) => Some(t.await.context("churn")??),
        None => None,
    };
    target.store(sent - confirms.map_or(0, |c| c.nacked), Ordering::Relaxed);
    let samples = collector.await.context("collector")??;
    producer.close().await;
    let left = u64::from(admin.message_count(&q).await?);
    if a.queue.is_none() {
        delete_queue(&mut admin, &q).await;
    }
    admin.close().await;
    let outcome = Outcome {
        sent,
        confirms,
        expected: sent - confirms.map_or(0, |c| c.nacked),
        received: samples.len() as u64,
        left,
    };
    let mut measured: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| *at >= measured_from)
        .map(|(_, l)| *l)
        .collect();
    measured.sort_unstable();
    let mut confirm_samples: Vec<u64> = scan
        .confirms
        .latencies
        .iter()
        .filter(|(at, _)| *at >= measured_from)
        .map(|(_, l)| *l)
        .collect();
    confirm_samples.sort_unstable();
    let pct = |p| percentile_ms(&measured, p);
    let (p50, p99, p999, max) = (pct(0.5), pct(0.99), pct(0.999), pct(1.0));
    let (c50, c99) = (
        percentile_ms(&confirm_samples, 0.5),
        percentile_ms(&confirm_samples, 0.99),
    );
    if a.common.json {
        let summary = json!({"scenario": "latency", "rate": a.rate, "size": size,
               "samples": measured.len(), "warmup_seconds": a.warmup,
               "persistent": a.persistent, "confirm": a.confirm,
               "p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max,
               "confirm_p50_ms": c50, "confirm_p99_ms": c99,
               "churn_cycles": churned.map(|c| c.0),
               "churn_per_sec": churned.map(|(n, secs)| n as f64 / secs.max(1e-9))});
        println!("{}", with_outcome(summary, &outcome));
    } else {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3} ms"));
        println!(
            "latency at {} msg/s, {} samples: p50 {}, p99 {}, p99.9 {}, max {}{}",
            a.rate,
            measured.len(),
            ms(p50),
            ms(p99),
            ms(p999),
            ms(max),
            if a.confirm {
                format!("; confirms p50 {}, p99 {}", ms(c50), ms(c99))
            } else {
                String::new()
            }
        );
        if let Some((n, secs)) = churned {
            println!(
                "definition churn: {n} declare/bind/delete cycles, {:.0}/s",
                n as f64 / secs.max(1e-9)
            );
        }
        println!("{}", outcome.line());
    }
    outcome.verdict()?;
    if measured.is_empty() {
        bail!("no message came back");
    }
    Ok(())
}

/// One cycle of definition churn: a durable queue declared, bound to amq.direct, deleted.
async fn churn_cycle(w: &mut Wire, name: &str) -> anyhow::Result<()> {
    w.declare_queue(name, true, FieldTable::default()).await?;
    match w
        .rpc(AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
            queue: name.into(),
            exchange: "amq.direct".into(),
            routing_key: name.into(),
            nowait: false,
            arguments: FieldTable::default(),
        })))
        .await?
    {
        AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => {}
        other => bail!("unexpected reply to queue.bind: {other:?}"),
    }
    match w
        .rpc(AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: name.into(),
            if_unused: false,
            if_empty: false,
            nowait: false,
        })))
        .await?
    {
        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(_)) => Ok(()),
        other => bail!("unexpected reply to queue.delete: {other:?}"),
    }
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

/// Publishes `count` copies of the encoded publish `frame` on `p` (in confirm mode) with up to
/// `window` confirms outstanding, until all are confirmed or the broker confirms nothing for
/// [`CONFIRM_GRACE`] (those are counted unconfirmed). Returns the confirms and the seconds it
/// took.
async fn publish_confirmed(
    p: &mut Wire,
    frame: &[u8],
    count: u64,
    window: u64,
) -> anyhow::Result<(Scan, f64)> {
    let started = Instant::now();
    let mut scan = Scan::default();
    let mut out = Vec::with_capacity(256 * 1024);
    loop {
        let (sent, outstanding) = (scan.confirms.published, scan.confirms.outstanding());
        if sent == count && outstanding == 0 {
            break;
        }
        if sent < count && outstanding < window {
            let n = (window - outstanding).min(count - sent).min(512);
            out.clear();
            for _ in 0..n {
                out.extend_from_slice(frame);
            }
            p.wr.write_all(&out).await?;
            scan.confirms.publish(n, 0);
        } else {
            match tokio::time::timeout(CONFIRM_GRACE, p.read_scan(&mut scan, |_| {})).await {
                Ok(r) => r?,
                Err(_) => break,
            }
        }
    }
    Ok((scan, started.elapsed().as_secs_f64()))
}

async fn backlog(a: BacklogArgs) -> anyhow::Result<()> {
    let url = a.common.url.clone();
    let q = format!("perf-{}-backlog", tag());
    let rss0 = a.broker_pid.and_then(rss_bytes);
    let mut p = Wire::connect(&url).await?;
    p.declare_queue(&q, a.persistent, queue_arguments(&a.queue_args))
        .await?;
    p.confirm_select().await?;
    let frame = encode_publish("", &q, a.persistent, &vec![b'x'; a.size], p.frame_max);
    let (scan, publish_secs) = publish_confirmed(&mut p, &frame, a.count, 5000).await?;
    let confirms = Confirmed::of(&scan.confirms);
    let sent = scan.confirms.published;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = a.broker_pid.and_then(rss_bytes);
    let mut c = Wire::connect(&url).await?;
    let drain_started = Instant::now();
    c.consume(&q, 2000, false).await?;
    let expected = sent - confirms.nacked;
    let mut scan = Scan::default();
    let mut unacked = 0;
    // The drain rate counts up to the last delivery, not the wait for ones that never came.
    let mut drained_at = drain_started;
    while scan.deliveries < expected {
        let before = scan.deliveries;
        match tokio::time::timeout(DRAIN_QUIET, c.read_scan(&mut scan, |_| {})).await {
            Ok(r) => r?,
            Err(_) => break,
        }
        if scan.deliveries > before {
            drained_at = Instant::now();
        }
        unacked += scan.deliveries - before;
        if unacked >= 500 {
            c.cast(ack_multiple(scan.last_tag)).await?;
            unacked = 0;
        }
    }
    if scan.last_tag > 0 {
        c.cast(ack_multiple(scan.last_tag)).await?;
    }
    let drain_secs = (drained_at - drain_started).as_secs_f64().max(1e-9);
    c.close().await;
    let left = u64::from(p.message_count(&q).await?);
    delete_queue(&mut p, &q).await;
    p.close().await;
    let outcome = Outcome {
        sent,
        confirms: Some(confirms),
        expected,
        received: scan.deliveries,
        left,
    };
    let per_msg = match (rss0, rss1) {
        (Some(b), Some(a2)) => Some(a2.saturating_sub(b) as f64 / a.count as f64),
        _ => None,
    };
    if a.common.json {
        let summary = json!({"scenario": "backlog", "count": a.count, "size": a.size, "persistent": a.persistent,
               "publish_per_sec": sent as f64 / publish_secs, "rss_before": rss0, "rss_queued": rss1,
               "rss_bytes_per_message": per_msg, "drain_per_sec": scan.deliveries as f64 / drain_secs});
        println!("{}", with_outcome(summary, &outcome));
    } else {
        println!(
            "backlog: {} messages queued at {}/s{}; drained at {}/s",
            a.count,
            fmt_rate(sent as f64 / publish_secs),
            match (rss1, per_msg) {
                (Some(r), Some(m)) => format!(
                    ", broker RSS {:.1} MB ({m:.0} B per message)",
                    r as f64 / 1e6
                ),
                _ => String::new(),
            },
            fmt_rate(scan.deliveries as f64 / drain_secs)
        );
        println!("{}", outcome.line());
    }
    outcome.verdict()
}

/// Appends `count` messages to a new stream with confirms (the append rate), then has
/// `consumers` consumers replay all of it from `first` at once (the total delivery rate), with
/// the broker's resident memory before, after appending and at its highest while replaying.
async fn stream(a: StreamArgs) -> anyhow::Result<()> {
    use lapin::types::AMQPValue;
    let url = a.common.url.clone();
    let q = format!("perf-{}-stream", tag());
    let rss0 = a.broker_pid.and_then(rss_bytes);
    let mut p = Wire::connect(&url).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    p.declare_queue(&q, true, args).await?;
    p.confirm_select().await?;
    let frame = encode_publish("", &q, true, &vec![b'x'; a.size], p.frame_max);
    let (scan, append_secs) = publish_confirmed(&mut p, &frame, a.count, a.confirm).await?;
    let confirms = Confirmed::of(&scan.confirms);
    let sent = scan.confirms.published;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1 = a.broker_pid.and_then(rss_bytes);

    // Replay: every consumer reads every stored message from the start.
    let stored = confirms.acked;
    let received = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(rss1.unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = a.broker_pid.map(|pid| {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss_bytes(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let replay_started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.consumers {
        let (url, q, received) = (url.clone(), q.clone(), received.clone());
        let prefetch = a.prefetch;
        tasks.push(tokio::spawn(async move {
            let mut c = Wire::connect(&url).await?;
            let mut args = FieldTable::default();
            args.insert(
                "x-stream-offset".into(),
                AMQPValue::LongString("first".into()),
            );
            c.consume_with(&q, prefetch, false, args).await?;
            let mut scan = Scan::default();
            let mut unacked = 0;
            let ack_every = (u64::from(prefetch) / 2).max(1);
            while scan.deliveries < stored {
                let before = scan.deliveries;
                match tokio::time::timeout(DRAIN_QUIET, c.read_scan(&mut scan, |_| {})).await {
                    Ok(r) => r?,
                    Err(_) => break,
                }
                received.fetch_add(scan.deliveries - before, Ordering::Relaxed);
                unacked += scan.deliveries - before;
                if unacked >= ack_every {
                    c.cast(ack_multiple(scan.last_tag)).await?;
                    unacked = 0;
                }
            }
            c.close().await;
            anyhow::Ok(())
        }));
    }
    join_all(tasks, Duration::from_secs(3600)).await?;
    let replay_secs = replay_started.elapsed().as_secs_f64().max(1e-9);
    done.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    delete_queue(&mut p, &q).await;
    p.close().await;
    let received = received.load(Ordering::Relaxed);
    let expected = stored * a.consumers as u64;
    // A stream keeps its messages: none is "left" to account for; every consumer must have
    // seen every stored one.
    let outcome = Outcome {
        sent,
        confirms: Some(confirms),
        expected,
        received,
        left: 0,
    };
    let peak = a.broker_pid.map(|_| peak.load(Ordering::Relaxed));
    let growth = match (rss1, peak) {
        (Some(a1), Some(p1)) => Some(p1.saturating_sub(a1)),
        _ => None,
    };
    let per_msg = match (rss0, rss1) {
        (Some(b), Some(a1)) => Some(a1.saturating_sub(b) as f64 / a.count.max(1) as f64),
        _ => None,
    };
    if a.common.json {
        let summary = json!({"scenario": "stream", "count": a.count, "size": a.size,
            "consumers": a.consumers, "append_per_sec": sent as f64 / append_secs,
            "replay_per_sec": received as f64 / replay_secs, "rss_before": rss0,
            "rss_appended": rss1, "rss_bytes_per_message": per_msg,
            "rss_replay_peak": peak, "rss_replay_growth": growth});
        println!("{}", with_outcome(summary, &outcome));
    } else {
        println!(
            "stream: {} messages of {} bytes appended at {}/s with confirms{}; {} consumers replayed them at {}/s in total{}",
            a.count,
            a.size,
            fmt_rate(sent as f64 / append_secs),
            match (rss1, per_msg) {
                (Some(r), Some(m)) => format!(", broker RSS {:.1} MB ({m:.1} B per message)", r as f64 / 1e6),
                _ => String::new(),
            },
            a.consumers,
            fmt_rate(received as f64 / replay_secs),
            match growth {
                Some(g) => format!(", broker RSS +{:.1} MB at most while replaying", g as f64 / 1e6),
                None => String::new(),
            }
        );
        println!("{}", outcome.line());
    }
    outcome.verdict()
}
