//! Proves the per-connection queue limit (`max_queues_per_connection`): a connection that has
//! that many queues is refused one more with 406 PRECONDITION_FAILED in RabbitMQ's words for
//! a vhost's max-queues limit, its channel is closed and nothing is created; redeclaring an
//! existing queue, other connections and a connection that deleted one of its queues are
//! not limited.

mod common;

use common::{amqp_error, connect_url, unique, within};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::Channel;

const LIMIT: usize = 3;

async fn declare(ch: &Channel, name: &str) -> lapin::Result<()> {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map(|_| ())
}

#[tokio::test]
async fn one_queue_over_the_limit_is_refused_and_closes_the_channel() {
    let config = warren::Config {
        max_queues_per_connection: LIMIT,
        ..warren::Config::ephemeral()
    };
    let broker = warren::Broker::start(config).await.expect("broker");
    let url = broker.url();
    let conn = connect_url(&url).await;
    let ch = conn.create_channel().await.unwrap();
    let names: Vec<String> = (0..LIMIT).map(|_| unique("limited")).collect();
    for name in &names {
        declare(&ch, name).await.expect("a queue within the limit");
    }
    declare(&ch, &names[0])
        .await
        .expect("redeclaring an existing queue creates nothing and is allowed");

    let extra = unique("over");
    let err = declare(&ch, &extra)
        .await
        .expect_err("one queue over the limit");
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 406, "{text}");
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - cannot declare queue '{extra}': queue limit per connection \
             ({LIMIT}) is reached"
        )
    );
    assert!(!ch.status().connected(), "the channel is closed");

    // Nothing was created, and another connection has its own allowance.
    let other = connect_url(&url).await;
    let och = other.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = och
        .queue_declare(extra.as_str().into(), passive, FieldTable::default())
        .await
        .expect_err("the refused queue does not exist");
    assert_eq!(amqp_error(&missing).0, 404);
    let och = other.create_channel().await.unwrap();
    declare(&och, &extra)
        .await
        .expect("another connection is not limited");

    // Deleting one of its queues makes room for the first connection again.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(names[1].as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    declare(&ch, &unique("after-delete"))
        .await
        .expect("room made by a delete");
    let err = declare(&ch, &unique("over-again"))
        .await
        .expect_err("full again");
    assert_eq!(amqp_error(&err).0, 406);
    broker.shutdown().await;
}
