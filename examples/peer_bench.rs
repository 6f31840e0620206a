//! Direct delivery (WebRTC data channel) against relay through the broker, on loopback:
//! one-way latency (p50, p99) and throughput for 16 B, 1 KiB and 64 KiB messages. Prints a
//! Markdown table.
//!
//! ```text
//! cargo run --release --example peer_bench                    # embedded broker
//! cargo run --release --example peer_bench -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --release --example peer_bench -- --rounds 5
//! ```
//!
//! Each cell is the median over `--rounds` rounds (default 3). The table goes to stdout when
//! the run ends; progress (each round's figures as they come) goes to stderr. PEER_BENCH_SEND_BUFFER and
//! PEER_BENCH_WINDOW override `PeerConfig::send_buffer` and `window` for experiments;
//! PEER_BENCH_ONLY=direct or relayed, and PEER_BENCH_SIZE=16|1024|65536, run one path or size
//! (to profile it: `perf record -g target/release/examples/peer_bench`).
//!
//! Both paths use the same `Peer`/`Link` API and a reliable, ordered link; the relay link is
//! one whose sender never offers a direct path. Latency is measured one message at a time
//! (send, wait until the receiver has it) with both peers in this process, so one clock times
//! both ends. Throughput posts back to back under the links' normal back-pressure and stops
//! the clock when the receiver has the last message.

use std::time::{Duration, Instant};

use bytes::Bytes;
use warren_peer::{Link, Message, Path, Peer, PeerConfig};

const SIZES: [(usize, &str, usize, usize); 3] = [
    // (bytes, label, latency samples, throughput messages)
    (16, "16 B", 2000, 20_000),
    (1024, "1 KiB", 2000, 20_000),
    (64 * 1024, "64 KiB", 300, 1_500),
];

fn config(url: &str, name: &str) -> PeerConfig {
    let mut c = PeerConfig::new(url, name);
    c.udp_bind = vec!["127.0.0.1:0".parse().unwrap()];
    c.mdns = false;
    if let Some(b) = std::env::var("PEER_BENCH_SEND_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.send_buffer = b;
    }
    if let Some(w) = std::env::var("PEER_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.window = w;
    }
    c
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn fmt_us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn latency(
    link: &Link,
    rx: &mut Peer,
    size: usize,
    samples: usize,
    path: Path,
) -> (Duration, Duration) {
    let body = Bytes::from(vec![0x5a; size]);
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + 100 {
        let start = Instant::now();
        let sent = link
            .send(Message::new("", body.clone()))
            .await
            .expect("send");
        let got = rx.recv().await.expect("recv");
        let t = start.elapsed();
        assert_eq!((sent, got.path), (path, path));
        if i >= 100 {
            times.push(t); // the first 100 warm up
        }
    }
    times.sort();
    (percentile(&times, 0.50), percentile(&times, 0.99))
}

async fn throughput(link: &Link, rx: &mut Peer, size: usize, count: usize) -> f64 {
    let body = Bytes::from(vec![0xa5; size]);
    let start = Instant::now();
    let sender = {
        let link = link.clone();
        tokio::spawn(async move {
            // `post` lets the link pack queued small messages into one SCTP message.
            for _ in 0..count {
                link.post(Message::new("", body.clone()))
                    .await
                    .expect("post");
            }
            link.flush().await.expect("flush");
        })
    };
    for _ in 0..count {
        rx.recv().await.expect("recv");
    }
    let secs = start.elapsed().as_secs_f64();
    sender.await.unwrap();
    count as f64 / secs
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut rounds = 3usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--url" => url = args.next(),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--rounds N")?;
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    // The embedded broker gets a runtime (and worker thread) of its own, as a separate
    // `warren serve` would.
    let broker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let broker = match &url {
        Some(_) => None,
        None => Some(broker_rt.block_on(warren::Broker::start(warren::Config::ephemeral()))?),
    };
    let url = url.unwrap_or_else(|| broker.as_ref().unwrap().url());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        eprintln!("peer_bench: starting three peers on {url}");
        let mut rx = Peer::start(config(&url, "bench-rx")).await?;
        let direct_tx = Peer::start(config(&url, "bench-direct")).await?;
        let mut relay_cfg = config(&url, "bench-relay");
        relay_cfg.offer_direct = false;
        let relay_tx = Peer::start(relay_cfg).await?;
        let direct = direct_tx.connect("bench-rx").await?;
        let relay = relay_tx.connect("bench-rx").await?;
        assert_eq!(
            direct.path(),
            Some(Path::Direct),
            "direct path did not open"
        );
        assert_eq!(relay.path(), Some(Path::Relayed));
        let rounds = rounds.max(1);
        let cells = SIZES.len() * 2;
        eprintln!(
            "peer_bench: direct and relayed links open; {cells} cells of {rounds} rounds each"
        );

        println!("| size | path | p50 latency | p99 latency | throughput | MiB/s |");
        println!("|---|---|---:|---:|---:|---:|");
        let mut cell = 0;
        let only_path = std::env::var("PEER_BENCH_ONLY").ok();
        let only_size: Option<usize> = std::env::var("PEER_BENCH_SIZE")
            .ok()
            .and_then(|v| v.parse().ok());
        for (size, label, samples, count) in SIZES {
            for (link, path) in [(&direct, Path::Direct), (&relay, Path::Relayed)] {
                if only_path.as_deref().is_some_and(|p| p != path.to_string())
                    || only_size.is_some_and(|s| s != size)
                {
                    continue;
                }
                cell += 1;
                let (mut p50s, mut p99s, mut rates) = (Vec::new(), Vec::new(), Vec::new());
                for round in 1..=rounds {
                    let (p50, p99) = latency(link, &mut rx, size, samples, path).await;
                    let rate = throughput(link, &mut rx, size, count).await;
                    eprintln!(
                        "peer_bench: cell {cell}/{cells} ({label}, {path}) round {round}/{rounds}: \
                         p50 {}, p99 {}, {rate:.0} msg/s",
                        fmt_us(p50),
                        fmt_us(p99)
                    );
                    p50s.push(p50);
                    p99s.push(p99);
                    rates.push(rate);
                }
                p50s.sort();
                p99s.sort();
                rates.sort_by(f64::total_cmp);
                let (p50, p99, rate) = (
                    p50s[p50s.len() / 2],
                    p99s[p99s.len() / 2],
                    rates[rates.len() / 2],
                );
                println!(
                    "| {label} | {path} | {} | {} | {:.0} msg/s | {:.1} |",
                    fmt_us(p50),
                    fmt_us(p99),
                    rate,
                    rate * size as f64 / (1024.0 * 1024.0)
                );
            }
        }
        direct.close().await?;
        relay.close().await?;
        direct_tx.close().await?;
        relay_tx.close().await?;
        rx.close().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    if let Some(b) = broker {
        broker_rt.block_on(b.shutdown());
    }
    Ok(())
}
