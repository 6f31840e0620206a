//! `warren delete queue NAME` and `warren delete exchange NAME`.

use std::future::Future;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

use crate::client::{reply_code, short, ConnArgs, Session};

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
  warren delete queue orders --if-empty --if-unused

A queue that does not exist is reported as such, and the command still succeeds.")]
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
            let mut session = Session::open(&conn, "delete").await?;
            let checked = queue.clone();
            let existed = exists(&mut session, |channel| async move {
                channel
                    .queue_declare(
                        checked,
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
            })
            .await?;
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
            if existed {
                println!("deleted queue '{name}' ({messages} messages)");
            } else {
                println!("queue '{name}' did not exist; nothing to delete");
            }
        }
        What::Exchange {
            conn,
            name,
            if_unused,
        } => {
            let exchange = short(&name, "the exchange name")?;
            let mut session = Session::open(&conn, "delete").await?;
            let checked = exchange.clone();
            let existed = exists(&mut session, |channel| async move {
                channel
                    .exchange_declare(
                        checked,
                        ExchangeKind::Direct,
                        ExchangeDeclareOptions {
                            passive: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
            })
            .await?;
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
            if existed {
                println!("deleted exchange '{name}'");
            } else {
                println!("exchange '{name}' did not exist; nothing to delete");
            }
        }
    }
    Ok(())
}

/// Whether the passive declare `check` finds its queue or exchange. A 404 closes the channel,
/// so a fresh one replaces it: the delete itself still goes out, as the protocol's delete is
/// idempotent (and something may have declared the name in the meantime).
async fn exists<T, F>(
    session: &mut Session,
    check: impl FnOnce(Channel) -> F,
) -> anyhow::Result<bool>
where
    F: Future<Output = lapin::Result<T>>,
{
    match check(session.channel.clone()).await {
        Ok(_) => Ok(true),
        Err(e) => {
            let err = session.reason(e).await;
            if reply_code(&err) != Some(404) {
                return Err(err);
            }
            session.channel = session.connection.create_channel().await?;
            Ok(false)
        }
    }
}
