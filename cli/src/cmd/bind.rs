//! `warren bind` and `warren unbind`: the same arguments, queue.bind/exchange.bind or their undo.

use lapin::options::{ExchangeBindOptions, ExchangeUnbindOptions, QueueBindOptions};

use crate::client::{short, ConnArgs, Session};
use crate::table::{self, Entry};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren bind orders events 'order.*'       # queue 'orders' gets events' messages keyed order.*
  warren bind audit events '#' --dest-type exchange
  warren bind pdfs docs --arg x-match=all --arg format:str=pdf   # headers exchange
  warren unbind orders events 'order.*'

--arg is typed as for `warren declare queue`: on a headers exchange, bind with the type the
publisher's headers have (-H values are strings: use KEY:str=VALUE here for numbers).")]
pub struct BindArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The queue (or, with --dest-type exchange, the exchange) that receives the messages.
    destination: String,
    /// The exchange the messages come from.
    source: String,
    /// Routing key (binding key) to match; '' when omitted.
    #[arg(default_value = "")]
    routing_key: String,
    /// What DESTINATION names.
    #[arg(long, value_enum, default_value_t = DestType::Queue)]
    dest_type: DestType,
    /// A binding argument, repeatable: --arg x-match=any.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = table::parse_arg)]
    args: Vec<Entry>,
}

/// The kind of binding destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DestType {
    Queue,
    Exchange,
}

/// Which of the two commands runs.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    Bind,
    Unbind,
}

pub async fn run(args: BindArgs, action: Action) -> anyhow::Result<()> {
    let destination = short(&args.destination, "the destination name")?;
    let source = short(&args.source, "the exchange name")?;
    let key = short(&args.routing_key, "the routing key")?;
    let arguments = table::to_table(&args.args);
    let session = Session::open(
        &args.conn,
        match action {
            Action::Bind => "bind",
            Action::Unbind => "unbind",
        },
    )
    .await?;
    let ch = &session.channel;
    match (action, args.dest_type) {
        (Action::Bind, DestType::Queue) => {
            ch.queue_bind(
                destination,
                source,
                key,
                QueueBindOptions::default(),
                arguments,
            )
            .await?
        }
        (Action::Unbind, DestType::Queue) => {
            ch.queue_unbind(destination, source, key, arguments).await?
        }
        (Action::Bind, DestType::Exchange) => {
            ch.exchange_bind(
                destination,
                source,
                key,
                ExchangeBindOptions::default(),
                arguments,
            )
            .await?
        }
        (Action::Unbind, DestType::Exchange) => {
            ch.exchange_unbind(
                destination,
                source,
                key,
                ExchangeUnbindOptions::default(),
                arguments,
            )
            .await?
        }
    }
    session.close().await?;
    let what = match args.dest_type {
        DestType::Queue => "queue",
        DestType::Exchange => "exchange",
    };
    match action {
        Action::Bind => println!(
            "bound {what} '{}' to exchange '{}' with key '{}'",
            args.destination, args.source, args.routing_key
        ),
        Action::Unbind => println!(
            "unbound {what} '{}' from exchange '{}' with key '{}'",
            args.destination, args.source, args.routing_key
        ),
    }
    Ok(())
}
