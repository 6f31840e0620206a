//! `warren delete queue NAME` and `warren delete exchange NAME`.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};

use crate::client::{short, ConnArgs, Session};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  warren delete queue orders
  warren delete exchange events")]
pub struct DeleteArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
enum What {
    /// Delete a queue and the messages in it.
    #[command(after_help = "\
Examples:
  warren delete queue orders
  warren delete queue orders --if-empty --if-unused")]
    Queue {
        #[command(flatten)]
        conn: ConnArgs,
        /// Queue name.
        name: String,
        /// Refuse (406) if the queue has consumers.
        #[arg(long)]
        if_unused: bool,
        /// Refuse (406) if the queue holds messages.
        #[arg(long)]
        if_empty: bool,
    },
    /// Delete an exchange and its bindings.
    #[command(after_help = "\
Examples:
  warren delete exchange events
  warren delete exchange events --if-unused")]
    Exchange {
        #[command(flatten)]
        conn: ConnArgs,
        /// Exchange name.
        name: String,
        /// Refuse (406) if the exchange has bindings.
        #[arg(long)]
        if_unused: bool,
    },
}

pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    match args.what {
        What::Queue {
            conn,
            name,
            if_unused,
            if_empty,
        } => {
            let queue = short(&name, "the queue name")?;
            let session = Session::open(&conn, "delete").await?;
            let messages = session
                .channel
                .queue_delete(
                    queue,
                    QueueDeleteOptions {
                        if_unused,
                        if_empty,
                        nowait: false,
                    },
                )
                .await?;
            session.close().await?;
            println!("deleted queue '{name}' ({messages} messages)");
        }
        What::Exchange {
            conn,
            name,
            if_unused,
        } => {
            let exchange = short(&name, "the exchange name")?;
            let session = Session::open(&conn, "delete").await?;
            session
                .channel
                .exchange_delete(
                    exchange,
                    ExchangeDeleteOptions {
                        if_unused,
                        nowait: false,
                    },
                )
                .await?;
            session.close().await?;
            println!("deleted exchange '{name}'");
        }
    }
    Ok(())
}
