//! `warren purge QUEUE`: drop every ready message (unacknowledged ones stay with their consumers).

use lapin::options::QueuePurgeOptions;

use crate::client::{short, ConnArgs, Session};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Example:
  warren purge orders")]
pub struct PurgeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Queue to empty.
    queue: String,
}

pub async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let queue = short(&args.queue, "the queue name")?;
    let session = Session::open(&args.conn, "purge").await?;
    let purged = session
        .channel
        .queue_purge(queue, QueuePurgeOptions::default())
        .await?;
    session.close().await?;
    println!("purged {purged} messages from queue '{}'", args.queue);
    Ok(())
}
