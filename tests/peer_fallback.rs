//! When the direct path cannot be had or drops, messages go through the broker instead, with
//! no loss of any message `send` accepted: a refused offer relays at once, a direct path that
//! can never form relays after the connect timeout, and a direct path cut mid-stream
//! republishes what was not acknowledged, so the receiver sees one ordered stream and can tell
//! which way each message came.

use std::future::Future;
use std::time::Duration;

use warren_peer::{IcePolicy, Message, Path, Peer, PeerConfig};

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

/// Receives `n` messages and checks they are 0..n in order, from `from`, with intact
/// metadata; returns how many came each way.
async fn expect_stream(peer: &mut Peer, from: &str, n: u64) -> (u64, u64) {
    let (mut direct, mut relayed) = (0, 0);
    for i in 0..n {
        let got = within(peer.recv()).await.expect("peer closed");
        assert_eq!((got.from.as_str(), got.seq), (from, i), "out of order");
        assert_eq!(&got.message.body[..], &i.to_be_bytes());
        assert_eq!(got.message.routing_key, "stream");
        assert_eq!(got.message.headers["n"], i.to_string());
        match got.path {
            Path::Direct => direct += 1,
            Path::Relayed => relayed += 1,
        }
    }
    (direct, relayed)
}

fn numbered(i: u64) -> Message {
    Message::new("stream", i.to_be_bytes().to_vec()).with_header("n", i.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_direct_path_relays_through_the_broker_at_once() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let mut cb = config(&url, "B");
    cb.accept_direct = false;
    let mut b = Peer::start(cb).await.unwrap();
    let mut ca = config(&url, "A");
    ca.connect_timeout = Duration::from_secs(10);
    let a = Peer::start(ca).await.unwrap();

    let started = std::time::Instant::now();
    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Relayed));
    // Refusal is an answer, not a timeout (a generous bound: this is about not waiting 10 s).
    assert!(started.elapsed() < Duration::from_secs(8));

    for i in 0..500 {
        assert_eq!(within(link.send(numbered(i))).await.unwrap(), Path::Relayed);
    }
    within(link.flush()).await.unwrap();
    assert_eq!(expect_stream(&mut b, "A", 500).await, (0, 500));

    // A large message goes through the broker whole.
    let big = vec![9u8; 1 << 20];
    within(link.send(Message::new("big", big.clone())))
        .await
        .unwrap();
    let got = within(b.recv()).await.unwrap();
    assert_eq!(
        (got.path, got.message.body.len()),
        (Path::Relayed, big.len())
    );

    within(link.close()).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_direct_path_relays_after_the_connect_timeout() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    // B listens on IPv6 loopback, A on IPv4 loopback: offer and answer go through, but no
    // ICE candidate pair can ever form. (Where IPv6 is missing B cannot even build its side,
    // refuses, and the link relays at once: the outcome checked below is the same.)
    let mut cb = config(&url, "B");
    cb.udp_bind = vec!["[::1]:0".parse().unwrap()];
    let mut b = Peer::start(cb).await.unwrap();
    let mut ca = config(&url, "A");
    ca.connect_timeout = Duration::from_secs(1);
    let a = Peer::start(ca).await.unwrap();

    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Relayed));
    for i in 0..100 {
        within(link.send(numbered(i))).await.unwrap();
    }
    assert_eq!(expect_stream(&mut b, "A", 100).await, (0, 100));
    // B's side of the link learnt it too, and answers through the broker.
    let back = within(b.connect("A")).await.unwrap();
    assert_eq!(back.path(), Some(Path::Relayed));

    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_that_cannot_be_set_up_locally_relays_at_once() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let mut b = Peer::start(config(&url, "B")).await.unwrap();
    // Relay-only ICE with no TURN server: WebRTC refuses to build the connection.
    let mut ca = config(&url, "A");
    ca.ice_policy = IcePolicy::RelayOnly;
    let a = Peer::start(ca).await.unwrap();

    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Relayed));
    for i in 0..100 {
        within(link.send(numbered(i))).await.unwrap();
    }
    assert_eq!(expect_stream(&mut b, "A", 100).await, (0, 100));

    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_path_cut_mid_stream_loses_nothing() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let mut b = Peer::start(config(&url, "B")).await.unwrap();
    // This test checks the fallback itself: no return to the direct path afterwards.
    let mut ca = config(&url, "A");
    ca.retry_min = None;
    let a = Peer::start(ca).await.unwrap();
    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Direct));

    const N: u64 = 4000;
    let sender = {
        let link = link.clone();
        tokio::spawn(async move {
            for i in 0..N {
                // Every accepted message must arrive; none may fail.
                if i % 3 == 0 {
                    link.send(numbered(i)).await.unwrap();
                } else {
                    link.post(numbered(i)).await.unwrap();
                }
                if i == N / 4 {
                    // Cut the network under the link, without telling it.
                    link.sever_direct().await;
                }
            }
            link.flush().await.unwrap();
        })
    };
    let (direct, relayed) = expect_stream(&mut b, "A", N).await;
    within(sender).await.unwrap();
    assert!(direct > 0, "nothing came direct before the cut");
    assert!(relayed > 0, "nothing was relayed after the cut");
    assert_eq!(link.path(), Some(Path::Relayed));
    assert!(link.stats().relayed >= relayed);

    // Nothing extra is delivered: duplicates of republished messages were dropped.
    assert!(tokio::time::timeout(Duration::from_millis(300), b.recv())
        .await
        .is_err());

    within(link.close()).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}

/// A link that fell back to the relay tries the direct path again in the background and
/// returns to it, with nothing lost, repeated or out of order across either switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_direct_path_comes_back_after_a_cut() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let mut b = Peer::start(config(&url, "B")).await.unwrap();
    let mut ca = config(&url, "A");
    ca.retry_min = Some(Duration::from_millis(200));
    let a = Peer::start(ca).await.unwrap();
    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Direct));

    const PHASE: u64 = 500;
    let sender = {
        let link = link.clone();
        tokio::spawn(async move {
            for i in 0..PHASE {
                assert_eq!(link.send(numbered(i)).await.unwrap(), Path::Direct);
            }
            link.flush().await.unwrap();
            link.sever_direct().await;
            for i in PHASE..2 * PHASE {
                link.post(numbered(i)).await.unwrap();
            }
            link.flush().await.unwrap();
            // Back to direct within a few tries.
            let t0 = std::time::Instant::now();
            while link.path() != Some(Path::Direct) {
                assert!(
                    t0.elapsed() < Duration::from_secs(15),
                    "never back to direct"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for i in 2 * PHASE..3 * PHASE {
                link.post(numbered(i)).await.unwrap();
            }
            link.flush().await.unwrap();
        })
    };
    let mut paths = Vec::new();
    for i in 0..3 * PHASE {
        let got = within(b.recv()).await.expect("peer closed");
        assert_eq!((got.from.as_str(), got.seq), ("A", i), "out of order");
        assert_eq!(&got.message.body[..], &i.to_be_bytes());
        paths.push(got.path);
    }
    within(sender).await.unwrap();
    assert!(
        paths[..PHASE as usize].iter().all(|p| *p == Path::Direct),
        "before the cut"
    );
    assert!(
        paths.contains(&Path::Relayed),
        "nothing relayed after the cut"
    );
    assert!(
        paths[(2 * PHASE) as usize..]
            .iter()
            .all(|p| *p == Path::Direct),
        "after the return every message came direct"
    );
    assert_eq!(link.stats().returns_to_direct, 1);
    // Nothing extra: duplicates of republished messages were dropped.
    assert!(tokio::time::timeout(Duration::from_millis(300), b.recv())
        .await
        .is_err());
    within(link.close()).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.shutdown().await;
}
