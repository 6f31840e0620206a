//! Two peers on 127.0.0.1, signalled through a real embedded broker, talk over the direct
//! WebRTC path: 10,000 messages arrive in order (reliable mode), a 1 MiB message is chunked and
//! reassembled, the same link carries replies the other way, and a live (unordered, no
//! retransmit) link delivers each message at most once.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use warren_peer::{Message, Path, Peer, PeerConfig, Reliability};

/// Loopback UDP only, no mDNS: what every peer test uses.
fn config(url: &str, name: &str) -> PeerConfig {
    let mut c = PeerConfig::new(url, name);
    c.udp_bind = vec!["127.0.0.1:0".parse().unwrap()];
    c.mdns = false;
    c
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_direct_link_keeps_order_and_reassembles_large_messages() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let mut b = Peer::start(config(&url, "B")).await.unwrap();
    let mut a = Peer::start(config(&url, "A")).await.unwrap();

    // One connection for the whole test: opening one takes about 0.6 s.
    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Direct));
    assert_eq!(link.reliability(), Reliability::Reliable);

    const N: u32 = 10_000;
    let sender = {
        let link = link.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let m =
                    Message::new("seq", i.to_be_bytes().to_vec()).with_header("i", i.to_string());
                assert_eq!(link.send(m).await.unwrap(), Path::Direct);
            }
            link.flush().await.unwrap();
        })
    };
    for i in 0..N {
        let got = within(b.recv()).await.unwrap();
        assert_eq!(
            (got.from.as_str(), got.seq, got.path),
            ("A", i as u64, Path::Direct)
        );
        assert_eq!(&got.message.body[..], &i.to_be_bytes());
        assert_eq!(got.message.headers["i"], i.to_string());
        assert_eq!(got.message.routing_key, "seq");
        // Who sent it, as the broker authenticated it (checked user_id on the signals).
        assert_eq!(got.user.as_deref(), Some("guest"));
    }
    within(sender).await.unwrap();

    // 1 MiB is 17 chunks at the default 64 KiB data-channel limit.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let path = within(link.send(Message::new("big", big.clone())))
        .await
        .unwrap();
    assert_eq!(path, Path::Direct);
    let got = within(b.recv()).await.unwrap();
    assert_eq!(got.path, Path::Direct);
    assert_eq!(got.seq, N as u64);
    assert_eq!(got.message.body.len(), big.len());
    assert!(got.message.body[..] == big[..], "1 MiB body differs");

    // The answering side reuses the same connection to reply.
    let back = within(b.connect("A")).await.unwrap();
    assert_eq!(back.path(), Some(Path::Direct));
    assert_eq!(
        within(back.send(Message::new("reply", "pong")))
            .await
            .unwrap(),
        Path::Direct
    );
    let got = within(a.recv()).await.unwrap();
    assert_eq!(
        (got.from.as_str(), got.path, &got.message.body[..]),
        ("B", Path::Direct, &b"pong"[..])
    );
    assert_eq!(link.stats().relayed, 0);

    within(link.close()).await.unwrap();
    assert!(link.is_closed());
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_link_is_direct_and_delivers_each_message_at_most_once() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let mut b = Peer::start(config(&url, "B")).await.unwrap();
    let a = Peer::start(config(&url, "A")).await.unwrap();
    let link = within(a.connect_with("B", Reliability::Live))
        .await
        .unwrap();
    assert_eq!(link.path(), Some(Path::Direct));
    assert_eq!(link.reliability(), Reliability::Live);

    const N: u64 = 200;
    for i in 0..N {
        let m = Message::new("tick", i.to_be_bytes().to_vec());
        assert_eq!(within(link.send(m)).await.unwrap(), Path::Direct);
    }
    // Unreliable by design: count what arrives until the stream goes quiet.
    let mut seen = HashSet::new();
    while let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), b.recv()).await {
        assert_eq!(got.path, Path::Direct);
        assert_eq!(&got.message.body[..], &got.seq.to_be_bytes());
        assert!(got.seq < N);
        assert!(seen.insert(got.seq), "message {} delivered twice", got.seq);
    }
    assert!(!seen.is_empty(), "no live message arrived");

    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}
