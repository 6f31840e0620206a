//! `warren get QUEUE`: fetch messages one at a time with basic.get, print each, then settle it.

use anyhow::Context;
use lapin::options::BasicGetOptions;

use crate::client::{short, ConnArgs, Session};
use crate::output::{is_broken_pipe, AckArgs, Format, Printer};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren get orders                         # take one message off the queue and print it
  warren get orders --requeue               # peek: print it and put it back
  warren get orders --count 10 --format json
  warren get orders --nack                  # take it and dead-letter it (or drop it)

An empty queue prints nothing on stdout, a note on stderr, and exits 0.")]
pub struct GetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Queue to take messages from.
    queue: String,
    /// Take up to N messages, stopping early when the queue is empty.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// How to print each message (json adds message_count: how many are left in the queue).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    ack: AckArgs,
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    args.ack.check()?;
    let queue = short(&args.queue, "the queue name")?;
    let session = Session::open(&args.conn, "get").await?;
    let mut printer = Printer::new(args.format);
    // Requeued messages go back to the head of the queue; hold them until the end so that
    // `--requeue --count 5` shows five messages, not the first one five times.
    let mut held = Vec::new();
    let mut got = 0u64;
    while got < args.count {
        let message = session
            .channel
            .basic_get(
                queue.clone(),
                BasicGetOptions {
                    no_ack: args.ack.no_ack(),
                },
            )
            .await?;
        let Some(message) = message else { break };
        match printer.print(&message.delivery, Some(message.message_count)) {
            Err(e) if is_broken_pipe(&e) => break,
            Err(e) => return Err(e).context("writing to stdout"),
            Ok(()) => {}
        }
        got += 1;
        if args.ack.requeue {
            held.push(message);
        } else {
            args.ack.settle(&message.delivery).await?;
        }
    }
    for message in held {
        args.ack.settle(&message.delivery).await?;
    }
    if got == 0 {
        eprintln!("queue '{queue}' is empty");
    }
    session.close().await
}
