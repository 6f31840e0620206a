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

pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    args.ack.check()?;
    let session = Session::open(&args.conn, "subscribe").await?;
    let channel = &session.channel;
    let queue = match (&args.queue, &args.exchange) {
        (Some(queue), _) => short(queue, "the queue name")?,
        (None, Some(exchange)) => temporary_queue(channel, exchange, &args).await?,
        (None, None) => unreachable!("clap requires a queue or --exchange"),
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
    let mut consumer = channel
        .basic_consume(
            queue.clone(),
            ShortString::default(),
            BasicConsumeOptions {
                no_ack,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    if std::io::stderr().is_terminal() {
        eprintln!("waiting for messages on queue '{queue}'; Ctrl-C to stop");
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
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
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
