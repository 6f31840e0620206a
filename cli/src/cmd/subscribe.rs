//! `warren subscribe QUEUE` (alias `consume`), or `warren subscribe --exchange X --binding-key K`
//! through a temporary exclusive queue: print each message until --count is reached, the reader
//! goes away, or Ctrl-C; then cancel the consumer and close cleanly.

use std::io::IsTerminal;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::Channel;

use crate::client::{self, short, ConnArgs, Failure, Session};
use crate::output::{is_broken_pipe, AckArgs, Format, Printer};
use crate::table::{self, Entry};

/// Prefetch when neither --prefetch nor a smaller --count says otherwise.
const DEFAULT_PREFETCH: u16 = 100;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren subscribe orders                          # print bodies until Ctrl-C
  warren subscribe orders --count 10 --format json | jq .body
  warren subscribe --exchange amq.topic --binding-key 'eu.#'
  warren subscribe orders --nack --count 1         # dead-letter one message (if the queue has a DLX)
  warren subscribe orders --requeue --count 3      # watch a message come back, redelivered=true
  warren subscribe events --offset first           # a stream, from its first message
  warren subscribe events --offset 1h              # a stream, what was written in the last hour
  warren subscribe events --offset 2026-12-01T00:00:00Z --count 10
  warren subscribe orders --group billing --offset first   # a consumer group's member

QUEUE may name a partitioned stream (warren declare stream orders --partitions 3): then every
partition (orders-0, orders-1, ...) is consumed. With --group, consumers that give the same group
share the partitions, one member reading each, and take over (from the group's last acked
message) the partitions of a member that leaves or dies.

With --count and plain acks, printed messages are acknowledged together at the end (or whenever
--prefetch of them are waiting), so when --count is at most --prefetch the broker sends exactly
--count messages and none comes back marked redelivered.")]
pub struct SubscribeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Queue to consume from.
    #[arg(required_unless_present = "exchange", conflicts_with = "exchange")]
    queue: Option<String>,
    /// Consume from this exchange instead, through a temporary exclusive queue bound to it.
    #[arg(long, short = 'e', value_name = "EXCHANGE")]
    exchange: Option<String>,
    /// Binding key for --exchange ('#' takes everything from a topic exchange; fanout ignores it).
    #[arg(long, short = 'k', value_name = "KEY", default_value = "#")]
    binding_key: String,
    /// Binding argument for --exchange, repeatable, typed like `warren declare --arg`
    /// (headers exchanges: --binding-arg x-match=all --binding-arg format:str=pdf).
    #[arg(long = "binding-arg", value_name = "KEY=VALUE", value_parser = table::parse_arg,
          requires = "exchange")]
    binding_args: Vec<Entry>,
    /// How to print each message.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    ack: AckArgs,
    /// Most unacknowledged messages the broker may send ahead (basic.qos; 0 means no limit)
    /// [default: --count if smaller than 100, else 100].
    #[arg(long, value_name = "N")]
    prefetch: Option<u16>,
    /// Exit after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Where to start reading a stream (x-stream-offset): first, last (the last chunk), next
    /// (the default: only new messages), an offset N, a time (2026-12-01T00:00:00Z) or an
    /// interval back from now (7D, 1h, 30m, 10s).
    #[arg(long, value_name = "WHERE", value_parser = parse_offset)]
    offset: Option<OffsetArg>,
    /// Join this consumer group of a stream (x-consumer-group): the group's members share its
    /// partitions, one member active on each.
    #[arg(long, value_name = "NAME", requires = "queue")]
    group: Option<String>,
}

/// A parsed `--offset`.
#[derive(Debug, Clone)]
struct OffsetArg(lapin::types::AMQPValue);

fn parse_offset(s: &str) -> Result<OffsetArg, String> {
    use lapin::types::AMQPValue;
    let v = match s {
        "first" | "last" | "next" => AMQPValue::LongString(s.into()),
        _ if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => AMQPValue::LongLongInt(
            s.parse()
                .map_err(|_| format!("offset '{s}' is too large"))?,
        ),
        _ if s.len() > 1
            && s[..s.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && s.ends_with(['Y', 'M', 'D', 'h', 'm', 's']) =>
        {
            AMQPValue::LongString(s.into())
        }
        _ => AMQPValue::Timestamp(rfc3339_seconds(s).ok_or_else(|| {
            format!("'{s}' is not first, last, next, an offset, a time such as 2026-12-01T00:00:00Z or an interval such as 1h")
        })?),
    };
    Ok(OffsetArg(v))
}

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn rfc3339_seconds(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Why consuming stopped.
enum End {
    /// --count messages were printed.
    Count,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Whoever reads stdout went away.
    ReaderGone,
    /// The broker cancelled the consumer (the queue was deleted, say).
    Cancelled,
}

fn consume_args(args: &SubscribeArgs) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(OffsetArg(v)) = &args.offset {
        t.insert("x-stream-offset".into(), v.clone());
    }
    if let Some(g) = &args.group {
        t.insert(
            "x-consumer-group".into(),
            lapin::types::AMQPValue::LongString(g.as_str().into()),
        );
    }
    t
}

/// Whether queue `name` exists (a passive declare, on a channel of its own since a refusal
/// closes the channel).
async fn queue_exists(connection: &lapin::Connection, name: &str) -> anyhow::Result<bool> {
    let ch = connection.create_channel().await?;
    let found = ch
        .queue_declare(
            short(name, "the queue name")?,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match found {
        Ok(_) => {
            let _ = ch.close(200, "ok".into()).await;
            Ok(true)
        }
        Err(e) => match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404 => Ok(false),
            _ => Err(e.into()),
        },
    }
}

/// The queues `name` stands for: itself if it is a queue, else the partitions of the
/// partitioned stream `name` (`name-0`, `name-1`, ... while they exist). A name that is neither
/// is returned as is, for the consume to report.
async fn resolve(session: &Session, name: &str) -> anyhow::Result<Vec<ShortString>> {
    use warren_broker::stream::partitions::{partition_name, MAX_PARTITIONS};
    if queue_exists(&session.connection, name).await? {
        return Ok(vec![short(name, "the queue name")?]);
    }
    let mut parts = Vec::new();
    while (parts.len() as u32) < MAX_PARTITIONS {
        let p = partition_name(name, parts.len() as u32);
        if !queue_exists(&session.connection, &p).await? {
            break;
        }
        parts.push(short(&p, "the partition name")?);
    }
    if parts.is_empty() {
        parts.push(short(name, "the queue name")?);
    }
    Ok(parts)
}

pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    args.ack.check()?;
    let session = Session::open(&args.conn, "subscribe").await?;
    let channel = &session.channel;
    let queues = match (&args.queue, &args.exchange) {
        (Some(queue), _) => resolve(&session, queue).await?,
        (None, Some(exchange)) => vec![temporary_queue(channel, exchange, &args).await?],
        (None, None) => unreachable!("clap requires a queue or --exchange"),
    };
    let queue = match &args.queue {
        Some(q) if queues.len() > 1 => ShortString::from(q.as_str()),
        _ => queues[0].clone(),
    };
    let no_ack = args.ack.no_ack();
    let prefetch = args.prefetch.unwrap_or_else(|| match args.count {
        Some(n) if n < u64::from(DEFAULT_PREFETCH) => n as u16,
        _ => DEFAULT_PREFETCH,
    });
    if !no_ack {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
    }
    let mut consumers = Vec::with_capacity(queues.len());
    for q in &queues {
        consumers.push(
            channel
                .basic_consume(
                    q.clone(),
                    ShortString::default(),
                    BasicConsumeOptions {
                        no_ack,
                        ..BasicConsumeOptions::default()
                    },
                    consume_args(&args),
                )
                .await?,
        );
    }
    let tags: Vec<ShortString> = consumers.iter().map(|c| c.tag()).collect();
    let mut consumer = futures_util::stream::select_all(consumers);
    if std::io::stderr().is_terminal() {
        if queues.len() > 1 {
            eprintln!(
                "waiting for messages on the {} partitions of '{queue}'; Ctrl-C to stop",
                queues.len()
            );
        } else {
            eprintln!("waiting for messages on queue '{queue}'; Ctrl-C to stop");
        }
    }

    // Plain acks under --count are deferred so the broker's credit never exceeds the count.
    let batch = args.count.is_some() && !(args.ack.nack || args.ack.reject || args.ack.requeue);
    let mut unacked = Unacked::default();
    let mut printer = Printer::new(args.format);
    let mut received = 0u64;
    let interrupted = client::interrupted();
    tokio::pin!(interrupted);
    let end = loop {
        if args.count == Some(received) {
            break End::Count;
        }
        let next = tokio::select! {
            biased;
            _ = &mut interrupted => break End::Interrupted,
            next = consumer.next() => next,
        };
        let delivery = match next {
            None => break End::Cancelled,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(d)) => d,
        };
        match printer.print(&delivery, None) {
            Err(e) if is_broken_pipe(&e) => break End::ReaderGone,
            Err(e) => return Err(e).context("writing to stdout"),
            Ok(()) => {}
        }
        received += 1;
        if no_ack {
            continue;
        }
        if batch {
            unacked.push(delivery.delivery_tag);
            let done = args.count == Some(received);
            if !done && prefetch != 0 && unacked.count >= u32::from(prefetch) {
                unacked.flush(channel).await?;
            }
        } else {
            args.ack.settle(&delivery).await?;
        }
    };
    if let End::Cancelled = end {
        return Err(Failure::new(format!(
            "the broker cancelled the consumer on queue '{queue}' (was the queue deleted?)"
        ))
        .into());
    }
    if let End::Interrupted = end {
        client::exit_on_second_interrupt();
    }
    // Cancel before the last ack: an ack frees prefetch credit the broker would spend at once.
    for tag in tags {
        let _ = channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await;
    }
    unacked.flush(channel).await?;
    session.close().await
}

/// Declares a server-named exclusive queue and binds it to `exchange`.
async fn temporary_queue(
    channel: &Channel,
    exchange: &str,
    args: &SubscribeArgs,
) -> anyhow::Result<ShortString> {
    let queue = channel
        .queue_declare(
            ShortString::default(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            short(exchange, "the exchange name")?,
            short(&args.binding_key, "the binding key")?,
            QueueBindOptions::default(),
            table::to_table(&args.binding_args),
        )
        .await?;
    Ok(queue.name().clone())
}

/// Printed deliveries not yet acknowledged.
#[derive(Default)]
struct Unacked {
    /// The highest delivery tag printed; one ack with `multiple` settles it and all before it.
    last: Option<u64>,
    /// How many are waiting.
    count: u32,
}

impl Unacked {
    fn push(&mut self, tag: u64) {
        self.last = Some(tag);
        self.count += 1;
    }

    async fn flush(&mut self, channel: &Channel) -> lapin::Result<()> {
        if let Some(tag) = self.last.take() {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        self.count = 0;
        Ok(())
    }
}
