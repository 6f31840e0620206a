//! The broker's registry, which the management API and metrics will read: live connections
//! with their user, vhost and client properties, their channels with RabbitMQ's message
//! counts (publish, confirm, return_unroutable, drop_unroutable, deliver, get, ack,
//! redeliver), broker-wide totals that keep what closed channels counted, and per-queue
//! counters. Also that a connection runs over any byte stream (`Broker::serve_stream`), not
//! only over the listener's TCP sockets.
mod common;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::{BasicProperties, ConnectionProperties};
use warren::registry::ChannelCounts;

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_counters_are_listed() {
    let tb = start().await;
    let Some(broker) = tb.broker.as_ref() else {
        return; // the registry is Warren's own
    };
    let registry = broker.registry().clone();
    let conn = lapin::Connection::connect(
        &tb.url,
        ConnectionProperties::default().with_connection_name("orders-service".into()),
    )
    .await
    .expect("connect");
    let publisher = confirm_channel(&conn).await;
    let consumer = channel(&conn).await;
    let q = declare_queue(&publisher, &unique("observed")).await;

    let c = until("the connection to be listed", || {
        registry.connections().into_iter().next()
    })
    .await;
    assert_eq!(c.user, "guest");
    assert_eq!(&*c.vhost, "/");
    assert_eq!(c.client.connection_name.as_deref(), Some("orders-service"));
    assert_eq!(c.client.product.as_deref(), Some("lapin"));
    assert!(c.peer.ip().is_loopback());
    assert_eq!(c.channels().len(), 2);

    for i in 0..10 {
        publish_confirmed(&publisher, "", &q, format!("m{i}").as_bytes()).await;
    }
    // Unroutable: one mandatory (returned), one not (dropped); both confirmed.
    publisher
        .basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    publish_confirmed(&publisher, "", "nowhere", b"y").await;

    let got = consumer
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .expect("a message");
    got.ack(BasicAckOptions::default()).await.unwrap();
    let mut deliveries = consume(&consumer, &q, false).await;
    use std::sync::atomic::Ordering::Relaxed;
    until("the channels' consumers and modes", || {
        let chans = c.channels();
        let consuming = chans
            .iter()
            .filter(|ch| ch.consumers.load(Relaxed) == 1)
            .count();
        let confirming = chans.iter().filter(|ch| ch.confirm.load(Relaxed)).count();
        (consuming == 1 && confirming == 1).then_some(())
    })
    .await;
    for _ in 0..9 {
        let d = next_delivery(&mut deliveries).await;
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let expected = ChannelCounts {
        publish: 12,
        confirm: 12,
        return_unroutable: 1,
        drop_unroutable: 1,
        deliver: 9,
        get: 1,
        ack: 10,
        // Every publish went through the confirm channel; 10 reached the queue.
        received_confirm: 12,
        routed: 10,
        ..ChannelCounts::default()
    };
    until("the counts of both channels", || {
        (registry.message_totals() == expected).then_some(())
    })
    .await;
    assert_eq!(expected.deliver_get(), 10);

    let vhost = registry.vhost("/").expect("the default vhost");
    let queue = vhost.lookup_queue(&q).expect("the queue");
    assert!(vhost.queues().contains(&queue));
    let counts = until("the queue's counters", || {
        let c = queue.counters().read();
        (c.acked == 10).then_some(c)
    })
    .await;
    assert_eq!(
        (
            counts.published,
            counts.delivered,
            counts.ready,
            counts.unacked,
            counts.consumers
        ),
        (10, 10, 0, 0, 1)
    );

    conn.close(200, "bye".into()).await.unwrap();
    until("the connection to be gone", || {
        registry.connections().is_empty().then_some(())
    })
    .await;
    assert_eq!(
        registry.message_totals(),
        expected,
        "closed channels' counts stay in the totals"
    );
    let churn = &registry.churn;
    assert_eq!(churn.connection_created.load(Relaxed), 1);
    assert_eq!(churn.connection_closed.load(Relaxed), 1);
    assert_eq!(churn.channel_created.load(Relaxed), 2);
    assert_eq!(churn.channel_closed.load(Relaxed), 2);
}

/// A connection over a stream the application hands in (here a TCP socket the test accepted
/// itself, so the broker reads it through the generic stream transport, not its TCP one):
/// lapin declares, publishes small and large messages with confirms, and consumes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_runs_over_any_byte_stream() {
    let tb = start().await;
    let Some(broker) = tb.broker else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = std::sync::Arc::new(broker);
    let b = broker.clone();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            b.serve_stream(stream, peer, addr);
        }
    });
    let conn = connect_url(&format!("amqp://guest:guest@{addr}/%2f")).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("over-a-stream")).await;
    let bodies: Vec<Vec<u8>> = (0..200usize)
        .map(|i| vec![(i % 251) as u8; if i % 50 == 0 { 300_000 } else { i * 7 }])
        .collect();
    for b in &bodies {
        publish_confirmed(&ch, "", &q, b).await;
    }
    let mut c = consume(&ch, &q, true).await;
    for (i, b) in bodies.iter().enumerate() {
        let d = next_delivery(&mut c).await;
        assert_eq!(&d.data, b, "message {i}");
    }
    assert_eq!(broker.registry().connections().len(), 1);
    conn.close(200, "bye".into()).await.unwrap();
}
