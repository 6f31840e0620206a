//! `warren declare queue NAME` and `warren declare exchange NAME`, with typed x-arguments.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::ExchangeKind;

use crate::client::{short, ConnArgs, Session};
use crate::table::{self, Entry};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren declare queue orders --durable --arg x-max-length=100
  warren declare exchange events --type topic
  warren declare stream events --max-age 7D --max-bytes 10GB")]
pub struct DeclareArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Declare a queue (or, with --passive, check that it exists).
    Queue(QueueArgs),
    /// Declare an exchange (or, with --passive, check that it exists).
    Exchange(ExchangeArgs),
    /// Declare a stream: a durable queue with x-queue-type stream (an append-only log).
    Stream(StreamArgs),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren declare stream events
  warren declare stream events --max-age 7D --max-bytes 10GB --segment-bytes 100MB
  warren subscribe events --offset first
  warren declare stream orders --partitions 3      # orders-0..2 behind exchange 'orders'
  warren publish orders customer-42 'paid'         # exchange orders, key customer-42
  warren subscribe orders --group billing          # one of the group's members

Retention drops whole segments from the head of the stream once it holds more than --max-bytes
or a segment's newest message is older than --max-age (per partition, with --partitions).

With --partitions N, NAME is an x-consistent-hash exchange in front of streams NAME-0 ..
NAME-(N-1): a message goes to the partition its routing key (or --hash-header) hashes to, so one
key stays in order in one partition. Declaring again with a larger N adds partitions; only the
keys the new partitions take move.")]
struct StreamArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Stream name.
    name: String,
    /// Keep messages this long (x-max-age): a number and Y, M, D, h, m or s, e.g. 7D.
    #[arg(long, value_name = "AGE")]
    max_age: Option<String>,
    /// Keep at most this many bytes (x-max-length-bytes): e.g. 10GB, 500MB, 1000000.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Size of a segment file (x-stream-max-segment-size-bytes; RabbitMQ's default 500MB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    segment_bytes: Option<u64>,
    /// Partition the stream: streams NAME-0 .. NAME-(N-1) behind an x-consistent-hash
    /// exchange NAME.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(warren_broker::stream::partitions::MAX_PARTITIONS)))]
    partitions: Option<u32>,
    /// With --partitions: hash this header's value instead of the routing key.
    #[arg(long, value_name = "HEADER", requires = "partitions")]
    hash_header: Option<String>,
}

/// A size with an optional unit (RabbitMQ's: kB, MB, GB, TB are powers of 1000; KiB, MiB,
/// GiB, TiB powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 10GB or 1000000"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' (kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren declare queue orders --durable
  warren declare queue orders --arg x-max-length=100 --arg x-dead-letter-exchange=dlx
  warren declare queue jobs --arg x-queue-type=quorum --durable
  warren declare queue orders --passive     # does it exist? how many messages?

--arg KEY=VALUE sends integers as signed 64-bit longs, true/false as booleans and anything else
as a string; force a type with KEY:TYPE=VALUE (types: str, long, int, short, byte, bool, double),
e.g. --arg x-max-priority:byte=10. Redeclaring a queue with other settings fails (406).")]
struct QueueArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Queue name; '' asks the broker to pick one (printed).
    name: String,
    /// Survive a broker restart.
    #[arg(long)]
    durable: bool,
    /// Only this connection may use the queue, and it goes when the connection does.
    #[arg(long)]
    exclusive: bool,
    /// Delete the queue once its last consumer goes.
    #[arg(long)]
    auto_delete: bool,
    /// Only check that the queue exists; create nothing.
    #[arg(long)]
    passive: bool,
    /// A queue argument, repeatable: --arg x-max-length=100.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = table::parse_arg)]
    args: Vec<Entry>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren declare exchange events --type topic --durable
  warren declare exchange dlx --type fanout
  warren declare exchange events --arg alternate-exchange=unrouted

--arg is typed as for `warren declare queue`.")]
struct ExchangeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Exchange name.
    name: String,
    /// Exchange type: direct, fanout, topic, headers, or a plugin's type.
    #[arg(
        long = "type",
        short = 't',
        value_name = "TYPE",
        default_value = "direct"
    )]
    kind: String,
    /// Survive a broker restart.
    #[arg(long)]
    durable: bool,
    /// Delete the exchange once its last binding goes.
    #[arg(long)]
    auto_delete: bool,
    /// Clients cannot publish to it; only other exchanges route into it.
    #[arg(long)]
    internal: bool,
    /// Only check that the exchange exists; create nothing.
    #[arg(long)]
    passive: bool,
    /// An exchange argument, repeatable: --arg alternate-exchange=unrouted.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = table::parse_arg)]
    args: Vec<Entry>,
}

pub async fn run(args: DeclareArgs) -> anyhow::Result<()> {
    match args.what {
        What::Queue(q) => queue(q).await,
        What::Exchange(x) => exchange(x).await,
        What::Stream(s) => stream(s).await,
    }
}

async fn stream(args: StreamArgs) -> anyhow::Result<()> {
    use lapin::types::{AMQPValue, FieldTable};
    let name = short(&args.name, "the stream name")?;
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    if let Some(age) = &args.max_age {
        t.insert(
            "x-max-age".into(),
            AMQPValue::LongString(age.as_str().into()),
        );
    }
    if let Some(n) = args.max_bytes {
        t.insert(
            "x-max-length-bytes".into(),
            AMQPValue::LongLongInt(n as i64),
        );
    }
    if let Some(n) = args.segment_bytes {
        t.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(n as i64),
        );
    }
    let session = Session::open(&args.conn, "declare").await?;
    if let Some(n) = args.partitions {
        let mut x = FieldTable::default();
        if let Some(h) = &args.hash_header {
            x.insert(
                "hash-header".into(),
                AMQPValue::LongString(h.as_str().into()),
            );
        }
        warren_broker::stream::partitions::declare(&session.channel, name.as_str(), n, &t, x)
            .await?;
        session.close().await?;
        println!(
            "declared partitioned stream '{name}': exchange '{name}' (x-consistent-hash) and streams '{}' .. '{}'",
            warren_broker::stream::partitions::partition_name(name.as_str(), 0),
            warren_broker::stream::partitions::partition_name(name.as_str(), n - 1),
        );
        return Ok(());
    }
    let q = session
        .channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            t,
        )
        .await?;
    session.close().await?;
    println!(
        "declared stream '{}' ({} messages)",
        q.name(),
        q.message_count()
    );
    Ok(())
}

async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let name = short(&args.name, "the queue name")?;
    let session = Session::open(&args.conn, "declare").await?;
    let queue = session
        .channel
        .queue_declare(
            name,
            QueueDeclareOptions {
                passive: args.passive,
                durable: args.durable,
                exclusive: args.exclusive,
                auto_delete: args.auto_delete,
                nowait: false,
            },
            table::to_table(&args.args),
        )
        .await?;
    session.close().await?;
    let verb = if args.passive {
        "queue"
    } else {
        "declared queue"
    };
    let exists = if args.passive { " exists" } else { "" };
    println!(
        "{verb} '{}'{exists} ({} messages, {} consumers)",
        queue.name(),
        queue.message_count(),
        queue.consumer_count()
    );
    Ok(())
}

async fn exchange(args: ExchangeArgs) -> anyhow::Result<()> {
    let name = short(&args.name, "the exchange name")?;
    let kind = match args.kind.as_str() {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => {
            short(other, "the exchange type")?;
            ExchangeKind::Custom(other.to_owned())
        }
    };
    let session = Session::open(&args.conn, "declare").await?;
    session
        .channel
        .exchange_declare(
            name,
            kind,
            ExchangeDeclareOptions {
                passive: args.passive,
                durable: args.durable,
                auto_delete: args.auto_delete,
                internal: args.internal,
                nowait: false,
            },
            table::to_table(&args.args),
        )
        .await?;
    session.close().await?;
    if args.passive {
        println!("exchange '{}' exists", args.name);
    } else {
        println!("declared exchange '{}' ({})", args.name, args.kind);
    }
    Ok(())
}
