//! Signalling goes through a real broker: a peer's name is claimed by its exclusive queues
//! (a second peer of that name is refused), an absent peer is reported, every signal carries
//! the broker-checked `user_id` of its sender, and a relay-only link carries routing key and
//! headers through the broker as plain AMQP metadata.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use warren_peer::{Message, Path, Peer, PeerConfig, PeerError};

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
async fn names_are_claimed_and_absent_peers_reported() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();
    let b = Peer::start(config(&url, "B")).await.unwrap();
    match Peer::start(config(&url, "B")).await {
        Err(PeerError::NameTaken(n)) => assert_eq!(n, "B"),
        Err(e) => panic!("expected NameTaken, got {e}"),
        Ok(_) => panic!("a second peer named B was accepted"),
    }
    assert!(matches!(
        Peer::start(config(&url, "no/slashes")).await,
        Err(PeerError::InvalidName(_))
    ));

    let a = Peer::start(config(&url, "A")).await.unwrap();
    match within(a.connect("nobody")).await {
        Err(PeerError::NoSuchPeer(n)) => assert_eq!(n, "nobody"),
        Err(e) => panic!("expected NoSuchPeer, got {e}"),
        Ok(_) => panic!("connected to a peer that does not exist"),
    }
    assert!(matches!(
        a.connect("A").await,
        Err(PeerError::InvalidName(_))
    ));

    // The name is free again once its holder leaves.
    b.close().await.unwrap();
    let b2 = within(async {
        loop {
            match Peer::start(config(&url, "B")).await {
                Ok(p) => break p,
                Err(PeerError::NameTaken(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    b2.close().await.unwrap();
    a.close().await.unwrap();
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_link_carries_amqp_metadata_through_the_broker() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();

    // An ordinary AMQP client watching the signalling exchange sees plain messages.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut b = Peer::start(config(&url, "B")).await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        warren_peer::signal::EXCHANGE.into(),
        warren_peer::signal::relay_key("B").as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut tap = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let mut ca = config(&url, "A");
    ca.offer_direct = false;
    let a = Peer::start(ca).await.unwrap();
    let link = within(a.connect("B")).await.unwrap();
    assert_eq!(link.path(), Some(Path::Relayed));
    let m = Message::new("orders.eu", "hello")
        .with_header("tenant", "t1")
        .with_header("trace", "abc");
    assert_eq!(within(link.send(m.clone())).await.unwrap(), Path::Relayed);

    let got = within(b.recv()).await.unwrap();
    assert_eq!(
        (got.from.as_str(), got.path, got.seq),
        ("A", Path::Relayed, 0)
    );
    assert_eq!(got.message, m);

    let seen = within(tap.next()).await.unwrap().unwrap();
    assert_eq!(seen.data, b"hello");
    assert_eq!(seen.properties.kind().as_ref().unwrap().as_str(), "data");
    assert_eq!(seen.properties.reply_to().as_ref().unwrap().as_str(), "A");
    // The broker checked this against the connection's login.
    assert_eq!(
        seen.properties.user_id().as_ref().unwrap().as_str(),
        "guest"
    );
    assert_eq!(got.user.as_deref(), Some("guest"));
    let headers = seen.properties.headers().as_ref().unwrap();
    assert!(headers.contains_key("tenant"));

    within(link.close()).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    broker.shutdown().await;
}
