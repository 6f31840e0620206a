//! `warren declare queue NAME` and `warren declare exchange NAME`, with typed x-arguments.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::ExchangeKind;

use crate::client::{short, ConnArgs, Session};
use crate::table::{self, Entry};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren declare queue orders --durable --arg x-max-length=100
  warren declare exchange events --type topic")]
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
    }
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
