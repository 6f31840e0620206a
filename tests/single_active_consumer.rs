//! Proves `x-single-active-consumer`: of all the queue's consumers only the first registered
//! receives messages, even while it is at its prefetch limit; when it is cancelled or its
//! channel closes, the next one takes over, including the messages it left unacked.
mod common;
mod queue_support;

use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::{Channel, Connection, Consumer};
use queue_support::*;

async fn sac_queue(ch: &Channel) -> String {
    declare_with(
        ch,
        &unique("sac"),
        &[(
            "x-single-active-consumer",
            amq_protocol::types::AMQPValue::Boolean(true),
        )],
    )
    .await
}

async fn consumer_on_own_channel(
    conn: &Connection,
    q: &str,
    prefetch_n: u16,
) -> (Channel, Consumer) {
    let ch = channel(conn).await;
    if prefetch_n > 0 {
        prefetch(&ch, prefetch_n).await;
    }
    let c = consume(&ch, q, false).await;
    (ch, c)
}

#[tokio::test]
async fn only_the_first_consumer_receives_messages() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = sac_queue(&ch).await;
    let (_ch1, mut first) = consumer_on_own_channel(&conn, &q, 0).await;
    let (_ch2, mut second) = consumer_on_own_channel(&conn, &q, 0).await;
    for i in 0..4 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    for i in 0..4 {
        let d = next_delivery(&mut first).await;
        assert_eq!(body(&d), format!("m{i}"));
        within("ack", d.ack(BasicAckOptions::default()))
            .await
            .unwrap();
    }
    assert_no_delivery(&mut second, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_full_active_consumer_is_not_bypassed() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = sac_queue(&ch).await;
    let (_ch1, mut first) = consumer_on_own_channel(&conn, &q, 1).await;
    let (_ch2, mut second) = consumer_on_own_channel(&conn, &q, 0).await;
    publish_confirmed(&ch, "", &q, b"m0").await;
    publish_confirmed(&ch, "", &q, b"m1").await;
    let held = next_delivery(&mut first).await;
    assert_no_delivery(&mut second, Duration::from_millis(300)).await;
    assert_eq!(message_count(&ch, &q).await, 1);
    within("ack", held.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    assert_eq!(body(&next_delivery(&mut first).await), "m1");
}

#[tokio::test]
async fn when_the_active_consumer_is_cancelled_the_next_takes_over() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = sac_queue(&ch).await;
    let (ch1, mut first) = consumer_on_own_channel(&conn, &q, 0).await;
    let (_ch2, mut second) = consumer_on_own_channel(&conn, &q, 0).await;
    let (_ch3, mut third) = consumer_on_own_channel(&conn, &q, 0).await;
    publish_confirmed(&ch, "", &q, b"m0").await;
    let d = next_delivery(&mut first).await;
    within("ack", d.ack(BasicAckOptions::default()))
        .await
        .unwrap();
    within(
        "basic.cancel",
        ch1.basic_cancel(first.tag(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    publish_confirmed(&ch, "", &q, b"m1").await;
    publish_confirmed(&ch, "", &q, b"m2").await;
    for expected in ["m1", "m2"] {
        let d = next_delivery(&mut second).await;
        assert_eq!(body(&d), expected);
        within("ack", d.ack(BasicAckOptions::default()))
            .await
            .unwrap();
    }
    assert_no_delivery(&mut third, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_next_consumer_gets_what_a_closed_active_consumer_left_unacked() {
    let broker = start().await;
    let conn = connect(&broker).await;
    let ch = confirm_channel(&conn).await;
    let q = sac_queue(&ch).await;
    let (ch1, mut first) = consumer_on_own_channel(&conn, &q, 0).await;
    let (_ch2, mut second) = consumer_on_own_channel(&conn, &q, 0).await;
    publish_confirmed(&ch, "", &q, b"m0").await;
    publish_confirmed(&ch, "", &q, b"m1").await;
    next_delivery(&mut first).await;
    next_delivery(&mut first).await;
    within("channel.close", ch1.close(200, "crash".into()))
        .await
        .unwrap();
    for expected in ["m0", "m1"] {
        let d = next_delivery(&mut second).await;
        assert_eq!(body(&d), expected);
        assert!(d.redelivered);
    }
}
