//! Listens as a named peer and prints each message it receives, and whether it came direct
//! (WebRTC data channel) or relayed through the broker.
//!
//! On one machine, against `warren serve`:
//!
//! ```text
//! cargo run -p warren-cli -- serve                 # terminal 1: the broker
//! cargo run --example peer_listen -- B             # terminal 2: peer B
//! cargo run --example peer_send -- B hello world   # terminal 3: peer A sends to B
//! ```
//!
//! The broker URL comes from WARREN_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
//! Add `--relay-only` to refuse direct connections and see every message relayed.

use warren_peer::{Peer, PeerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "B".to_string());
    let relay_only = args.any(|a| a == "--relay-only");
    let url = std::env::var("WARREN_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());

    let mut config = PeerConfig::new(url, name);
    config.accept_direct = !relay_only;
    let mut peer = Peer::start(config).await?;
    println!("listening as {}; Ctrl-C to stop", peer.name());
    loop {
        let incoming = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            m = peer.recv() => match m { Some(m) => m, None => break },
        };
        println!(
            "[{}] from {} #{} rk={:?}: {}",
            incoming.path,
            incoming.from,
            incoming.seq,
            incoming.message.routing_key,
            String::from_utf8_lossy(&incoming.message.body)
        );
    }
    peer.close().await?;
    Ok(())
}
