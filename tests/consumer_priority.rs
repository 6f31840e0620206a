//! Proves consumer priorities (`x-priority` on basic.consume): the highest-priority consumers
//! get the messages while they have room (prefetch), round-robin among equals; a lower one gets
//! messages only when every higher one is full; a non-integer priority is refused with 406.
mod common;
mod queue_support;

use std::time::Duration;

use amq_protocol::types::AMQPValue;
use common::*;
use lapin::options::*;
use lapin::{Channel, Connection, Consumer};
use queue_support::*;

async fn consume_with_priority(
    ch: &Channel,
    q: &str,
    priority: AMQPValue,
) -> lapin::Result<Consumer> {
    within(
        "basic.consume",
        ch.basic_consume(
            q.into(),
            "".into(),
            BasicConsumeOptions::default(),
            table(&[("x-priority", priority)]),
        ),
    )
    .await
}

async fn prioritised(
    conn: &Connection,
    q: &str,
    priority: i32,
    prefetch_n: u16,
) -> (Channel, Consumer) {
    let ch = channel(conn).await;
    if prefetch_n > 0 {
        prefetch(&ch, prefetch_n).await;
    }
    let c = consume_with_priority(&ch, q, int(priority))
        .await
        .expect("basic.consume");
    (ch, c)
}

#[tokio::test]
async fn the_highest_priority_consumer_gets_every_message_while_it_has_room() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("cprio")).await;
    let (_l, mut low) = prioritised(&conn, &q, 1, 0).await;
    let (_h, mut high) = prioritised(&conn, &q, 10, 0).await;
    let (_n, mut none) = {
        let ch = channel(&conn).await;
        let c = consume(&ch, &q, false).await;
        (ch, c)
    };
    for i in 0..5 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    for i in 0..5 {
        assert_eq!(body(&next_delivery(&mut high).await), format!("m{i}"));
    }
    assert_no_delivery(&mut low, Duration::from_millis(300)).await;
    assert_no_delivery(&mut none, Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_lower_priority_consumer_gets_messages_when_the_higher_one_is_full() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("cprio-full")).await;
    let (_h, mut high) = prioritised(&conn, &q, 10, 1).await;
    let (_l, mut low) = prioritised(&conn, &q, -5, 0).await;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let held = next_delivery(&mut high).await;
    assert_eq!(body(&held), "m0");
    assert_eq!(body(&next_delivery(&mut low).await), "m1");
    assert_eq!(body(&next_delivery(&mut low).await), "m2");
    // Once the high-priority consumer has room again, new messages go to it.
    within("ack", held.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    publish_confirmed(&ch, "", &q, b"m3").await;
    assert_eq!(body(&next_delivery(&mut high).await), "m3");
    assert_no_delivery(&mut low, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn consumers_of_equal_priority_take_turns() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, &unique("cprio-equal")).await;
    let (_a, mut a) = prioritised(&conn, &q, 5, 0).await;
    let (_b, mut b) = prioritised(&conn, &q, 5, 0).await;
    let (_l, mut low) = prioritised(&conn, &q, 0, 0).await;
    for i in 0..4 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let from_a = [next_delivery(&mut a).await, next_delivery(&mut a).await];
    let from_b = [next_delivery(&mut b).await, next_delivery(&mut b).await];
    assert_eq!(from_a.iter().map(body).collect::<Vec<_>>(), ["m0", "m2"]);
    assert_eq!(from_b.iter().map(body).collect::<Vec<_>>(), ["m1", "m3"]);
    assert_no_delivery(&mut low, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_non_integer_priority_is_refused_with_406() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = declare_queue(&ch, &unique("cprio-bad")).await;
    let ch2 = channel(&conn).await;
    let err = consume_with_priority(&ch2, &q, text("high"))
        .await
        .expect_err("a string priority");
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 406, "{text}");
    assert!(text.contains("x-priority"), "{text}");
}
