//! Sends messages to a named peer, directly over a WebRTC data channel when it can be opened,
//! through the broker otherwise, and prints the path each message took.
//!
//! On one machine, against `warren serve` (see `peer_listen.rs` for the listener):
//!
//! ```text
//! cargo run --example peer_send -- B hello world     # one message per argument
//! seq 1 5 | cargo run --example peer_send -- B       # or one per line of stdin
//! ```
//!
//! The broker URL comes from WARREN_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).

use tokio::io::AsyncBufReadExt;
use warren_peer::{Message, Peer, PeerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let to = args.next().ok_or("usage: peer_send <PEER> [BODY...]")?;
    let bodies: Vec<String> = args.collect();
    let url = std::env::var("WARREN_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());

    let peer = Peer::start(PeerConfig::new(url, format!("send-{}", std::process::id()))).await?;
    let link = peer.connect(&to).await?;
    println!("link to {to}: {:?}", link.path());

    let send = |body: String| {
        let link = link.clone();
        let to = to.clone();
        async move {
            let path = link.send(Message::new("demo", body.clone())).await?;
            println!("sent {body:?} to {to} {path}");
            Ok::<_, warren_peer::PeerError>(())
        }
    };
    if bodies.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            send(line).await?;
        }
    } else {
        for body in bodies {
            send(body).await?;
        }
    }
    // Close flushes: it returns once every message is acknowledged or confirmed.
    link.close().await?;
    let stats = link.stats();
    println!("{} direct, {} relayed", stats.direct, stats.relayed);
    peer.close().await?;
    Ok(())
}
