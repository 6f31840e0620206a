//! Proves that stopping the broker closes every client connection with 320 CONNECTION_FORCED
//! (and waits for them) instead of cutting sockets, and that the connection limit holds
//! extra clients in the accept queue rather than refusing them.

mod common;

use std::time::Duration;

use common::RawConn;

#[tokio::test]
async fn shutdown_closes_connections_with_connection_forced() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .expect("starting a broker");
    let mut raw = RawConn::open(broker.local_addr()).await;
    raw.open_channel(1).await;
    let stopping = tokio::spawn(broker.shutdown());
    let close = raw.expect_connection_close().await;
    assert_eq!(close.reply_code, 320, "{close:?}");
    assert!(
        close.reply_text.starts_with("CONNECTION_FORCED - "),
        "{close:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the broker stops once its clients answered")
        .expect("shutdown task");
}

#[tokio::test]
async fn clients_beyond_the_connection_limit_wait_for_a_free_slot() {
    let config = warren::Config {
        max_connections: 1,
        ..warren::Config::ephemeral()
    };
    let broker = warren::Broker::start(config)
        .await
        .expect("starting a broker");
    let first = RawConn::open(broker.local_addr()).await;
    // The second client connects (TCP backlog) but gets no connection.start while the
    // first holds the only slot.
    let addr = broker.local_addr();
    let second = tokio::spawn(async move { RawConn::open(addr).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served beyond the limit"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second client is served once the first leaves")
        .expect("second client");
}
